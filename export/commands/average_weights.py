"""`mgs-export average-weights`: one weight file whose weights are the mean of several fine-tuned from one start."""

from __future__ import annotations

import argparse

from export.commands.join_weights import configure_join, run_join


def configure(parser: argparse.ArgumentParser) -> None:
    configure_join(parser, "weight files of one kind, each trained with --init the same file (or that file itself)")


def run(args: argparse.Namespace) -> int:
    from export.train.average import average_records

    return run_join(args, average_records, "the mean")
