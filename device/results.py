"""What the pipeline hands on per frame: plain dataclasses, no threads, no MQTT.

The pipeline (device.pipeline) produces a `FrameResult`; aggregation, alerts, the preview page,
the offload host and `mgs-export evaluate` all consume it. Coordinates are full-frame pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EyeCues:
    """What the pipeline saw of one eye candidate, kept so a confidence can be explained and refitted.

    All come from the class map and the 50x50 patch the pipeline already has (the U-Nets return
    only the argmax, so there are no class probabilities): `fill` is the blob's share of its
    bounding box, `context` the share of fur/ear pixels around it, `ears_near` whether ear pixels
    lie within a head's reach, `contrast` the ring around the blob's centre minus the centre
    (grey levels / 255), `orientation_spread` how evenly the patch's edges point in all
    directions (0-1: an eye in fur is round and textured, a corner of a drawn rectangle has two
    directions only), `flip_gap` the difference between the scores of the patch and of its mirror
    image divided by 9 (a regressor that is sure of an eye scores both alike), `pair_gap` the score
    difference to the other eye of the box (0 for a lone eye) divided by 9, `eyeness` the eye
    model's verifier output (0-1, how likely a real eye; None for a model without a verifier), `delta_e`
    how far the picture shows the blob's pixels apart from the fur around them (device.eyes.EyeContrast;
    None where not measured: it is measured only when `[pipeline.eyes] min_delta_e` is on).
    """

    area_px: int
    fill: float
    context: float
    ears_near: bool
    sharpness: float
    contrast: float
    orientation_spread: float
    flip_gap: float = 0.0
    pair_gap: float = 0.0
    eyeness: float | None = None
    delta_e: float | None = None


@dataclass(frozen=True)
class EyeScore:
    """One detected eye: where it is, its orbital-tightening score, and whether to trust it.

    `quality_ok` is False for a blurred or partial (cut by the patch border / half-hidden) eye, and
    for an eye the pipeline abstains on: `abstained` is True when the eye passed the blur and
    border checks but its `confidence` (0-1, how likely it is a real eye scored well) is below
    `[pipeline.eyes] min_confidence`. Aggregation counts only eyes with quality_ok, so a model that
    does not know reports "not scorable", never a score.
    """

    x: float
    y: float
    score: float
    quality_ok: bool = True
    area_px: int = 0
    sharpness: float = 0.0
    confidence: float = 1.0
    abstained: bool = False
    cues: EyeCues | None = None


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
    def abstained_eyes(self) -> tuple[EyeScore, ...]:
        return tuple(e for e in self.eyes if e.abstained)

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
