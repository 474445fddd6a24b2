"""Alert state machine: threshold, minimum duration, hysteresis, cooldown, no-face windows."""

from __future__ import annotations

import pytest

from device.aggregate import BoxWindow
from device.alerts import AlertConfig, AlertTracker
from mgs_core.errors import ConfigError
from mgs_core.messages import BoxAlert
from mgs_core.tomlconfig import from_dict

CFG = AlertConfig(threshold=6.0, min_duration_s=3.0, hysteresis=1.0, cooldown_s=10.0)


def run(tracker: AlertTracker, scores: list[float | None], t0: float = 0.0, box: int = 0):
    events = []
    for i, s in enumerate(scores):
        w = BoxWindow(box, t0 + i, t0 + i + 1, 10, 0 if s is None else 4, s, s, s, 0.0 if s is None else 1.0)
        e = tracker.update(w)
        if e:
            events.append((i, e))
    return events


def test_raises_only_after_the_minimum_duration() -> None:
    events = run(AlertTracker(CFG), [7, 7, 2, 7, 7, 7, 7])
    assert [(i, e.event) for i, e in events] == [(5, "raised")]
    assert events[0][1].duration_s == 3.0 and events[0][1].score == 7


def test_hysteresis_keeps_a_borderline_score_raised_and_clears_after_duration() -> None:
    events = run(AlertTracker(CFG), [7, 7, 7, 5.5, 5.5, 5.5, 5.5, 4, 4, 4])
    assert [(i, e.event) for i, e in events] == [(2, "raised"), (9, "cleared")]
    cleared = events[1][1]
    assert cleared.duration_s == 7.0  # raised at t=3, cleared at t=10


def test_no_face_windows_neither_raise_nor_clear_nor_reset() -> None:
    tracker = AlertTracker(CFG)
    assert [e.event for _, e in run(tracker, [7, None, None, 7, None, 7])] == ["raised"]
    assert run(tracker, [None] * 20, t0=6) == []
    assert tracker.raised_boxes() == [0]


def test_cooldown_delays_a_new_raise_after_a_clear() -> None:
    tracker = AlertTracker(CFG)
    scores = [7, 7, 7] + [1, 1, 1] + [8] * 12
    events = run(tracker, scores)
    kinds = [(i, e.event) for i, e in events]
    assert kinds[:2] == [(2, "raised"), (5, "cleared")]
    assert kinds[2][1] == "raised" and kinds[2][0] + 1 - 6 >= 10  # not before 10 s after the clear at t=6


def test_boxes_are_independent_and_events_become_valid_messages() -> None:
    tracker = AlertTracker(CFG)
    run(tracker, [7, 7, 7], box=0)
    assert run(tracker, [1, 1, 1], box=1) == []
    assert tracker.raised_boxes() == [0]
    _, e = run(AlertTracker(CFG), [9, 9, 9], box=3)[0]
    msg = BoxAlert.from_json(e.to_message("rack-1", 42).to_json())
    assert (msg.box, msg.seq, msg.event, msg.threshold) == (3, 42, "raised", 6.0)


def test_disabled_alerts_emit_nothing() -> None:
    assert run(AlertTracker(AlertConfig(enabled=False, min_duration_s=0)), [9] * 5) == []


@pytest.mark.parametrize(
    "values, key",
    [
        ({"threshold": 0}, "alerts.threshold"),
        ({"threshold": 10}, "alerts.threshold"),
        ({"hysteresis": 7}, "alerts.hysteresis"),
        ({"min_duration_s": -1}, "alerts.min_duration_s"),
        ({"cooldown_s": -5}, "alerts.cooldown_s"),
    ],
)
def test_bad_alert_settings_are_refused(values: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        from_dict(AlertConfig, values)
