"""`mgs-export ensemble`: one seg weight file that runs several U-Nets trained apart and averages them."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "weights",
        type=Path,
        nargs="+",
        help="U-Net weight files of one kind (e.g. seg_fine.pt files trained with other seeds or frames)",
    )
    parser.add_argument("--out", type=Path, required=True, help="weight file to write, e.g. models/seg_fine.pt")


def run(args: argparse.Namespace) -> int:
    from export.train.ensemble import ensemble_record
    from export.train.weights import command_line, read_record, save_atomic

    records = [read_record(path) for path in args.weights]
    record = ensemble_record(args.weights, records, command_line(args, positional="weights"))
    save_atomic(record, args.out)
    log.info("wrote %s: an ensemble of %d %s U-Nets", args.out, len(records), record["kind"])
    return 0
