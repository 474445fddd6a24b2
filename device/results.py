"""What the pipeline hands on per frame: plain dataclasses, no threads, no MQTT.

The pipeline (device.pipeline) produces a `FrameResult`; aggregation, alerts, the preview page,
the offload host and `mgs-export evaluate` all consume it. Coordinates are full-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EyeScore:
    """One detected eye: where it is, its orbital-tightening score, and whether to trust it.

    `quality_ok` is False for a blurred or partial (cut by the patch border / half-hidden) eye;
    aggregation counts only eyes with quality_ok.
    """

    x: float
    y: float
    score: float
    quality_ok: bool = True
    area_px: int = 0
    sharpness: float = 0.0


@dataclass(frozen=True)
class BoxResult:
    """All eyes found in one box in one frame; no eyes means no face visible, not score 0."""

    box: int
    eyes: tuple[EyeScore, ...] = ()
    animal_found: bool = False

    @property
    def valid_eyes(self) -> tuple[EyeScore, ...]:
        return tuple(e for e in self.eyes if e.quality_ok)

    @property
    def face_visible(self) -> bool:
        return bool(self.valid_eyes)


@dataclass(frozen=True)
class FrameResult:
    """The pipeline's answer for one captured frame."""

    frame_index: int
    capture_time: float
    boxes: tuple[BoxResult, ...]
    stage_ms: dict[str, float] = field(default_factory=dict)
