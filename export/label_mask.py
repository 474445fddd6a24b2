"""A labelled eye's own pixels in a frame's class mask, and the label value training leaves out.

Both the accuracy report (how wide an eye is, whether the frame shows it) and the segmentation
training samples (which eye pixels to teach) find a labelled eye's blob the same way, so it lives
here, below both.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from device.eyes import EYES, blob_width

#: Label value of mask pixels that teach nothing: the segmentation loss skips them (`train-seg
#: --ignore-unseen-eyes`). Outside the class ids, and kept by nearest-neighbour warps and flips.
IGNORE = 255

#: An eye's own blob in the class mask is looked for within this many pixels of its labelled centre.
EYE_BLOB_REACH = 6.0
#: ... inside a window this many pixels either side of the centre (wider than any eye).
EYE_BLOB_WINDOW = 48


@dataclass(frozen=True)
class EyeComponent:
    """A labelled eye's own blob in the class mask: `pixels` marks it inside the mask window whose
    top-left corner is frame pixel (x0, y0); `width` is measured as the device measures a blob."""

    x0: int
    y0: int
    pixels: np.ndarray  # bool, the window's shape
    width: float

    @property
    def window(self) -> tuple[slice, slice]:
        """The frame's (rows, columns) that `pixels` covers."""
        h, w = self.pixels.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


def eye_component(x: float, y: float, mask: np.ndarray) -> EyeComponent | None:
    """The eye-class blob of the label mask nearest to the labelled eye at (x, y), within
    EYE_BLOB_REACH pixels; None when the mask shows no eye pixels there."""
    cx, cy = int(round(x)), int(round(y))
    x0, y0 = max(cx - EYE_BLOB_WINDOW, 0), max(cy - EYE_BLOB_WINDOW, 0)
    window = (mask[y0 : cy + EYE_BLOB_WINDOW + 1, x0 : cx + EYE_BLOB_WINDOW + 1] == EYES).view(np.uint8)
    if not (window.size and window.any()):
        return None
    _, labels, stats, _ = cv2.connectedComponentsWithStats(window, connectivity=8)
    yy, xx = np.nonzero(labels)
    near = np.hypot(xx + x0 - x, yy + y0 - y)
    if near.min() > EYE_BLOB_REACH:
        return None
    label = labels[yy[near.argmin()], xx[near.argmin()]]
    _, _, bw, bh, _ = stats[label]
    return EyeComponent(x0, y0, labels == label, blob_width(bw, bh))
