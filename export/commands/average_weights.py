"""`mgs-export average-weights`: one weight file whose weights are the mean of several fine-tuned from one start."""

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
        help="weight files of one kind, each trained with --init the same file (or that file itself)",
    )
    parser.add_argument("--out", type=Path, required=True, help="weight file to write, e.g. models/eye.pt")


def run(args: argparse.Namespace) -> int:
    from export.train.average import average_records
    from export.train.weights import command_line, read_record, save_atomic

    records = [read_record(path) for path in args.weights]
    record = average_records(args.weights, records, command_line(args, positional="weights"))
    save_atomic(record, args.out)
    log.info("wrote %s: the mean of %d %s networks", args.out, len(records), record["kind"])
    return 0
