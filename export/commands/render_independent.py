"""`mgs-export render-independent`: rack frames from the independent renderer, for evaluation only."""

from __future__ import annotations

import argparse

from export.rendered import add_render_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    add_render_arguments(parser, default_seed=424242)


def run(args: argparse.Namespace) -> int:
    from export.independent.writer import write_independent
    from export.rendered import report_written

    out = write_independent(args.out, args.frames, args.seed, progress=not args.quiet, workers=args.workers)
    return report_written(
        out, "evaluation only: never train on these frames or choose settings with them (docs/generalisation.md)"
    )
