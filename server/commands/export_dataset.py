"""`mgs-server export-dataset OUT`: reviewed samples as a labelled dataset for `mgs-export`.

The folder it writes passes `mgs-export validate` and feeds `train-eye --init`, `crossval` and
`evaluate --baseline` directly (docs/training.md, "Fine-tuning on your own animals").
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="new or empty folder to write the dataset into")
    parser.add_argument("--config", default="server.toml", help="server config file (default: server.toml)")
    parser.add_argument(
        "--since",
        help="only samples taken at or after this date or time, e.g. 2026-11-01 or 2026-11-01T08:00 "
        "(the facility's zone, [dashboard] timezone, unless the time names its own)",
    )
    parser.add_argument(
        "--until", help="only samples taken before this time, or up to the end of this date (same forms as --since)"
    )
    parser.add_argument(
        "--min-raters",
        type=int,
        help="scorable ratings a sample needs to be exported (default: [review] raters_per_sample of --config)",
    )
    parser.add_argument("--device", default="", help="only samples of this device (default: all devices)")


def run(args: argparse.Namespace) -> int:
    from server.config import load_server_config
    from server.dataset_export import ExportFilter, parse_when, plan_export, prepare_folder, write_folder
    from server.db import connect

    config = load_server_config(args.config)
    zone = config.dashboard.timezone
    filters = ExportFilter(
        since=parse_when("--since", args.since, zone),
        until=parse_when("--until", args.until, zone, end=True),
        min_raters=config.review.raters_per_sample if args.min_raters is None else args.min_raters,
        device=args.device,
    )
    filters.check()
    prepare_folder(args.out)
    db = connect(config.database.path)
    try:
        plan = plan_export(db, filters)
        info = write_folder(db, plan, args.out)
    finally:
        db.conn.close()
    print(f"wrote {args.out}: {plan.counts.describe()}")
    print(f"labels.jsonl sha256 {info['generator']['labels_sha256']}; check it with: mgs-export validate {args.out}")
    return 0
