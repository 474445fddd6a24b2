"""A small layered canvas for one animal: colour, coverage, class id and a fur flag per pixel.

Each part is filled into all four layers with the same polygon, so the class mask agrees with the
drawing by construction; only colour and coverage are anti-aliased.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SHIFT = 4
_ONE = 1 << _SHIFT


def _fixed(points: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(points, dtype=np.float64) * _ONE).astype(np.int32).reshape(-1, 1, 2)


@dataclass
class Sprite:
    """Layers of one animal's crop; `origin` is where pixel (0, 0) sits in sprite coordinates."""

    colour: np.ndarray
    alpha: np.ndarray
    classes: np.ndarray
    fur: np.ndarray
    origin: tuple[float, float]

    @classmethod
    def blank(cls, lo: np.ndarray, hi: np.ndarray) -> Sprite:
        """A canvas covering the sprite-coordinate box lo..hi."""
        w, h = (np.ceil(hi - lo).astype(int) + 1).tolist()
        return cls(
            colour=np.zeros((h, w, 3), np.uint8),
            alpha=np.zeros((h, w), np.uint8),
            classes=np.zeros((h, w), np.uint8),
            fur=np.zeros((h, w), np.uint8),
            origin=(float(lo[0]), float(lo[1])),
        )

    def local(self, points: np.ndarray) -> np.ndarray:
        """Sprite coordinates to canvas pixels."""
        return np.asarray(points, dtype=np.float64) - np.asarray(self.origin)

    def fill(self, points: np.ndarray, colour: tuple[int, int, int], cls: int, fur: bool) -> None:
        """Paint one opaque part; later parts cover earlier ones in every layer."""
        pts = _fixed(self.local(points))
        cv2.fillPoly(self.colour, [pts], colour, lineType=cv2.LINE_AA, shift=_SHIFT)
        cv2.fillPoly(self.alpha, [pts], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
        cv2.fillPoly(self.classes, [pts], cls, lineType=cv2.LINE_8, shift=_SHIFT)
        cv2.fillPoly(self.fur, [pts], 1 if fur else 0, lineType=cv2.LINE_8, shift=_SHIFT)

    def stroke(self, points: np.ndarray, colour: tuple[int, int, int], thickness: int, cls: int | None) -> None:
        """Draw an open curve (tail, whisker, wrinkle); cls None leaves the class and coverage layers alone."""
        pts = _fixed(self.local(points))
        cv2.polylines(self.colour, [pts], False, colour, thickness, lineType=cv2.LINE_AA, shift=_SHIFT)
        if cls is not None:
            cv2.polylines(self.alpha, [pts], False, 255, thickness, lineType=cv2.LINE_AA, shift=_SHIFT)
            cv2.polylines(self.classes, [pts], False, cls, thickness, lineType=cv2.LINE_8, shift=_SHIFT)
            cv2.polylines(self.fur, [pts], False, 0, thickness, lineType=cv2.LINE_8, shift=_SHIFT)
