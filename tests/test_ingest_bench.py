"""A small run of bench/bench_ingest.py (2,000 windows, one day of history): the bench keeps working.

The full bench (200,000 windows, 8 boxes x 30 days) is too heavy for the suite; see docs/api.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.bench_ingest import bench_history, bench_ingest
from tests.conftest import MOSQUITTO


@pytest.mark.skipif(not MOSQUITTO, reason="mosquitto is not installed (make test installs it when run as root)")
def test_ingest_bench_counts_every_window_by_seq(tmp_path: Path) -> None:
    result = bench_ingest(2000, 2, tmp_path, backlog=True)
    assert (result["stored"], result["lost"], result["complete_by_seq"]) == (2000, 0, True)
    assert result["windows_per_s"] > 0 and result["ingest_cpu_us_per_window"] > 0


def test_history_bench_builds_rollups_and_answers_through_the_api(tmp_path: Path) -> None:
    result = bench_history(boxes=1, days=1, repeats=2, cache=tmp_path)
    assert (result["rows"], result["resolution"], result["points"], result["api_points"]) == (
        86400,
        "minute",
        1440,
        1440,
    )
    again = bench_history(boxes=1, days=1, repeats=1, cache=tmp_path)
    assert again["cached"] and again["rows"] == 86400
