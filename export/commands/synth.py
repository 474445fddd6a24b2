"""`mgs-export synth`: write a labelled synthetic rack dataset (no torch needed)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, required=True, help="number of 1080x1920 frames to render")
    parser.add_argument(
        "--seed", type=int, default=0, help="dataset seed; the same seed gives the same dataset (default 0)"
    )
    parser.add_argument("--out", type=Path, required=True, help="new or empty output folder")
    parser.add_argument(
        "--image-format",
        choices=["jpg", "png"],
        default="jpg",
        help="frame files: jpg (quality 95, default) or png (lossless, ~8x larger)",
    )
    parser.add_argument(
        "--randomise",
        choices=["none", "default", "hardest"],
        default="default",
        help="domain randomisation (docs/synth.md): default (training sets), hardest (acceptance sets), none (the original generator)",
    )
    parser.add_argument(
        "--restrict",
        action="append",
        default=[],
        metavar="FAMILY=LEVEL,...",
        help="narrow a family to some levels, e.g. fur=black,agouti or light=normal (repeatable)",
    )
    parser.add_argument(
        "--style-holdout",
        choices=["train", "test"],
        help="the style-held-out protocol: train = common coats, light, backdrops and bedding; test = the held-out ones",
    )
    parser.add_argument(
        "--lid-skin",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of animals (0-1) whose eyes get a band of lid skin that can keep the eyeball's bulge as the lids "
        "close (docs/synth.md); default 0, which renders every seed as before",
    )
    parser.add_argument(
        "--dim-eyes",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of animals (0-1) whose eyes differ from the coat by little more than their shape: eyeball and "
        "lid rim mixed towards the coat, dim or no reflections (docs/synth.md); default 0, which renders every "
        "seed as before",
    )
    parser.add_argument(
        "--dark-lids",
        type=float,
        default=0.0,
        metavar="SHARE",
        help="share of animals (0-1) whose lid skin keeps the eyeball's darkness and most of its outline, so a shut "
        "eye is an eye-sized dark oval with a slit in it (docs/synth.md); default 0, which renders every seed as before",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    from export.dataset import describe_counts, validate_dataset
    from export.synth.randomise import Randomisation
    from export.synth.writer import write_dataset

    randomise = Randomisation.parse(
        args.randomise, args.restrict, args.style_holdout, args.lid_skin, args.dim_eyes, args.dark_lids
    )
    out = write_dataset(
        args.out, args.frames, args.seed, progress=not args.quiet, image_format=args.image_format, randomise=randomise
    )
    problems, counts = validate_dataset(out)
    if problems:
        print("\n".join(problems))
        return 1
    print(f"wrote {out}: {describe_counts(counts)}")
    return 0
