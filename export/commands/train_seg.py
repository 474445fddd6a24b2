"""`mgs-export train-seg`: train the fine (full-resolution crops) or coarse (whole ROI) U-Net."""

from __future__ import annotations

import argparse
import logging
import time

from export.train.options import add_common, open_data
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)


def parse_hw(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not HxW, e.g. 128x256") from None
    return h, w


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        choices=("fine", "coarse"),
        required=True,
        help="fine: full-resolution crops (eyes, ears, animal); coarse: the whole box shrunk to --input-size (finds the head)",
    )
    add_common(parser, "models/seg_<model>.pt")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.002, help="Adam learning rate")
    parser.add_argument(
        "--schedule", choices=("constant", "cosine"), default="cosine", help="learning rate over the epochs"
    )
    parser.add_argument("--base", type=int, default=8, help="U-Net width of the first level")
    parser.add_argument("--depth", type=int, default=4, help="U-Net levels")
    parser.add_argument(
        "--crop", type=int, default=96, help="fine: side of the full-resolution training crops (multiple of 8)"
    )
    parser.add_argument("--crops-per-box", type=int, default=8, help="fine: crops cut from every box of every frame")
    parser.add_argument(
        "--input-size",
        type=parse_hw,
        default=(160, 112),
        help="coarse: HxW the whole ROI is resized to; default 160x112 = about 1/4 of a 600x430 synthetic box (the device reads it from the model)",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from export.dataset import open_dataset
    from export.train.samples import coarse_rois, fine_crops
    from export.train.seg import SegRecipe, recipe_record, train_seg
    from export.train.weights import command_line, labels_fingerprint, pick_device, save_atomic, weight_record

    out = args.out if "<model>" not in str(args.out) else args.out.with_name(f"seg_{args.model}.pt")
    device = pick_device(args.device, args.threads)
    recipe = SegRecipe(
        epochs=args.epochs,
        batch=args.batch,
        lr=args.lr,
        base=args.base,
        depth=args.depth,
        schedule=args.schedule,
        seed=args.seed,
        augment=not args.no_augment,
    )
    data = open_data(args)
    started = time.monotonic()
    if args.model == "fine":
        if args.crop % 2 ** (args.depth - 1):
            raise MgsError(f"--crop {args.crop} must be a multiple of {2 ** (args.depth - 1)}")
        rng = np.random.default_rng(args.seed)
        samples = fine_crops(data, args.crop, args.crops_per_box, rng)
        val = (
            fine_crops(open_dataset(args.val), args.crop, args.crops_per_box, np.random.default_rng(args.seed + 1))
            if args.val
            else None
        )
        size = (args.crop, args.crop)
        extra = {"crop": args.crop, "crops_per_box": args.crops_per_box}
    else:
        samples = coarse_rois(data, args.input_size)
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
        samples, recipe, out, device, kind=args.model, resume=args.resume, val=val, progress=not args.quiet
    )
    training = recipe_record(recipe, samples, len(data.frames), extra)
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
