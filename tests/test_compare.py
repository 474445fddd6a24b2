"""Old model against new: the scored eyes paired by the true eye they match."""

from __future__ import annotations

import pytest

from device.results import EyeScore
from export.compare import format_comparison, matched_threshold, paired_scored_eyes
from export.evaluate import Candidate
from mgs_core.errors import MgsError

THRESHOLD = 0.45


def report(scored: dict[tuple[int, int, int], tuple[float, float]], abstained=(), false_eyes: int = 0) -> dict:
    """A report with the candidates of the fast pipeline: `scored` eyes above the threshold, `abstained` below it."""
    candidates = [
        Candidate(EyeScore(0.0, 0.0, pred, confidence=0.9), True, true, key) for key, (pred, true) in scored.items()
    ]
    candidates += [Candidate(EyeScore(0.0, 0.0, 9.0, confidence=0.1), True, 0.0, key) for key in abstained]
    candidates += [Candidate(EyeScore(0.0, 0.0, 4.0, confidence=0.9), False, None) for _ in range(false_eyes)]
    return {"abstention": {"fast": {"min_confidence": THRESHOLD}}, "_candidates": {"fast": candidates}}


def test_shared_eyes_are_paired_and_the_extra_eyes_are_counted_apart() -> None:
    """New scores every shared eye better and two hard eyes the baseline abstained on or missed: pooled,
    its MAE (1.09) would be the higher one; split, the shared eyes show the gain."""
    shared = {(f, 0, 0): (float(f % 10), float(f % 10)) for f in range(20)}
    baseline = report({k: (p + 1.0, t) for k, (p, t) in shared.items()}, abstained=[(99, 0, 0)], false_eyes=3)
    hard = {(99, 0, 0): (1.0, 9.0), (98, 1, 1): (2.0, 8.0)}  # new scores two hard eyes the baseline did not
    new = report({**{k: (p + 0.5, t) for k, (p, t) in shared.items()}, **hard}, false_eyes=5)
    s = paired_scored_eyes(new, baseline, "fast")
    assert (s["both"], s["only_new"], s["only_baseline"]) == (20, 2, 0)
    assert s["mae_both_baseline"] == pytest.approx(1.0) and s["mae_both_new"] == pytest.approx(0.5)
    assert s["mae_only_new"] == pytest.approx(7.0) and s["mae_only_baseline"] is None
    assert s["paired"]["difference"] == pytest.approx(-0.5)
    text = format_comparison(
        {
            "new": {},
            "baseline": {},
            "difference": {},
            "regressor_only_mae_paired": None,
            "scored_eyes": {"fast": s},
            "matched_min_confidence": {},
        }
    )
    assert "20 by both (MAE 1.000 -> 0.500), 2 only by new (MAE 7.000)" in text


def abstention_report(point: tuple[float, int] | None = None, rows: list[tuple[float, int]] = ()) -> dict:
    fast = {"risk_coverage": [{"threshold": t, "hits": h, "false": 0, "mae": 0.5} for t, h in rows]}
    if point is not None:
        fast["operating_point"] = {"threshold": point[0], "hits": point[1], "false": 3}
    return {"abstention": {"fast": fast}}


def test_the_highest_threshold_that_keeps_the_old_hits_is_chosen() -> None:
    old = abstention_report((0.45, 100))
    new = abstention_report(rows=[(0.40, 110), (0.42, 101), (0.43, 99), (0.45, 95), (0.50, 120)])
    threshold, point = matched_threshold(old, new)
    assert threshold == 0.42 and point["hits"] == 100  # 0.50 has more hits but is above the old threshold


def test_no_threshold_when_the_new_models_always_score_fewer() -> None:
    threshold, _ = matched_threshold(abstention_report((0.45, 100)), abstention_report(rows=[(0.0, 99), (0.45, 90)]))
    assert threshold is None


def test_a_report_without_abstention_says_what_is_missing() -> None:
    with pytest.raises(MgsError, match="no 'operating_point'"):
        matched_threshold(abstention_report(), abstention_report(rows=[(0.4, 1)]))
