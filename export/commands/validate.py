"""`mgs-export validate DATASET`: check a dataset folder against the format in docs/dataset.md."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", type=Path, help="dataset folder (dataset.json, images/, masks/, labels.jsonl)")


def run(args: argparse.Namespace) -> int:
    from export.dataset import describe_counts, validate_dataset

    problems, counts = validate_dataset(args.dataset)
    if problems:
        print(f"{args.dataset}: {len(problems)} problem(s)")
        for p in problems:
            print(f"  {p}")
        return 1
    print(f"OK {args.dataset}: {describe_counts(counts)}")
    return 0
