"""Window aggregation over real FrameResult objects (the pipeline's output type)."""

from __future__ import annotations

import pytest

from device.aggregate import WindowAggregator, quantile, summarise, trimmed_mean
from device.results import BoxResult, EyeScore, FrameResult
from mgs_core.messages import ScoreWindow

SHA = "cd" * 32


def frame(i: int, t: float, per_box: dict[int, list[float]], bad: dict[int, list[float]] | None = None) -> FrameResult:
    bad = bad or {}
    boxes = tuple(
        BoxResult(
            box=b,
            eyes=tuple(EyeScore(10.0, 10.0, s) for s in per_box.get(b, []))
            + tuple(EyeScore(20.0, 20.0, s, quality_ok=False) for s in bad.get(b, [])),
            animal_found=True,
        )
        for b in range(4)
    )
    return FrameResult(frame_index=i, capture_time=t, boxes=boxes)


def test_robust_mean_ignores_a_single_wild_eye() -> None:
    scores = [3.0] * 9 + [9.0]
    assert trimmed_mean(scores) == pytest.approx(3.0)
    assert sum(scores) / len(scores) > 3.5
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert quantile([0.0, 10.0], 0.9) == pytest.approx(9.0)


def test_window_summary_numbers() -> None:
    frames = [frame(i, 100.0 + i * 0.1, {0: [2.0, 4.0]} if i % 2 == 0 else {}) for i in range(10)]
    w = summarise(0, 100.0, 101.0, frames)
    assert w.frames == 10 and w.valid_eyes == 10
    assert w.face_visible_fraction == 0.5
    assert w.score == pytest.approx(3.0) and w.median == pytest.approx(3.0)
    assert w.p90 == pytest.approx(4.0)


def test_no_face_is_a_state_not_a_zero() -> None:
    frames = [frame(i, 100.0 + i * 0.1, {}, bad={1: [1.0]}) for i in range(5)]
    w = summarise(1, 100.0, 101.0, frames)
    assert w.score is None and w.median is None and w.p90 is None
    assert w.valid_eyes == 0 and w.face_visible_fraction == 0.0
    msg = ScoreWindow.from_json(w.to_message("rack-1", 1, SHA).to_json())
    assert msg.score is None and not msg.face_visible


def test_rejected_eyes_do_not_count_and_scores_are_clamped() -> None:
    frames = [frame(0, 100.0, {2: [9.7, -0.3]}, bad={2: [0.0]})]
    w = summarise(2, 100.0, 101.0, frames)
    assert w.valid_eyes == 2 and w.score == pytest.approx(4.5)
    assert ScoreWindow.from_json(w.to_message("r", 1, SHA).to_json()).p90 <= 9.0


def test_aggregator_closes_aligned_windows_per_box() -> None:
    agg = WindowAggregator(range(4), window_s=1.0)
    out = []
    for i in range(25):  # 2.5 s at 10 fps starting at t=1000.0
        out += agg.add(frame(i, 1000.0 + i * 0.1, {b: [float(b)] for b in range(4)}))
    assert len(out) == 8  # two closed windows x four boxes
    assert [w.start for w in out[:4]] == [1000.0] * 4 and out[4].start == 1001.0
    assert all(w.frames == 10 for w in out)
    assert [w.score for w in out[:4]] == [0.0, 1.0, 2.0, 3.0]
    rest = agg.flush()
    assert len(rest) == 4 and rest[0].frames == 5 and rest[0].end == 1003.0
    assert agg.flush() == []


def test_a_stalled_camera_closes_the_open_window_without_inventing_frames() -> None:
    agg = WindowAggregator([0], window_s=1.0)
    agg.add(frame(0, 50.2, {0: [5.0]}))
    assert agg.close_stale(51.5) == []
    closed = agg.close_stale(52.0)
    assert len(closed) == 1 and closed[0].frames == 1
    assert agg.close_stale(60.0) == []
