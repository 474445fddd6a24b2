"""From a class map to scored eyes: blobs, plausibility, 50x50 patches, quality, scores.

The U-Net is only the region proposal (paper, section 2.2): an eye is a connected blob of class 3
of plausible size and shape with animal or ear pixels around it. The 50x50 patch the regressor
sees is always cut from the ORIGINAL full-resolution frame, whatever resolution the class map had,
so the fast and the full-resolution pipelines feed the regressor the same pixels for the same eye.

A blurred eye (variance of the Laplacian below a threshold) or a partial one (blob cut by the
border of the analysed region, or a patch that leaves the frame) is still reported but with
`quality_ok=False`: aggregation ignores it, the preview can still show it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import cv2
import numpy as np

from device.inference import ModelRunner
from device.results import EyeScore
from mgs_core.tomlconfig import Range, fail

PATCH_SIZE = 50
SCORE_MIN, SCORE_MAX = 0.0, 9.0
ANIMAL, EARS, EYES = 1, 2, 3


@dataclass
class EyeConfig:
    """`[eyes]`: which class-3 blobs count as eyes and which eyes are good enough to score."""

    SECTION: ClassVar[str] = "pipeline.eyes"

    min_area_px: Annotated[int, Range(1)] = field(default=26, metadata={"doc": "smallest eye blob in full-resolution pixels (an eye is about 15-25 px across at 1080p); chosen on the synthetic validation set for precision and recall >= 0.95"})
    max_area_px: int = field(default=2500, metadata={"doc": "largest eye blob in full-resolution pixels"})
    max_aspect: Annotated[float, Range(1)] = field(default=20.0, metadata={"doc": "longest / shortest side of a blob's bounding box; a tight eye (score 9) is a 2-px slit, so keep this generous"})
    context_px: Annotated[int, Range(0)] = field(default=12, metadata={"doc": "an eye needs animal or ear pixels within this many pixels of its blob"})
    min_context_fraction: Annotated[float, Range(0, 1)] = field(default=0.65, metadata={"doc": "share of the non-eye pixels within context_px of a blob that must be animal or ears: a dark round hole in the box (lid vents) has none around it, an eye sits in fur"})
    min_sharpness: Annotated[float, Range(0)] = field(default=15.0, metadata={"doc": "variance of the Laplacian of the eye patch below which the eye counts as blurred"})
    max_eyes_per_box: Annotated[int, Range(1)] = field(default=2, metadata={"doc": "keep at most this many eyes per box (largest first): one mouse per box has two eyes"})

    def check(self) -> None:
        if self.max_area_px <= self.min_area_px:
            raise fail("max_area_px", self.max_area_px, f"must be larger than min_area_px ({self.min_area_px})")


@dataclass(frozen=True)
class EyeBlob:
    """An eye candidate in full-frame pixels, before scoring."""

    x: float
    y: float
    area_px: int
    touches_border: bool


def find_eye_blobs(classes: np.ndarray, config: EyeConfig, origin: tuple[float, float] = (0.0, 0.0),
                   scale: tuple[float, float] = (1.0, 1.0), valid: tuple[int, int, int, int] | None = None) -> list[EyeBlob]:
    """Eye blobs of one class map, in full-frame pixels.

    `classes` is [H, W] uint8 (0 background, 1 animal, 2 ears, 3 eyes); map pixel (u, v) is frame
    pixel (origin_x + u * scale_x, origin_y + v * scale_y). `valid` = (x0, y0, x1, y1) in map pixels
    is the part of the map that shows real image (padding excluded); a blob touching its edge is cut.
    """
    h, w = classes.shape
    x0, y0, x1, y1 = valid if valid is not None else (0, 0, w, h)
    sx, sy = scale
    pixel_area = sx * sy
    eye_mask = (classes == EYES).view(np.uint8)
    n, _, stats, centroids = cv2.connectedComponentsWithStats(eye_mask, connectivity=8)
    blobs: list[EyeBlob] = []
    for i in range(1, n):
        bx, by, bw, bh, area = (int(v) for v in stats[i])
        full_area = area * pixel_area
        if not config.min_area_px <= full_area <= config.max_area_px:
            continue
        if max(bw * sx, bh * sy) > config.max_aspect * max(1.0, min(bw * sx, bh * sy)):
            continue
        if not _has_context(classes, bx, by, bw, bh, config.context_px / max(sx, sy), config.min_context_fraction):
            continue
        cu, cv = centroids[i]
        touches = bx <= x0 or by <= y0 or bx + bw >= x1 or by + bh >= y1
        blobs.append(EyeBlob(origin[0] + (cu + 0.5) * sx - 0.5, origin[1] + (cv + 0.5) * sy - 0.5, int(round(full_area)), touches))
    blobs.sort(key=lambda b: -b.area_px)
    return blobs[: config.max_eyes_per_box]


def _has_context(classes: np.ndarray, bx: int, by: int, bw: int, bh: int, margin: float, min_fraction: float) -> bool:
    """Animal or ear pixels around the blob: an eye floating in the background is a false positive."""
    m = int(np.ceil(margin))
    window = classes[max(0, by - m): by + bh + m, max(0, bx - m): bx + bw + m]
    head = int(np.count_nonzero((window == ANIMAL) | (window == EARS)))
    around = int(np.count_nonzero(window != EYES))
    return head > 0 and head >= min_fraction * around


def animal_found(classes: np.ndarray, min_pixels: int = 1) -> bool:
    return int(np.count_nonzero(classes == ANIMAL)) >= min_pixels


def crop_patches(frame: np.ndarray, centres: Sequence[tuple[float, float]], size: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """size x size patches centred on each (x, y) of the full frame, edge-padded where they leave it.

    Returns (patches [N, size, size, 3] uint8, clipped [N] bool: the patch needed padding).
    """
    h, w = frame.shape[:2]
    patches = np.empty((len(centres), size, size, frame.shape[2]), dtype=frame.dtype)
    clipped = np.zeros(len(centres), dtype=bool)
    half = size // 2
    for i, (cx, cy) in enumerate(centres):
        x0 = int(round(cx)) - half
        y0 = int(round(cy)) - half
        x1, y1 = x0 + size, y0 + size
        if x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h:
            patches[i] = frame[y0:y1, x0:x1]
            continue
        clipped[i] = True
        rows = np.clip(np.arange(y0, y1), 0, h - 1)
        cols = np.clip(np.arange(x0, x1), 0, w - 1)
        patches[i] = frame[rows[:, None], cols[None, :]]
    return patches, clipped


def sharpness(patch: np.ndarray) -> float:
    """Variance of the Laplacian of the grey patch: the usual blur measure (low = blurred)."""
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY) if patch.ndim == 3 else patch
    return float(cv2.Laplacian(grey, cv2.CV_32F).var())


def patches_to_batch(patches: np.ndarray) -> np.ndarray:
    """[N, 50, 50, 3] uint8 BGR -> the regressor's "patch" input, float32 [N, 3, 50, 50] in [0, 1]."""
    return np.ascontiguousarray(patches.transpose(0, 3, 1, 2), dtype=np.float32) * np.float32(1.0 / 255.0)


def score_blobs(frame: np.ndarray, blobs: Sequence[EyeBlob], regressor: ModelRunner, config: EyeConfig) -> list[EyeScore]:
    """Crop, quality-check and score every blob in ONE regressor call (batching is the cheap part)."""
    if not blobs:
        return []
    patches, clipped = crop_patches(frame, [(b.x, b.y) for b in blobs])
    scores = np.asarray(regressor(patches_to_batch(patches)), dtype=np.float32).reshape(len(blobs), -1)[:, 0]
    scores = np.clip(np.nan_to_num(scores, nan=SCORE_MIN), SCORE_MIN, SCORE_MAX)
    out = []
    for blob, patch, clip, score in zip(blobs, patches, clipped, scores):
        sharp = sharpness(patch)
        ok = not blob.touches_border and not clip and sharp >= config.min_sharpness
        out.append(EyeScore(x=float(blob.x), y=float(blob.y), score=float(score), quality_ok=ok,
                            area_px=blob.area_px, sharpness=round(sharp, 2)))
    return out
