"""Which moments the device keeps for expert review, and what a kept sample contains.

Experts can only check the model on pictures it has scored, and the pictures that teach the most
are the ones the model was unsure about, the ones near the alert threshold and the ones that moved
an alert. So, per closed score window and box, `Sampler` keeps:

- `alert`: the window that raised or cleared an alert (always; alerts are rare by construction),
- `low_confidence`: a window with an eye below `[pipeline.eyes] min_confidence` or abstained on,
- `borderline`: a window whose score lies within `borderline_margin` of `[alerts] threshold`,
- `random`: a `share` of all other windows, so the review also sees ordinary moments.

All but `alert` obey a per-box `min_interval_s`, so a long alert or a box that is always unsure
cannot flood the queue. A window without any eye in any frame yields no sample: there is no face
to rate.

While a window is open the sampler holds, per box, a reference to one frame (the one showing the
most uncertain eyes, then the most eyes): the capture hands out a new array per frame, so this
costs no copy. Cropping and encoding happen only for kept windows, on the upload thread
(`device.sample_queue`), never in the frame loop. Only the box's ROI and the face crop of that
frame leave the device, never the rest of the frame or any video.
"""

from __future__ import annotations

import base64
import math
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

import cv2
import numpy as np

from device.aggregate import BoxWindow
from device.alerts import AlertEvent
from device.pipeline import crop_side
from device.results import BoxResult, EyeScore, FrameResult
from device.rois import Roi
from mgs_core.messages import utc_iso
from mgs_core.tomlconfig import Range, fail

FORMATS = {"jpeg": ("image/jpeg", ".jpg"), "png": ("image/png", ".png")}


@dataclass(frozen=True)
class SamplingConfig:
    SECTION: ClassVar[str] = "sampling"

    enabled: bool = field(
        default=True,
        metadata={"doc": "keep review samples and upload them to the [server] url (off without a [server] url)"},
    )
    share: Annotated[float, Range(0, 1)] = field(
        default=0.02, metadata={"doc": "share of ordinary windows (no other reason) kept at random, per box"}
    )
    low_confidence: bool = field(
        default=True,
        metadata={"doc": "keep windows with an eye below [pipeline.eyes] min_confidence or abstained on"},
    )
    borderline_margin: Annotated[float, Range(0, 9)] = field(
        default=0.5,
        metadata={"doc": "keep windows whose score is within this of [alerts] threshold (0 = only exactly at it)"},
    )
    borderline: bool = field(default=True, metadata={"doc": "keep borderline windows at all"})
    alerts: bool = field(default=True, metadata={"doc": "keep the windows that raised or cleared an alert"})
    min_interval_s: Annotated[float, Range(0, 86400, unit="seconds")] = field(
        default=300.0,
        metadata={"doc": "at most one sample per box per this many seconds (alert windows excepted)"},
    )
    image_format: str = field(default="jpeg", metadata={"doc": "image encoding of the ROI and face crop: jpeg or png"})
    jpeg_quality: Annotated[int, Range(50, 100)] = field(default=90, metadata={"doc": "JPEG quality (50-100)"})
    path: Path | None = field(
        default=None,
        metadata={
            "doc": "SQLite file of samples waiting for upload; empty = samples.sqlite next to the outbox file "
            "(keep it on persistent storage)"
        },
    )
    max_queued: Annotated[int, Range(1, 1_000_000)] = field(
        default=2000, metadata={"doc": "most samples waiting for upload; above it the oldest are dropped"}
    )
    max_disk_mb: Annotated[float, Range(1, 1_000_000, unit="MB")] = field(
        default=500.0, metadata={"doc": "most megabytes of samples waiting for upload; above it the oldest are dropped"}
    )
    max_age_hours: Annotated[float, Range(0.1, 24 * 365, unit="hours")] = field(
        default=168.0, metadata={"doc": "samples waiting longer than this are dropped (a week by default)"}
    )
    retry_max_s: Annotated[float, Range(1, 3600, unit="seconds")] = field(
        default=300.0, metadata={"doc": "longest wait between upload attempts while the server is unreachable"}
    )

    def check(self) -> None:
        if self.image_format not in FORMATS:
            raise fail("image_format", self.image_format, f"must be one of {sorted(FORMATS)}")


@dataclass(frozen=True)
class SampleJob:
    """A kept window, before encoding: the frame it was taken from and everything said about it."""

    box: int
    roi: Roi
    image: np.ndarray
    taken_at: float
    eyes: tuple[EyeScore, ...]
    window: BoxWindow
    reason: str
    face: tuple[int, int, int, int]
    threshold: float
    window_seq: int | None = None
    model_sha256: str = ""
    model_version: str = ""


@dataclass
class _Candidate:
    image: np.ndarray
    window_start: float
    time: float
    result: BoxResult
    rank: tuple[int, int]
    low_confidence: bool = False


class Sampler:
    """Per-frame candidate keeping and per-window decisions; runs on the frame loop, so stays cheap."""

    def __init__(
        self,
        config: SamplingConfig,
        rois: list[Roi],
        fine_crop: int,
        min_confidence: float,
        threshold: float,
        window_s: float,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.window_s = window_s
        self.rois = rois
        self.sides = [crop_side(fine_crop, r.w) for r in rois]
        self.min_confidence = min_confidence
        self.threshold = threshold
        self.rng = rng or random.Random()
        self._candidates: dict[int, _Candidate] = {}
        self._last_kept: dict[int, float] = {}
        # the models scoring now; the frame loop changes them at a roll-out swap, so every job
        # carries the version that produced its window even when it is encoded after the swap
        self.model_sha256 = ""
        self.model_version = ""

    def _uncertain(self, eye: EyeScore) -> bool:
        return eye.abstained or eye.confidence < self.min_confidence

    def observe(self, image: np.ndarray, result: FrameResult) -> None:
        """Remember this frame for a box if it shows more uncertain eyes, or more eyes, than the kept one."""
        for box in result.boxes:
            if not box.eyes or box.box >= len(self.rois):
                continue
            uncertain = sum(1 for e in box.eyes if self._uncertain(e))
            rank = (min(uncertain, 1), len(box.eyes))
            start = math.floor(result.capture_time / self.window_s) * self.window_s
            held = self._candidates.get(box.box)
            if held is not None and held.window_start != start:
                held = None  # left over from a window that closed without a decision
            if held is None or rank > held.rank:
                low = bool(uncertain) or bool(held and held.low_confidence)
                self._candidates[box.box] = _Candidate(image, start, result.capture_time, box, rank, low)
            elif uncertain:
                held.low_confidence = True

    def decide(self, window: BoxWindow, event: AlertEvent | None) -> str | None:
        """The reason to keep this window, or None; consumes the box's candidate either way."""
        candidate = self._candidates.pop(window.box, None)
        if candidate is None or not window.start <= candidate.time < window.end + 1e-6:
            return None
        c = self.config
        if event is not None and c.alerts:
            return "alert"
        last = self._last_kept.get(window.box)
        if last is not None and window.end - last < c.min_interval_s:
            return None
        if c.low_confidence and (candidate.low_confidence or window.abstained_eyes > 0):
            return "low_confidence"
        if c.borderline and window.score is not None and abs(window.score - self.threshold) <= c.borderline_margin:
            return "borderline"
        if c.share > 0 and self.rng.random() < c.share:
            return "random"
        return None

    def window_closed(
        self, window: BoxWindow, event: AlertEvent | None, window_seq: int | None = None
    ) -> SampleJob | None:
        """A job for the upload thread when this window is kept, else None."""
        candidate = self._candidates.get(window.box)
        reason = self.decide(window, event)
        if reason is None or candidate is None:
            return None
        self._last_kept[window.box] = window.end
        roi = self.rois[window.box]
        return SampleJob(
            box=window.box,
            roi=roi,
            image=candidate.image,
            taken_at=candidate.time,
            eyes=candidate.result.eyes,
            window=window,
            reason=reason,
            face=face_box(candidate.result.eyes, roi, self.sides[window.box]),
            threshold=self.threshold,
            window_seq=window_seq,
            model_sha256=self.model_sha256,
            model_version=self.model_version,
        )


def face_box(eyes: tuple[EyeScore, ...], roi: Roi, side: int) -> tuple[int, int, int, int]:
    """The fine crop around the eyes (frame pixels), placed inside the box as the fast pipeline places it."""
    cx = float(np.mean([e.x for e in eyes]))
    cy = float(np.mean([e.y for e in eyes]))
    x0 = int(round(cx)) - side // 2
    y0 = int(round(cy)) - side // 2
    x0 = roi.x if roi.w <= side else min(max(x0, roi.x), roi.x1 - side)
    y0 = roi.y if roi.h <= side else min(max(y0, roi.y), roi.y1 - side)
    return x0, y0, min(side, roi.x1 - x0), min(side, roi.y1 - y0)


def encode_image(image: np.ndarray, config: SamplingConfig) -> dict[str, Any]:
    mime, ext = FORMATS[config.image_format]
    params = [cv2.IMWRITE_JPEG_QUALITY, config.jpeg_quality] if config.image_format == "jpeg" else []
    ok, data = cv2.imencode(ext, image, params)
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} image as {config.image_format}")
    return {"mime": mime, "data": base64.b64encode(data.tobytes()).decode("ascii")}


def sample_key(job: SampleJob) -> str:
    """Unique per device: the time, the box and random digits (a restart never reuses a key)."""
    stamp = f"{job.taken_at:.3f}".replace(".", "")
    return f"s{stamp}-b{job.box}-{secrets.token_hex(4)}"


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


def build_body(job: SampleJob, config: SamplingConfig) -> dict[str, Any]:
    """The upload body of `POST /api/v1/device/samples` (docs/api.md); `meta` follows docs/sampling.md."""
    roi, (fx, fy, fw, fh) = job.roi, job.face
    roi_image = job.image[roi.y : roi.y1, roi.x : roi.x1]
    face_image = job.image[fy : fy + fh, fx : fx + fw]
    eyes = [
        {
            "x": round(e.x - fx, 2),
            "y": round(e.y - fy, 2),
            "roi_x": round(e.x - roi.x, 2),
            "roi_y": round(e.y - roi.y, 2),
            "score": _round(e.score),
            "confidence": _round(e.confidence, 4),
            "abstained": e.abstained,
            "counted": e.quality_ok,
        }
        for e in job.eyes
    ]
    w = job.window
    return {
        "sample_key": sample_key(job),
        "box": job.box,
        "taken_at": utc_iso(job.taken_at),
        "reason": job.reason,
        "model_version": job.model_version,
        "model_sha256": job.model_sha256,
        "model_score": _round(w.score),
        "meta": {
            "face_box": [fx - roi.x, fy - roi.y, fw, fh],
            "eyes": eyes,
            "window_score": _round(w.score),
            "window_seq": job.window_seq,
            "window_start": utc_iso(w.start),
            "window_end": utc_iso(w.end),
            "valid_eyes": w.valid_eyes,
            "abstained_eyes": w.abstained_eyes,
            "roi_box": roi.as_list(),
            "threshold": job.threshold,
        },
        "images": {"roi": encode_image(roi_image, config), "face": encode_image(face_image, config)},
    }
