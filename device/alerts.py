"""Per-box alert state machine: turns score windows into raised/cleared events.

An alert must mean "this animal has looked in pain for a while", not "one window read high": a
window at or above `threshold` starts a pending period, and the alert is raised once high windows
have covered `min_duration_s`. It clears only after windows below `threshold - hysteresis` have
covered `min_duration_s` too, so a score hovering at the threshold does not flap. After a clear, a
new raise waits `cooldown_s`, so an officer is not paged every few minutes for the same animal.

Windows without a visible face neither raise nor clear and do not reset a pending period: an animal
that turns away is not evidence of anything, and a painful animal often hides its face. Pending time
counts only windows in which a face was seen.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from device.aggregate import BoxWindow
from mgs_core.messages import SCORE_MAX, BoxAlert, utc_iso
from mgs_core.tomlconfig import Range, fail

# Window lengths such as 0.1 s do not add up exactly in floating point.
_EPS = 1e-6


@dataclass(frozen=True)
class AlertConfig:
    SECTION: ClassVar[str] = "alerts"

    threshold: Annotated[float, Range(0, SCORE_MAX, above=True)] = field(
        default=6.0, metadata={"doc": "orbital tightening (0-9) at or above which a box is in alarm"}
    )
    min_duration_s: Annotated[float, Range(0, unit="seconds")] = field(
        default=30.0, metadata={"doc": "seconds of high (or, to clear, low) scores before an event"}
    )
    hysteresis: Annotated[float, Range(0)] = field(
        default=0.5, metadata={"doc": "an alert clears only below threshold minus this"}
    )
    cooldown_s: Annotated[float, Range(0, unit="seconds")] = field(
        default=300.0, metadata={"doc": "after a clear, no new raise for this many seconds"}
    )
    enabled: bool = field(default=True, metadata={"doc": "publish alert events at all"})

    def check(self) -> None:
        if self.hysteresis >= self.threshold:
            raise fail("hysteresis", self.hysteresis, f"must be below the threshold ({self.threshold})")


@dataclass(frozen=True)
class AlertEvent:
    """One transition, before it gets a sequence number."""

    box: int
    event: str
    time: float
    threshold: float
    duration_s: float
    score: float | None

    def to_message(self, device: str, seq: int) -> BoxAlert:
        return BoxAlert(
            device=device,
            box=self.box,
            seq=seq,
            event=self.event,
            time=utc_iso(self.time),
            threshold=self.threshold,
            duration_s=round(self.duration_s, 3),
            score=None if self.score is None else round(self.score, 3),
        )


class BoxAlertState:
    """The state of one box: quiet or raised, with the time accumulated towards the next change."""

    def __init__(self, box: int, config: AlertConfig) -> None:
        self.box = box
        self.config = config
        self.raised = False
        self.raised_at: float | None = None
        self.cleared_at: float | None = None
        self.pending_s = 0.0

    def update(self, window: BoxWindow) -> AlertEvent | None:
        if window.score is None:
            return None
        c = self.config
        length = window.end - window.start
        if not self.raised:
            if window.score < c.threshold:
                self.pending_s = 0.0
                return None
            self.pending_s += length
            in_cooldown = self.cleared_at is not None and window.end - self.cleared_at < c.cooldown_s
            if self.pending_s >= c.min_duration_s - _EPS and not in_cooldown:
                self.raised, self.raised_at = True, window.end
                duration, self.pending_s = self.pending_s, 0.0
                return AlertEvent(self.box, "raised", window.end, c.threshold, duration, window.score)
            return None
        if window.score >= c.threshold - c.hysteresis:
            self.pending_s = 0.0
            return None
        self.pending_s += length
        if self.pending_s >= c.min_duration_s - _EPS:
            assert self.raised_at is not None
            duration = window.end - self.raised_at
            self.raised, self.raised_at, self.cleared_at, self.pending_s = False, None, window.end, 0.0
            return AlertEvent(self.box, "cleared", window.end, c.threshold, duration, window.score)
        return None


class AlertTracker:
    """Alert states for all boxes of a device."""

    def __init__(self, config: AlertConfig) -> None:
        self.config = config
        self._boxes: dict[int, BoxAlertState] = {}

    def update(self, window: BoxWindow) -> AlertEvent | None:
        if not self.config.enabled:
            return None
        state = self._boxes.setdefault(window.box, BoxAlertState(window.box, self.config))
        return state.update(window)

    def raised_boxes(self) -> list[int]:
        return sorted(b for b, s in self._boxes.items() if s.raised)
