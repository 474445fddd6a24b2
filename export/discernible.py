"""Whether the frame shows a labelled eye at all.

A renderer labels an eye visible when nothing stands in front of it, whatever the light and the camera
did to it: an albino's pink eye washed out to the white of its fur, a black mouse's eye lost in an
underexposed coat, a slit smeared away by blur. No eye finder, and no person, can find or score such
an eye; counted as a miss it hides which misses a better model could still win, and a score given to
it is a guess. So the accuracy report also splits the labelled eyes into those the frame shows
(`discernible`) and those it does not, by the device's own measure (`device.eyes.EyeContrast`) taken
on the labelled eye pixels of the final frame, after every light and camera effect. It uses only the
image and the label mask, so it is the same test for every renderer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from device.eyes import EYES, EyeContrast, eye_ring_contrast
from device.results import EyeScore
from export.metrics import match_points
from export.train.samples import eye_component

if TYPE_CHECKING:
    from export.dataset import Eye

# Delta E (`EyeContrast.shown`) below which the frame does not show a labelled eye (docs/generalisation.md,
# "Eyes the frame does not show"): chosen by looking at the validation set's eyes sorted by it, not at
# any judged set.
MIN_EYE_DELTA_E = 6.0
SPLIT = ("discernible", "indiscernible")


def eye_contrast(image: np.ndarray, mask: np.ndarray, x: float, y: float) -> EyeContrast | None:
    """The contrast of the labelled eye at (x, y); None when the mask shows no eye pixels there or
    nothing but eye pixels around them (nothing to measure)."""
    component = eye_component(x, y, mask)
    if component is None:
        return None
    h, w = component.pixels.shape
    window = (slice(component.y0, component.y0 + h), slice(component.x0, component.x0 + w))
    return eye_ring_contrast(image[window], component.pixels, mask[window] == EYES, component.width)


def discernible(image: np.ndarray, mask: np.ndarray | None, x: float, y: float) -> bool:
    """False only when the label mask shows the eye's pixels and the frame gives them almost the colour
    of the fur around them; without a mask (nothing to measure) every eye counts as discernible."""
    if mask is None:
        return True
    contrast = eye_contrast(image, mask, x, y)
    return contrast is None or contrast.shown >= MIN_EYE_DELTA_E


@dataclass
class DiscernibleRecall:
    """Recall and scoring split by whether the frame shows the eye: the misses among discernible eyes are
    the ones a better model can win; the scores given to indiscernible eyes are guesses. `scored`
    counts found eyes that reach the aggregate (quality_ok), `mae` is over those with a true score."""

    tally: dict[str, dict[str, float]] = field(
        default_factory=lambda: {k: {"n": 0, "found": 0, "scored": 0, "abs_error": 0.0, "with_score": 0} for k in SPLIT}
    )

    def add(self, detected: Sequence[EyeScore], truth: Sequence[Eye], shown: Sequence[bool], match_px: float) -> None:
        matches = {j: i for i, j in match_points([(d.x, d.y) for d in detected], [(t.x, t.y) for t in truth], match_px)}
        for j, (t, is_shown) in enumerate(zip(truth, shown)):
            if not t.visible:
                continue
            row = self.tally[SPLIT[0] if is_shown else SPLIT[1]]
            row["n"] += 1
            if j not in matches:
                continue
            row["found"] += 1
            eye = detected[matches[j]]
            if eye.quality_ok:
                row["scored"] += 1
                if t.score is not None:
                    row["abs_error"] += abs(eye.score - float(t.score))
                    row["with_score"] += 1

    def report(self) -> dict[str, dict[str, Any]]:
        return {
            name: {
                "n": int(t["n"]),
                "found": int(t["found"]),
                "scored": int(t["scored"]),
                "recall": t["found"] / t["n"] if t["n"] else None,
                "scored_recall": t["scored"] / t["n"] if t["n"] else None,
                "scored_mae": t["abs_error"] / t["with_score"] if t["with_score"] else None,
            }
            for name, t in self.tally.items()
        }
