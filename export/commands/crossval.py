"""`mgs-export crossval`: the paper's K-fold cross-validation of the eye regressor, split by image."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="labelled dataset folder (docs/dataset.md format)")
    parser.add_argument("--folds", type=int, default=5, help="K (the paper used 30; 5 is the quick default)")
    parser.add_argument("--out", type=Path, help="folder for crossval.json and crossval.png (default: print only)")
    parser.add_argument("--epochs", type=int, default=35)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--lr", type=float, default=0.001)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--frames", type=int, help="use only the first N frames of --data (CPU time budget); default all"
    )
    parser.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    from export.crossval import crossval, write_crossval
    from export.train.eye import EyeRecipe
    from export.train.options import open_data
    from export.train.samples import eye_samples
    from export.train.weights import pick_device

    samples = eye_samples(open_data([args.data], args.frames))
    recipe = EyeRecipe(
        epochs=args.epochs,
        batch=args.batch,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        seed=args.seed,
    )
    with tempfile.TemporaryDirectory(prefix="mgs-crossval-") as tmp:
        report = crossval(samples, args.folds, recipe, pick_device(args.device), Path(tmp), progress=not args.quiet)
    p = report["pooled"]
    print(
        f"{args.folds}-fold cross-validation, {report['eyes']} eyes in {report['images']} images: "
        f"MAE {p['mae']:.3f} (folds {report['fold_mae_mean']:.3f} +- {report['fold_mae_sd']:.3f}), "
        f"mean difference {p['mean_difference']:+.3f}, r {p['pearson_r']}, ICC(2,1) {p['icc_2_1']}"
    )
    if args.out:
        print(f"wrote {write_crossval(report, args.out)}")
    return 0
