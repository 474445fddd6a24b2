"""The `min_confidence` at which new models score as many true eyes as the old ones did.

How the twenty-ninth step's threshold was chosen (models/TRAINING.md): a new eye model can be better
and still stricter at the old threshold, and a threshold matched on the validation set came out
stricter still on hard frames. So match recall on hard frames of your own that are already used for
choosing (never a held-out or acceptance set): evaluate the old and the new models on the same frames,

    mgs-export evaluate --runtime int8 --pipeline fast --data SETS --models OLD --out old
    mgs-export evaluate --runtime int8 --pipeline fast --data SETS --models NEW --out new
    PYTHONPATH=. python scripts/match_confidence.py old/report.json new/report.json

and read the highest threshold, no higher than the old operating point's, at which the new models'
risk-coverage row has at least the old operating point's hits. Judge the result on fresh frames.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mgs_core.errors import MgsError


def matched_threshold(old: dict, new: dict, pipeline: str = "fast") -> tuple[float | None, dict]:
    """(threshold or None, the old operating point) from two `mgs-export evaluate` reports."""
    try:
        point = old["abstention"][pipeline]["operating_point"]
        rows = new["abstention"][pipeline]["risk_coverage"]
    except KeyError as missing:
        raise MgsError(f"not an evaluate report with the {pipeline} pipeline's abstention: no {missing}") from None
    ok = [r["threshold"] for r in rows if r["threshold"] <= point["threshold"] + 1e-9 and r["hits"] >= point["hits"]]
    return (max(ok) if ok else None), point


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="report.json of the models in use, at their min_confidence")
    parser.add_argument("new", type=Path, help="report.json of the new models on the same frames")
    parser.add_argument("--pipeline", default="fast", choices=["fast", "full"])
    args = parser.parse_args()
    old, new = (json.loads(p.read_text()) for p in (args.old, args.new))
    threshold, point = matched_threshold(old, new, args.pipeline)
    print(f"old models at {point['threshold']:g}: {point['hits']} true eyes scored, {point['false']} false")
    if threshold is None:
        print("the new models score fewer true eyes at every threshold up to that: no match")
        return 1
    row = next(r for r in new["abstention"][args.pipeline]["risk_coverage"] if r["threshold"] == threshold)
    print(f"new models at {threshold:g}: {row['hits']} true eyes scored, {row['false']} false, MAE {row['mae']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
