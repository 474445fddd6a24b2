"""`mgs-export synth-video`: a rack video with score trajectories and a ground-truth sidecar (no torch needed)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from export.synth.mouse import FURS
    from export.synth.trajectory import TRAJECTORIES

    parser.add_argument("--seconds", type=float, required=True, help="video length in seconds")
    parser.add_argument("--out", type=Path, required=True, help="video file: .mp4 (mp4v, recommended) or .avi (MJPG)")
    parser.add_argument("--fps", type=float, default=30.0, help="frames per second (default 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed: camera placement, motion and scores (default 0)")
    parser.add_argument(
        "--trajectory",
        choices=TRAJECTORIES,
        default="postop",
        help="postop: rise above 6 after surgery, analgesic recovery; demo: box 1 passes 6 within a minute; "
        "baseline: 2-4 throughout; sweep: 0-9-0 ramps (default postop)",
    )
    parser.add_argument(
        "--fur",
        choices=sorted(FURS),
        action="append",
        help="coat per box, repeat up to 4 times (default: black C57BL/6 in every box)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing video and sidecar")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def run(args: argparse.Namespace) -> int:
    from export.synth.video import truth_path, write_video
    from mgs_core.errors import MgsError

    if args.out.exists() and not args.force:
        raise MgsError(f"{args.out} exists; pass --force to overwrite it or choose another name")
    furs = tuple(args.fur or ["black"])
    path = write_video(
        args.out,
        args.seconds,
        fps=args.fps,
        seed=args.seed,
        trajectory=args.trajectory,
        furs=furs,
        progress=not args.quiet,
    )
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {truth_path(path)}")
    return 0
