"""`mgs-export train-eye`: train the orbital-tightening regressor (paper's Table 1 or wide) on 50x50 eye patches."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from export.train.options import add_common, open_data, sizes
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

# From scratch: the paper's recipe. With --init: the fine-tuning recipe for a few hundred labelled
# eyes, measured against training every layer (docs/training.md, "Fine-tuning on your own
# animals"); explicit options override either.
SCRATCH = {"epochs": 35, "lr": 0.001, "schedule": "constant"}
FINE_TUNE = {"epochs": 10, "lr": 0.001, "schedule": "cosine"}
# Non-eye patches per box on which a verifier network fine-tuned without --negatives-per-box keeps
# its starting verdict.
KEEP_VERIFIER_NON_EYES = 2
# Patch width of every eye from scratch: the middle of the open eyes of the randomised generator
# (10-34 px at 1080p), so typical eyes are barely resampled (docs/training.md).
EYE_WIDTH = 20.0


def configure(parser: argparse.ArgumentParser) -> None:
    add_common(parser, "models/eye.pt")
    parser.add_argument(
        "--init",
        type=Path,
        help="eye weight file to fine-tune (e.g. the shipped models/eye.pt) instead of starting from random weights",
    )
    parser.add_argument(
        "--train-all",
        action="store_true",
        help="with --init: train every layer (default: keep the conv layers as in --init and re-fit the head)",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        help=f"default {SCRATCH['epochs']} (paper), {FINE_TUNE['epochs']} with --init",
    )
    parser.add_argument(
        "--arch",
        choices=("paper", "wide"),  # models.eye_regressor.ARCHITECTURES (torch is imported only in run)
        help="network from scratch: paper (Table 1, the default) or wide (what ships, models/TRAINING.md); with --init the file's own",
    )
    parser.add_argument(
        "--widen",
        type=sizes(3, "three channel counts such as 32x64x128"),
        metavar="AxBxC",
        help="with --init of a wide network: first grow its three stages to these channel counts (e.g. 32x64x128; "
        "the shipped file has 16x32x64) so that it starts out scoring as --init does (Net2WiderNet), then fine-tune",
    )
    parser.add_argument("--batch", type=int, default=32, help="paper: 32")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd", help="paper: sgd (momentum 0.9)")
    parser.add_argument("--lr", type=float, help=f"default {SCRATCH['lr']} (paper), {FINE_TUNE['lr']} with --init")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (paper: 0.9)")
    parser.add_argument(
        "--schedule",
        choices=("constant", "cosine"),
        help="learning rate over the epochs: constant (paper; the default) or cosine decay to 0 (the default with --init)",
    )
    parser.add_argument(
        "--eye-width",
        type=float,
        help=f"scale-normalised patches: every eye resized to this many pixels wide in its 50x50 patch, as the "
        f"device then cuts them; 0 = the paper's fixed crops; default {EYE_WIDTH} from scratch, the --init file's own with --init",
    )
    parser.add_argument(
        "--score-loss",
        choices=("mse", "l1"),  # export.train.eye.SCORE_LOSSES (torch is imported only in run)
        default="mse",
        help="the score's loss: mse (paper; the mean of what a patch could be) or l1 (the median, what MAE measures)",
    )
    parser.add_argument("--rotation", type=float, default=30.0, help="random rotation range in degrees (paper: 30)")
    parser.add_argument(
        "--no-balance", action="store_true", help="sample uniformly instead of inversely to score frequency"
    )
    parser.add_argument(
        "--pretrain-cifar",
        type=Path,
        help="CIFAR-10 python batches (folder or one data_batch file) to pre-train the conv layers on",
    )
    parser.add_argument("--cifar-epochs", type=int, default=5)
    parser.add_argument(
        "--negatives-per-box",
        type=int,
        default=0,
        help="also train the eye verifier (the network's second output: real eye or not) on this many non-eye "
        "patches per box (nose, dark spots, anywhere); 0 = no verifier (default); the shipped model used 3",
    )
    parser.add_argument(
        "--hard-negatives",
        type=Path,
        metavar="MODELS",
        help="with --negatives-per-box: also train the verifier on what this model set's device pipeline takes for "
        "eyes where none is labelled (a models folder with manifest.json, e.g. models); half of the non-eye patches. "
        "With --eye-width, the eyes that pipeline finds are also cut at the width its segmenter measures",
    )
    parser.add_argument(
        "--mine-frames",
        type=int,
        default=2000,
        help="--hard-negatives runs the pipeline on the first N frames of --data (default 2000, about 0.1-0.2 s each)",
    )


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from device.inference import eye_width_of
    from export.dataset import open_dataset
    from export.train.eye import EyeRecipe, recipe_record, train_eye
    from export.train.samples import eye_training_samples
    from export.train.weights import (
        command_line,
        init_network,
        labels_fingerprint,
        pick_device,
        save_atomic,
        weight_record,
    )
    from models.eye_regressor import PATCH_SIZE, EyeRegressor, has_verifier, widened

    device = pick_device(args.device, args.threads)
    init, init_record = None, None
    if args.init is not None:
        if args.pretrain_cifar:
            raise MgsError("--init and --pretrain-cifar both choose the starting weights; give one of them")
        if args.out.resolve() == args.init.resolve():
            raise MgsError(f"--out {args.out} would overwrite the --init weights; write the fine-tuned file elsewhere")
        init, init_record = init_network(args.init, "eye")
        if not isinstance(init, EyeRegressor):
            raise MgsError(f"--init {args.init} is not an eye regressor; give an eye weight file such as models/eye.pt")
        if args.arch is not None and args.arch != init.config.get("arch", "paper"):
            raise MgsError(
                f"--arch {args.arch}: --init {args.init} is a {init.config.get('arch', 'paper')} network; "
                "fine-tuning keeps the network of --init, so leave out --arch"
            )
    if args.widen is not None:
        if init is None:
            raise MgsError("--widen grows the --init network: give --init too (e.g. --init models/eye.pt)")
        try:
            init = widened(init, args.widen, seed=args.seed)
        except ValueError as exc:
            raise MgsError(f"--widen {'x'.join(map(str, args.widen))}: {exc}") from exc
    if args.hard_negatives is not None and args.negatives_per_box < 1:
        raise MgsError("--hard-negatives trains the eye verifier: give --negatives-per-box too (e.g. 3)")
    if args.train_all and init is None:
        raise MgsError("--train-all says how to fine-tune the --init weights: use it with --init")
    for key, value in (FINE_TUNE if init is not None else SCRATCH).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    recipe = EyeRecipe(
        epochs=args.epochs,
        batch=args.batch,
        optimizer=args.optimizer,
        lr=args.lr,
        momentum=args.momentum,
        rotation_deg=args.rotation,
        balance=not args.no_balance,
        schedule=args.schedule,
        seed=args.seed,
        augment=not args.no_augment,
        freeze_features=init is not None and not args.train_all,
        arch=args.arch or "paper",
        negatives_per_box=args.negatives_per_box,
        score_loss=args.score_loss,
        eye_width=args.eye_width
        if args.eye_width is not None
        else (eye_width_of(init.config) if init is not None else EYE_WIDTH),
        precision=args.precision,
    )
    started = time.monotonic()
    data = open_data(args.data, args.frames)
    # A verifier network fine-tuned without --negatives-per-box keeps its verdict on eyes and on
    # non-eye patches of the same frames (export.train.eye.train_eye).
    keep_verifier = init is not None and has_verifier(init) and not recipe.negatives_per_box
    per_box = recipe.negatives_per_box or (KEEP_VERIFIER_NON_EYES if keep_verifier else 0)
    rng = np.random.default_rng([args.seed, 0x4E])
    view = None
    if args.hard_negatives is not None:
        from device.inference import load_models
        from export.train.samples import device_view

        view = device_view(data, load_models(args.hard_negatives, precision="int8"), args.mine_frames, recipe.eye_width)
        log.info("%d false eyes of %s's pipeline as hard negatives", len(view.false_eyes), args.hard_negatives)
    device_widths = view.widths if view is not None and recipe.eye_width > 0 else None
    samples, non_eyes = eye_training_samples(data, per_box, rng, recipe.eye_width, device_widths)
    val_data = open_dataset(args.val) if args.val else None
    val, val_non_eyes = eye_training_samples(val_data, per_box, rng, recipe.eye_width) if val_data else (None, None)
    log.info("%d scored eyes from %d frames", len(samples), len(data.frames))
    if device_widths:
        log.info("%d of them cut at the width %s's segmenter measures", len(device_widths), args.hard_negatives)
    if per_box:
        log.info("%d non-eye patches for the eye verifier", len(non_eyes))
    if recipe.negatives_per_box and not len(non_eyes):
        raise MgsError(
            f"--negatives-per-box: {', '.join(map(str, args.data))} has no boxes with eyes to cut non-eye patches from"
        )
    hard_non_eyes = view.false_eyes if view is not None else None
    features, cifar_history = None, None
    if args.pretrain_cifar:
        from export.cifar import pretrain_features

        features, cifar_history = pretrain_features(
            args.pretrain_cifar,
            device,
            epochs=args.cifar_epochs,
            seed=args.seed,
            progress=not args.quiet,
            arch=args.arch or "paper",
        )
    module, history = train_eye(
        samples,
        recipe,
        args.out,
        device,
        resume=args.resume,
        pretrained_features=features,
        init=init,
        val=val,
        non_eyes=non_eyes,
        val_non_eyes=val_non_eyes,
        hard_non_eyes=hard_non_eyes,
        progress=not args.quiet,
    )
    training = recipe_record(recipe, len(samples), len(data.frames), 0 if hard_non_eyes is None else len(hard_non_eyes))
    training.update(
        history=history,
        seconds=round(time.monotonic() - started, 1),
        cifar_pretraining={"path": str(args.pretrain_cifar), "epochs": args.cifar_epochs, "loss": cifar_history}
        if features
        else None,
        init=init_record,
    )
    save_atomic(
        weight_record(
            module.cpu(), "eye", (PATCH_SIZE, PATCH_SIZE), labels_fingerprint(args.data), command_line(args), training
        ),
        args.out,
    )
    last = history[-1] if history else {}
    print(
        f"wrote {args.out}: {len(samples)} eyes, {recipe.epochs} epochs, final loss {last.get('loss', float('nan')):.4f}"
        + (f", val MAE {last['val_mae']:.3f}" if "val_mae" in last else "")
        + (f", verifier accuracy {last['val_verifier_accuracy']:.3f}" if "val_verifier_accuracy" in last else "")
    )
    return 0
