"""The boxes of the rack in the camera frame: up to four [x, y, w, h] rectangles, in pixels.

The boxes come from the config file, either typed in or written there by `mgs-device detect-boxes`
(device.boxfinder). A box is checked once against the real frame size when the first frame arrives,
so a config written for another camera stops the device with a message instead of scoring garbage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from device.errors import ConfigError
from device.tomlconfig import fail

MAX_ROIS = 4


@dataclass(frozen=True)
class Roi:
    """One box: full-frame pixels, top-left corner and size."""

    x: int
    y: int
    w: int
    h: int

    @property
    def x1(self) -> int:
        return self.x + self.w

    @property
    def y1(self) -> int:
        return self.y + self.h

    def as_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def iou(self, other: Roi) -> float:
        ix = max(0, min(self.x1, other.x1) - max(self.x, other.x))
        iy = max(0, min(self.y1, other.y1) - max(self.y, other.y))
        inter = ix * iy
        union = self.w * self.h + other.w * other.h - inter
        return inter / union if union else 0.0


@dataclass
class RoiConfig:
    """`[rois]`: where the boxes are; `mgs-device detect-boxes` rewrites this section."""

    boxes: list[tuple[int, int, int, int]] = field(
        default_factory=list,
        metadata={"doc": "up to four boxes as [x, y, w, h] in full-frame pixels, box 0 first; fill in with `mgs-device detect-boxes`"},
    )
    expected: int = field(default=4, metadata={"doc": "how many boxes detect-boxes should find in the rack"})

    def check(self) -> None:
        if len(self.boxes) > MAX_ROIS:
            raise fail("rois.boxes", self.boxes, f"at most {MAX_ROIS} boxes")
        for i, (x, y, w, h) in enumerate(self.boxes):
            if x < 0 or y < 0 or w < 16 or h < 16:
                raise fail(f"rois.boxes[{i}]", [x, y, w, h], "x and y must be >= 0 and w, h at least 16 pixels")
        if not 1 <= self.expected <= MAX_ROIS:
            raise fail("rois.expected", self.expected, f"must be between 1 and {MAX_ROIS}")

    @property
    def rois(self) -> list[Roi]:
        return [Roi(*b) for b in self.boxes]


def check_inside(rois: Sequence[Roi], frame_shape: tuple[int, ...]) -> None:
    """Every box must lie inside the frame the camera actually delivers."""
    h, w = frame_shape[:2]
    if not rois:
        raise ConfigError("no boxes configured in [rois] boxes; run `mgs-device detect-boxes --config ... --source ...` or type them in")
    for i, r in enumerate(rois):
        if r.x1 > w or r.y1 > h:
            raise fail(f"rois.boxes[{i}]", r.as_list(), f"reaches outside the {w}x{h} camera frame; run `mgs-device detect-boxes` again")
