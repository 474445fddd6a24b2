"""`mgs-export render-choice`: rack frames from the choice renderer, for choosing between model variants only."""

from __future__ import annotations

import argparse

from export.rendered import add_render_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    add_render_arguments(parser, default_seed=737373)


def run(args: argparse.Namespace) -> int:
    from export.choicerender.writer import write_choice
    from export.rendered import report_written

    out = write_choice(args.out, args.frames, args.seed, progress=not args.quiet, workers=args.workers)
    return report_written(
        out,
        "for choosing only: never train on these frames; the acceptance sets stay untouched (docs/choice-renderer.md)",
    )
