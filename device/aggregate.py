"""Per-box time windows over frame results: the numbers that go on the wire once a second.

Single frames are noisy (a blink, a half-turned head), and a welfare officer reads trends, so the
device publishes one summary per box per window instead of per-frame scores. Windows are aligned to
multiples of `window_s` on the capture clock so that windows from different devices line up on the
server. A window in which no valid eye was seen has score None: "no face visible" is a state, never
a healthy 0. Eyes the pipeline abstained on (confidence below `[pipeline.eyes] min_confidence`) are
counted in `abstained_eyes` and never enter the score: a box whose eyes were all abstained on reads
as not scorable, exactly like a box without a face.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

from device.results import FrameResult
from mgs_core.messages import SCORE_MAX, SCORE_MIN, ScoreWindow, utc_iso
from mgs_core.tomlconfig import Range

# Share of eye scores cut from each end before averaging: one misread eye (a blink scored 9, a
# reflection scored 0) must not move the mean of a window much.
TRIM_FRACTION = 0.1


@dataclass(frozen=True)
class AggregationConfig:
    SECTION: ClassVar[str] = "aggregation"

    window_s: Annotated[float, Range(0.1, 3600, unit="seconds")] = field(
        default=1.0, metadata={"doc": "length of one published score window in seconds"}
    )


@dataclass(frozen=True)
class BoxWindow:
    """The summary of one box over one window, before it gets a sequence number."""

    box: int
    start: float
    end: float
    frames: int
    valid_eyes: int
    score: float | None
    median: float | None
    p90: float | None
    face_visible_fraction: float
    abstained_eyes: int = 0

    def to_message(self, device: str, seq: int, model_sha256: str, model_version: str = "") -> ScoreWindow:
        return ScoreWindow(
            device=device,
            box=self.box,
            seq=seq,
            window_start=utc_iso(self.start),
            window_end=utc_iso(self.end),
            frames=self.frames,
            valid_eyes=self.valid_eyes,
            score=_round(self.score),
            median=_round(self.median),
            p90=_round(self.p90),
            face_visible_fraction=round(self.face_visible_fraction, 4),
            model_sha256=model_sha256,
            abstained_eyes=self.abstained_eyes,
            model_version=model_version,
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def trimmed_mean(values: list[float], trim: float = TRIM_FRACTION) -> float:
    """Mean after cutting `trim` of the values from each end (none cut below 1/trim values)."""
    ordered = sorted(values)
    cut = int(len(ordered) * trim)
    kept = ordered[cut : len(ordered) - cut] if cut else ordered
    return sum(kept) / len(kept)


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default method), without numpy for a handful of values."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarise(box: int, start: float, end: float, frames: Iterable[FrameResult]) -> BoxWindow:
    """Reduce the frames of one window to the published numbers for `box`."""
    n_frames = 0
    face_frames = 0
    abstained = 0
    scores: list[float] = []
    for frame in frames:
        n_frames += 1
        result = next((b for b in frame.boxes if b.box == box), None)
        if result is None:
            continue
        abstained += len(result.abstained_eyes)
        if not result.face_visible:
            continue
        face_frames += 1
        scores.extend(min(SCORE_MAX, max(SCORE_MIN, e.score)) for e in result.valid_eyes if math.isfinite(e.score))
    if not scores:
        return BoxWindow(
            box, start, end, n_frames, 0, None, None, None, face_frames / n_frames if n_frames else 0.0, abstained
        )
    return BoxWindow(
        box=box,
        start=start,
        end=end,
        frames=n_frames,
        valid_eyes=len(scores),
        score=trimmed_mean(scores),
        median=quantile(scores, 0.5),
        p90=quantile(scores, 0.9),
        face_visible_fraction=face_frames / n_frames,
        abstained_eyes=abstained,
    )


class WindowAggregator:
    """Collects frame results and hands back finished windows, one per box.

    A window closes when a frame from a later window arrives, or on `flush` (shutdown). Windows
    without any frame (camera stalled) are not invented: no frame, no measurement. `split` closes
    the open window early, at a model switch, so that no window mixes two model versions: the
    rest of that period becomes a shorter window of its own, and the windows after it are
    aligned again.
    """

    def __init__(self, boxes: Iterable[int], window_s: float = 1.0) -> None:
        self.boxes = tuple(boxes)
        self.window_s = window_s
        self._aligned: float | None = None  # the period of the open window
        self._start: float | None = None  # its start: the period's, or a split inside it
        self._frames: list[FrameResult] = []

    def _window_start(self, t: float) -> float:
        return math.floor(t / self.window_s) * self.window_s

    def add(self, frame: FrameResult) -> list[BoxWindow]:
        aligned = self._window_start(frame.capture_time)
        closed: list[BoxWindow] = []
        if self._aligned is not None and aligned != self._aligned:
            closed = self.flush()
        if self._aligned is None:
            self._aligned = self._start = aligned
        self._frames.append(frame)
        return closed

    def close_stale(self, now: float) -> list[BoxWindow]:
        """Close the open window once a whole window has passed after its end without a frame (camera stalled)."""
        if self._aligned is not None and now >= self._aligned + 2 * self.window_s:
            return self.flush()
        return []

    def flush(self) -> list[BoxWindow]:
        """Close the open window now (it keeps its nominal end so windows stay aligned)."""
        aligned, start, frames = self._aligned, self._start, self._frames
        self._aligned, self._start, self._frames = None, None, []
        if aligned is None or start is None or not frames:
            return []
        return [summarise(box, start, aligned + self.window_s, frames) for box in self.boxes]

    def split(self, at: float) -> list[BoxWindow]:
        """Close the open window at `at` (the capture time of the first frame that belongs after it)."""
        if self._aligned is None or self._start is None or not self._frames:
            return []
        if self._window_start(at) != self._aligned:
            return self.flush()
        start, frames = self._start, self._frames
        self._start, self._frames = at, []
        return [summarise(box, start, at, frames) for box in self.boxes]
