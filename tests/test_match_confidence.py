"""scripts/match_confidence.py: the threshold at which new models score as many true eyes as the old ones."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mgs_core.errors import MgsError

SPEC = importlib.util.spec_from_file_location(
    "match_confidence", Path(__file__).parent.parent / "scripts/match_confidence.py"
)
match_confidence = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(match_confidence)


def report(point: tuple[float, int] | None = None, rows: list[tuple[float, int]] = ()) -> dict:
    fast = {"risk_coverage": [{"threshold": t, "hits": h, "false": 0, "mae": 0.5} for t, h in rows]}
    if point is not None:
        fast["operating_point"] = {"threshold": point[0], "hits": point[1], "false": 3}
    return {"abstention": {"fast": fast}}


def test_the_highest_threshold_that_keeps_the_old_hits_is_chosen() -> None:
    old = report((0.45, 100))
    new = report(rows=[(0.40, 110), (0.42, 101), (0.43, 99), (0.45, 95), (0.50, 120)])
    threshold, point = match_confidence.matched_threshold(old, new)
    assert threshold == 0.42 and point["hits"] == 100  # 0.50 has more hits but is above the old threshold


def test_no_threshold_when_the_new_models_always_score_fewer() -> None:
    threshold, _ = match_confidence.matched_threshold(report((0.45, 100)), report(rows=[(0.0, 99), (0.45, 90)]))
    assert threshold is None


def test_a_report_without_abstention_says_what_is_missing() -> None:
    with pytest.raises(MgsError, match="no 'operating_point'"):
        match_confidence.matched_threshold(report(), report(rows=[(0.4, 1)]))
