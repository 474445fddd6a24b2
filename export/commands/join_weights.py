"""What `average-weights` and `ensemble` share: several weight files in, one joined weight file out."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Join = Callable[[Sequence[Path], Sequence[dict[str, Any]], str], dict[str, Any]]


def configure_join(parser: argparse.ArgumentParser, weights_help: str) -> None:
    parser.add_argument("weights", type=Path, nargs="+", help=weights_help)
    parser.add_argument("--out", type=Path, required=True, help="weight file to write, e.g. models/seg_fine.pt")


def run_join(args: argparse.Namespace, join: Join, what: str) -> int:
    """`join` builds the new record from the files' records and the recorded command; `what` names
    the result in the log line, e.g. "the mean" or "an ensemble"."""
    from export.train.weights import command_line, read_record, save_atomic

    records = [read_record(path) for path in args.weights]
    record = join(args.weights, records, command_line(args, positional="weights"))
    save_atomic(record, args.out)
    log.info("wrote %s: %s of %d %s networks", args.out, what, len(records), record["kind"])
    return 0
