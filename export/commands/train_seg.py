"""`mgs-export train-seg`: train the fine (full-resolution crops) or coarse (whole ROI) U-Net."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from export.train.options import add_common, open_data, sizes
from mgs_core.errors import MgsError

if TYPE_CHECKING:
    from export.dataset import Dataset

log = logging.getLogger(__name__)

# With --init: a shorter, gentler run than from scratch, for a small set of facility masks
# (docs/training.md, "Fine-tuning on your own animals"); explicit options override it.
SCRATCH = {"epochs": 12, "lr": 0.002}
FINE_TUNE = {"epochs": 4, "lr": 0.0005}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        choices=("fine", "coarse"),
        required=True,
        help="fine: full-resolution crops (eyes, ears, animal); coarse: the whole box shrunk to --input-size (finds the head)",
    )
    add_common(parser, "models/seg_<model>.pt")
    parser.add_argument(
        "--init",
        type=Path,
        help="weight file of the same U-Net (e.g. the shipped models/seg_fine.pt) to fine-tune instead of random weights",
    )
    parser.add_argument(
        "--init-member",
        type=int,
        help="with --init an ensemble (the shipped seg_fine.pt): start from this one member (0, 1, ...) as a single U-Net",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        help="weight file of the same kind (e.g. the shipped two-U-Net models/seg_fine.pt) whose class probabilities "
        "the network learns beside the labels (distillation: one U-Net doing an ensemble's work)",
    )
    parser.add_argument(
        "--distil-weight",
        type=float,
        help="with --teacher: share of the loss that is the teacher's probabilities, the rest the labels (default 0.5)",
    )
    parser.add_argument("--epochs", type=int, help=f"default {SCRATCH['epochs']}, {FINE_TUNE['epochs']} with --init")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument(
        "--lr", type=float, help=f"Adam learning rate; default {SCRATCH['lr']}, {FINE_TUNE['lr']} with --init"
    )
    parser.add_argument(
        "--schedule", choices=("constant", "cosine"), default="cosine", help="learning rate over the epochs"
    )
    parser.add_argument("--base", type=int, help="U-Net width of the first level (default 8; with --init: the file's)")
    parser.add_argument("--depth", type=int, help="U-Net levels (default 4; with --init: the file's)")
    parser.add_argument(
        "--crop", type=int, default=96, help="fine: side of the full-resolution training crops (multiple of 8)"
    )
    parser.add_argument("--crops-per-box", type=int, default=8, help="fine: crops cut from every box of every frame")
    parser.add_argument(
        "--eye-instance-px",
        type=float,
        default=0.0,
        help="fine: weigh every eye blob of a crop as if it had at least this many pixels, so shut and small eyes count like open ones (0 = class weights only; 120 was tried in models/TRAINING.md, sixth and seventeenth steps)",
    )
    parser.add_argument(
        "--ignore-unseen-eyes",
        action="store_true",
        help="leave out of the loss the labelled eye pixels the frame does not show (a colour difference to the fur "
        'around them below export/discernible.py\'s 6), instead of teaching them as eye (docs/training.md, "Eyes the frame does not show")',
    )
    parser.add_argument(
        "--hard-crops",
        type=Path,
        metavar="MODELS",
        help="fine: also cut crops around every blob this model set's segmenter takes for an eye where none is "
        "labelled (a models folder with manifest.json; its fast pipeline runs over every --data frame, about "
        '0.1-0.2 s each), so the U-Net is taught its own false eyes as what they are (docs/training.md, "Its own false eyes")',
    )
    parser.add_argument(
        "--hard-crops-per-blob", type=int, default=2, help="with --hard-crops: crops around each false blob (default 2)"
    )
    parser.add_argument(
        "--restyle",
        type=float,
        default=0.0,
        help='share (0-1) of augmented samples whose coat is reshaded, its fur smoothed flat and its eyes\' highlights and contrast to the fur lowered (docs/training.md, "Restyled coats and eyes"); default 0 = off',
    )
    parser.add_argument(
        "--randconv",
        type=float,
        default=0.0,
        help='share (0-1) of augmented samples seen through a random convolution that changes local colour and texture and keeps shapes (docs/training.md, "Random convolutions"); default 0 = off',
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that augment batches beside the trainer (on a GPU host: a few per training run; "
        "the batches are the same for any number); default 0 = in the training process",
    )
    parser.add_argument(
        "--input-size",
        type=sizes(2, "HxW, e.g. 128x256"),
        default=(160, 112),
        help="coarse: HxW the whole ROI is resized to; default 160x112 = about 1/4 of a 600x430 synthetic box (the device reads it from the model)",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from export.dataset import open_dataset
    from export.train.ensemble import ensemble_member
    from export.train.samples import coarse_rois, fine_crops
    from export.train.seg import SegRecipe, check_distillation, recipe_record, train_seg
    from export.train.weights import (
        command_line,
        init_network,
        labels_fingerprint,
        pick_device,
        save_atomic,
        weight_record,
    )
    from models.unet import UNet, UNetEnsemble

    out = args.out if "<model>" not in str(args.out) else args.out.with_name(f"seg_{args.model}.pt")
    device = pick_device(args.device, args.threads)
    init, init_record = None, None
    defaults = {**SCRATCH, "base": 8, "depth": 4}
    if args.init is not None:
        if out.resolve() == args.init.resolve():
            raise MgsError(f"--out {out} would overwrite the --init weights; write the fine-tuned file elsewhere")
        init, init_record = init_network(args.init, f"seg_{args.model}")
        if not isinstance(init, (UNet, UNetEnsemble)):
            raise MgsError(f"--init {args.init} is not a U-Net; give a seg_{args.model} weight file")
        if args.init_member is not None:
            init = ensemble_member(init, args.init_member, args.init)
            init_record["member"] = args.init_member
        nets = list(init.members) if isinstance(init, UNetEnsemble) else [init]
        # The recipe records the deepest member's depth (it sets the input multiple) and the widest base.
        shape = {k: max(n.config[k] for n in nets) for k in ("base", "depth")}
        given = [k for k in shape if getattr(args, k) is not None]
        refused = given if len(nets) > 1 else [k for k in given if getattr(args, k) != shape[k]]
        if refused:
            what = f"an ensemble of {len(nets)} U-Nets" if len(nets) > 1 else "a U-Net"
            raise MgsError(
                f"--init {args.init} is {what} with base {shape['base']} and depth {shape['depth']}; "
                f"leave out {', '.join(f'--{k}' for k in refused)} (fine-tuning keeps the network's shape)"
            )
        defaults = {**FINE_TUNE, **shape}
    if args.hard_crops is not None and args.model != "fine":
        raise MgsError("--hard-crops cuts full-resolution crops around false eyes: it is for --model fine")
    if args.hard_crops_per_blob < 1:
        raise MgsError(f"--hard-crops-per-blob {args.hard_crops_per_blob}: give 1 or more")
    if args.init_member is not None and args.init is None:
        raise MgsError("--init-member picks a member of the --init ensemble; give --init too")
    teacher, teacher_record = None, None
    if args.teacher is not None:
        teacher, teacher_record = init_network(args.teacher, f"seg_{args.model}", "--teacher")
        if args.model == "coarse" and tuple(teacher_record["input_size"]) != tuple(args.input_size):
            raise MgsError(
                f"--teacher {args.teacher} reads boxes shrunk to {teacher_record['input_size']}, "
                f"not --input-size {args.input_size}; give the same --input-size"
            )
        if args.distil_weight is None:
            args.distil_weight = 0.5
    elif args.distil_weight is not None:
        raise MgsError("--distil-weight is the share of the teacher's probabilities in the loss; give --teacher too")
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    recipe = SegRecipe(
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        base=args.base,
        depth=args.depth,
        schedule=args.schedule,
        seed=args.seed,
        augment=not args.no_augment,
        eye_instance_px=args.eye_instance_px,
        precision=args.precision,
        distil=args.distil_weight or 0.0,
        restyle=args.restyle,
        randconv=args.randconv,
    )
    check_distillation(teacher is not None, recipe.distil)
    data = open_data(args.data, args.frames)
    started = time.monotonic()
    if args.model == "fine":
        if args.crop % 2 ** (args.depth - 1):
            raise MgsError(f"--crop {args.crop} must be a multiple of {2 ** (args.depth - 1)}")
        rng = np.random.default_rng(args.seed)
        hard = mine_false_blobs(args.hard_crops, data) if args.hard_crops is not None else None
        samples = fine_crops(
            data, args.crop, args.crops_per_box, rng, args.ignore_unseen_eyes, hard, args.hard_crops_per_blob
        )
        val = (
            fine_crops(open_dataset(args.val), args.crop, args.crops_per_box, np.random.default_rng(args.seed + 1))
            if args.val
            else None
        )
        size = (args.crop, args.crop)
        extra = {"crop": args.crop, "crops_per_box": args.crops_per_box}
        if hard is not None:
            extra["hard_crops"] = {
                "models": str(args.hard_crops),
                "false_blobs": sum(map(len, hard.values())),
                "per_blob": args.hard_crops_per_blob,
            }
    else:
        samples = coarse_rois(data, args.input_size, args.ignore_unseen_eyes)
        val = coarse_rois(open_dataset(args.val), args.input_size) if args.val else None
        size = args.input_size
        extra = {"input_size": list(size)}
    log.info(
        "%d training samples of %dx%d from %d frames (%.0f s to cut)",
        len(samples),
        size[0],
        size[1],
        len(data.frames),
        time.monotonic() - started,
    )
    module, history = train_seg(
        samples,
        recipe,
        out,
        device,
        kind=args.model,
        resume=args.resume,
        init=init,
        teacher=teacher,
        val=val,
        progress=not args.quiet,
        workers=args.workers,
    )
    training = recipe_record(
        recipe,
        samples,
        len(data.frames),
        {**extra, "init": init_record, "teacher": teacher_record, "ignore_unseen_eyes": args.ignore_unseen_eyes},
    )
    training["history"] = history
    training["seconds"] = round(time.monotonic() - started, 1)
    save_atomic(
        weight_record(
            module.cpu(), f"seg_{args.model}", size, labels_fingerprint(args.data), command_line(args), training
        ),
        out,
    )
    last = history[-1] if history else {}
    print(
        f"wrote {out}: {len(samples)} samples, {recipe.epochs} epochs, final loss {last.get('loss', float('nan')):.4f}"
        + "".join(f", {k} {v:.3f}" for k, v in last.items() if k.startswith("val_"))
    )
    return 0


def mine_false_blobs(models_dir: Path, data: Dataset) -> dict[int, list[tuple[float, float]]]:
    """Where `models_dir`'s segmenter sees eyes that are not labelled, per frame of `data`."""
    from device.inference import load_models
    from export.train.samples import segmenter_false_blobs

    started = time.monotonic()
    blobs = segmenter_false_blobs(data, load_models(models_dir, precision="int8"))
    log.info(
        "%d false eyes of %s's segmenter in %d of %d frames (%.0f s)",
        sum(map(len, blobs.values())),
        models_dir,
        len(blobs),
        len(data.frames),
        time.monotonic() - started,
    )
    return blobs
