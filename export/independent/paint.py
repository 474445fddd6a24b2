"""Rasterising outlines into a frame and its class mask, limited to each shape's bounding box."""

from __future__ import annotations

import cv2
import numpy as np

SUB = 4  # fixed-point bits for sub-pixel polygon corners


def _bbox(pts: np.ndarray, shape: tuple[int, int], pad: int) -> tuple[int, int, int, int] | None:
    h, w = shape
    x0 = max(int(np.floor(pts[:, 0].min())) - pad, 0)
    y0 = max(int(np.floor(pts[:, 1].min())) - pad, 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + pad + 1, w)
    y1 = min(int(np.ceil(pts[:, 1].max())) + pad + 1, h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def coverage(
    shape: tuple[int, int],
    polys: list[np.ndarray],
    origin: tuple[int, int] = (0, 0),
    thickness: float = 0.0,
    closed: bool = True,
) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] of the union of filled polygons (or polylines when thickness > 0).

    Each polygon is filled on its own: one fillPoly call with several overlapping polygons would
    leave their overlap empty (even-odd rule).
    """
    a = np.zeros(shape, np.uint8)
    pts = [np.round((np.asarray(p, np.float64) - origin) * (1 << SUB)).astype(np.int32) for p in polys]
    if thickness > 0:
        cv2.polylines(a, pts, closed, 255, max(1, round(thickness)), cv2.LINE_AA, shift=SUB)
    else:
        for p in pts:
            cv2.fillPoly(a, [p], 255, cv2.LINE_AA, shift=SUB)
    return a.astype(np.float32) * np.float32(1 / 255)


class Canvas:
    """A BGR float image with its class mask; `paint` blends a colour or texture under a shape."""

    def __init__(self, image: np.ndarray, mask: np.ndarray, alpha: np.ndarray | None = None) -> None:
        self.image = image
        self.mask = mask
        self.alpha = alpha  # a layer drawn over black keeps its coverage here (premultiplied colour)

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

    def paint(
        self,
        polys: list[np.ndarray],
        colour,
        cls: int | None = None,
        opacity: float = 1.0,
        thickness: float = 0.0,
        closed: bool = True,
        clip: np.ndarray | None = None,
    ) -> tuple[int, int, int, int] | None:
        """Blend `colour` (BGR tuple or an image-sized texture) where the shape is; set `cls` in the mask.

        Returns the touched rectangle (x0, y0, x1, y1), or None when the shape is outside.
        """
        allpts = np.concatenate([np.asarray(p, np.float64).reshape(-1, 2) for p in polys])
        box = _bbox(allpts, self.shape, int(thickness) + 2)
        if box is None:
            return None
        x0, y0, x1, y1 = box
        a = coverage((y1 - y0, x1 - x0), polys, (x0, y0), thickness, closed) * np.float32(opacity)
        if clip is not None:
            a *= clip[y0:y1, x0:x1]
        self.blend(box, a, colour)
        if self.alpha is not None:
            region = self.alpha[y0:y1, x0:x1]
            region += a * (1 - region)
        if cls is not None:
            self.mask[y0:y1, x0:x1][a >= 0.5 * opacity] = cls
        return box

    def blend(self, box: tuple[int, int, int, int], alpha: np.ndarray, colour) -> None:
        x0, y0, x1, y1 = box
        region = self.image[y0:y1, x0:x1]
        src = (
            colour[y0:y1, x0:x1]
            if isinstance(colour, np.ndarray) and colour.ndim == 3
            else np.asarray(colour, np.float32)
        )
        region += alpha[..., None] * (src - region)
