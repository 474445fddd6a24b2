"""`mgs-export render-independent`: rack frames from the independent renderer, for evaluation only."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="new or empty dataset folder to write")
    parser.add_argument("--frames", type=int, default=100, help="number of 1080x1920 frames (default 100)")
    parser.add_argument(
        "--seed", type=int, default=424242, help="random seed; the same seed gives the same frames (default 424242)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="frames rendered in parallel processes (the frames do not depend on it)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from export.dataset import describe_counts, validate_dataset
    from export.independent.writer import write_independent

    out = write_independent(args.out, args.frames, args.seed, progress=not args.quiet, workers=args.workers)
    problems, counts = validate_dataset(out)
    if problems:
        print(f"{out}: the renderer wrote {len(problems)} problem(s); please report this as a bug")
        for p in problems[:20]:
            print(f"  {p}")
        return 1
    print(f"wrote {out}: {describe_counts(counts)}")
    print("  evaluation only: never train on these frames or choose settings with them (docs/generalisation.md)")
    return 0
