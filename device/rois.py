"""The boxes of the rack in the camera frame: up to four [x, y, w, h] rectangles, in pixels.

The boxes come from the config file, either typed in or written there by `mgs-device detect-boxes`,
which uses `detect_boxes` below. A box is checked once against the real frame size when the first frame arrives,
so a config written for another camera stops the device with a message instead of scoring garbage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

import cv2
import numpy as np

from mgs_core.errors import ConfigError, MgsError
from mgs_core.tomlconfig import Check, Length, Range, fail

MAX_ROIS = 4
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MEDIAN_FRAMES = 15


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


Box = tuple[int, int, int, int]


def _check_box(box: Box) -> None:
    x, y, w, h = box
    if x < 0 or y < 0 or w < 16 or h < 16:
        raise ValueError("x and y must be >= 0 and w, h at least 16 pixels")


@dataclass
class RoiConfig:
    """`[rois]`: where the boxes are; `mgs-device detect-boxes` rewrites this section."""

    SECTION: ClassVar[str] = "rois"

    boxes: Annotated[list[Annotated[Box, Check(_check_box)]], Length(max=MAX_ROIS)] = field(
        default_factory=list,
        metadata={
            "doc": "up to four boxes as [x, y, w, h] in full-frame pixels, box 0 first; fill in with `mgs-device detect-boxes`"
        },
    )
    expected: Annotated[int, Range(1, MAX_ROIS)] = field(
        default=4, metadata={"doc": "how many boxes detect-boxes should find in the rack"}
    )

    @property
    def rois(self) -> list[Roi]:
        return [Roi(*b) for b in self.boxes]


def check_inside(rois: Sequence[Roi], frame_shape: tuple[int, ...]) -> None:
    """Every box must lie inside the frame the camera actually delivers."""
    h, w = frame_shape[:2]
    if not rois:
        raise ConfigError(
            "no boxes configured in [rois] boxes; run `mgs-device detect-boxes --config ... --source ...` or type them in"
        )
    for i, r in enumerate(rois):
        if r.x1 > w or r.y1 > h:
            raise fail(
                f"rois.boxes[{i}]",
                r.as_list(),
                f"reaches outside the {w}x{h} camera frame; run `mgs-device detect-boxes` again",
            )


# --- automatic box detection -------------------------------------------------------------------
#
# The rack stands in front of a red backdrop and the boxes are transparent, so the inside of a box
# looks red too, but it is ENCLOSED by the box's frame (lid on top, walls at the sides, bedding at
# the bottom), none of which is red. A box is therefore a thick red region cut off from the
# backdrop, grown outwards over its non-red frame until the red backdrop (or a limit) is reached.
# Walls are thin and an animal or a glare can open a red thread through one, so regions are taken
# from the "core" of the red mask (pixels further than CORE_PX from anything non-red): threads and
# the narrow backdrop strips between boxes vanish there, box insides do not.

CORE_PX = 20
MIN_BOX_FRACTION = 0.01  # smallest box interior as a share of the frame
MIN_FILL = 0.6  # a box interior fills its bounding rectangle
MAX_FRAME_GROWTH = 0.15  # the frame around an interior is at most this share of the interior size
MAX_BOX_SPAN = 0.8  # red bands above/below the rack run across the frame; a box does not
FRAME_RED_SHARE = 0.05  # a wall/lid/bedding line is at most this red; an animal never covers a whole line
ANIMAL_REACH = 3  # an animal against the inside can hide the frame for up to 3x the frame limit
MAX_ASPECT = 5.0  # a box is not a thin strip (a wide gap between boxes can leave one)


def red_mask(frame: np.ndarray, min_saturation: int = 100, min_value: int = 60) -> np.ndarray:
    """Pixels of the red backdrop (also seen through the transparent boxes), as a 0/1 uint8 mask."""
    hsv = cv2.cvtColor(frame, cv2.COLOR_BGR2HSV)
    h, s, v = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    return (((h <= 10) | (h >= 170)) & (s >= min_saturation) & (v >= min_value)).astype(np.uint8)


def detect_boxes(frame: np.ndarray, expected: int = MAX_ROIS) -> list[Roi]:
    """Up to `expected` boxes found in a rack frame, left to right (box 0 first).

    Use a median of several frames where possible, so that no animal hides part of a box's inside.
    """
    red = cv2.morphologyEx(red_mask(cv2.medianBlur(frame, 5)), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    core = (cv2.distanceTransform(red, cv2.DIST_L2, 5) > CORE_PX).astype(np.uint8)
    fh, fw = red.shape
    n, _, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=4)
    candidates = []
    for i in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[i])
        x, y, w, h = max(0, x - CORE_PX), max(0, y - CORE_PX), w + 2 * CORE_PX, h + 2 * CORE_PX
        w, h = min(w, fw - x), min(h, fh - y)
        if w * h < MIN_BOX_FRACTION * fh * fw or area < MIN_FILL * (w - 2 * CORE_PX) * (h - 2 * CORE_PX):
            continue
        if w > MAX_BOX_SPAN * fw or h > MAX_BOX_SPAN * fh or max(w / h, h / w) > MAX_ASPECT:
            continue
        candidates.append((area, _grow_over_frame(red, x, y, w, h)))
    candidates.sort(key=lambda c: -c[0])
    boxes = _drop_nested([roi for _, roi in candidates])[:expected]
    return sorted(boxes, key=lambda r: (r.x, r.y))


def _grow_over_frame(red: np.ndarray, x: int, y: int, w: int, h: int) -> Roi:
    """Extend an interior rectangle outwards to the outer edge of the box frame on each side.

    On each side: look outwards (past an animal pressed against the inside) for the first line that
    is nearly all non-red (wall, lid or bedding), then follow the frame while it stays so.
    """
    fh, fw = red.shape
    col_red = red[y : y + h].mean(axis=0)
    row_red = red[:, x : x + w].mean(axis=1)
    left = _frame_edge(col_red, x, -1, int(MAX_FRAME_GROWTH * w))
    right = _frame_edge(col_red, x + w - 1, +1, int(MAX_FRAME_GROWTH * w))
    top = _frame_edge(row_red, y, -1, int(MAX_FRAME_GROWTH * h))
    bottom = _frame_edge(row_red, y + h - 1, +1, int(MAX_FRAME_GROWTH * h))
    return Roi(left, top, right - left + 1, bottom - top + 1)


def _frame_edge(red_share: np.ndarray, start: int, step: int, limit: int) -> int:
    """Outermost index of the frame line beyond `start`, or `start` when no frame is found."""
    n = len(red_share)
    i = start
    while 0 <= i + step < n and abs(i + step - start) <= ANIMAL_REACH * limit and red_share[i + step] > FRAME_RED_SHARE:
        i += step
    if not (0 <= i + step < n) or abs(i + step - start) > ANIMAL_REACH * limit:
        return start
    frame_start = i
    while 0 <= i + step < n and abs(i + step - frame_start) <= limit and red_share[i + step] <= FRAME_RED_SHARE:
        i += step
    return i


def _drop_nested(boxes: list[Roi]) -> list[Roi]:
    """A red patch inside a box (between the animal and a wall) is not a box of its own."""
    kept: list[Roi] = []
    for b in boxes:
        if all(_overlap_of(b, k) < 0.5 for k in kept):
            kept.append(b)
    return kept


def _overlap_of(a: Roi, b: Roi) -> float:
    ix = max(0, min(a.x1, b.x1) - max(a.x, b.x))
    iy = max(0, min(a.y1, b.y1) - max(a.y, b.y))
    return ix * iy / max(1, a.w * a.h)


def draw_boxes(frame: np.ndarray, boxes: Sequence[Roi]) -> np.ndarray:
    """The frame with each found box outlined and numbered, for the technician to check."""
    out = frame.copy()
    for i, r in enumerate(boxes):
        cv2.rectangle(out, (r.x, r.y), (r.x1 - 1, r.y1 - 1), (0, 255, 0), 4)
        cv2.putText(out, f"box {i}", (r.x + 10, r.y + 40), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 255, 0), 3, cv2.LINE_AA)
    return out


def read_reference_frame(source: str) -> np.ndarray:
    """An image as is; a video or camera as the median of frames spread over it."""
    if Path(source).suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(source, cv2.IMREAD_COLOR)
        if image is None:
            raise MgsError(f"cannot read image {source}; check the path and that it is a PNG/JPEG")
        return image
    cap = cv2.VideoCapture(int(source) if source.isdigit() else source)
    try:
        if not cap.isOpened():
            raise MgsError(f"cannot open {source}; give a rack image, a video file, a camera index or a stream URL")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        frames = []
        if count > 1:
            for index in np.linspace(0, count - 1, min(MEDIAN_FRAMES, count)).astype(int):
                cap.set(cv2.CAP_PROP_POS_FRAMES, int(index))
                ok, image = cap.read()
                if ok:
                    frames.append(image)
        else:
            for _ in range(MEDIAN_FRAMES * 10):
                ok, image = cap.read()
                if not ok:
                    break
                frames.append(image)
            frames = frames[::10]
    finally:
        cap.release()
    if not frames:
        raise MgsError(f"{source} delivered no frames; check the file or camera")
    return np.median(np.stack(frames), axis=0).astype(np.uint8) if len(frames) > 2 else frames[0]
