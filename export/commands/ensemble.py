"""`mgs-export ensemble`: one seg weight file that runs several U-Nets trained apart and averages them."""

from __future__ import annotations

import argparse

from export.commands.join_weights import configure_join, run_join


def configure(parser: argparse.ArgumentParser) -> None:
    configure_join(parser, "U-Net weight files of one kind (e.g. seg_fine.pt files trained with other seeds or frames)")


def run(args: argparse.Namespace) -> int:
    from export.train.ensemble import ensemble_record

    return run_join(args, ensemble_record, "an ensemble")
