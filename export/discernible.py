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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from device.eyes import EYES, EyeContrast, eye_ring_contrast
from device.results import EyeScore
from export.eye_losses import RecallSplit
from export.label_mask import IGNORE, EyeComponent, eye_component

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
    return None if component is None else _component_contrast(image, mask, component)


def _component_contrast(image: np.ndarray, mask: np.ndarray, component: EyeComponent) -> EyeContrast | None:
    window = component.window
    return eye_ring_contrast(image[window], component.pixels, mask[window] == EYES, component.width)


def _shown(contrast: EyeContrast | None) -> bool:
    """Nothing to measure counts as shown: only a measured lack of contrast hides an eye."""
    return contrast is None or contrast.shown >= MIN_EYE_DELTA_E


def discernible(image: np.ndarray, mask: np.ndarray | None, x: float, y: float) -> bool:
    """False only when the label mask shows the eye's pixels and the frame gives them almost the colour
    of the fur around them; without a mask (nothing to measure) every eye counts as discernible."""
    return mask is None or _shown(eye_contrast(image, mask, x, y))


def hide_unseen_eyes(image: np.ndarray, mask: np.ndarray, eyes: Iterable[tuple[float, float]]) -> np.ndarray:
    """The class mask with the pixels of every labelled eye at `eyes` (x, y) that the frame does not show
    set to IGNORE, for training: taught to mark those pixels as eye, a segmenter may learn to paint eyes
    wherever a head's shape says one should be, on other renderers' and cameras' heads too; taught to
    mark them as fur, it would learn to miss faint eyes. So it is taught neither (measured in
    models/TRAINING.md, "Thirty-sixth step")."""
    hidden = mask
    for x, y in eyes:
        component = eye_component(x, y, mask)
        if component is None or _shown(_component_contrast(image, mask, component)):
            continue
        if hidden is mask:
            hidden = mask.copy()
        hidden[component.window][component.pixels] = IGNORE
    return hidden


@dataclass
class DiscernibleRecall(RecallSplit):
    """Recall and scoring split by whether the frame shows the eye: the misses among discernible eyes are
    the ones a better model can win; the scores given to indiscernible eyes are guesses."""

    groups: tuple[str, ...] = SPLIT
    with_mae: bool = True

    def add(self, detected: Sequence[EyeScore], truth: Sequence[Eye], shown: Sequence[bool], match_px: float) -> None:
        split = [None if not t.visible else SPLIT[0] if is_shown else SPLIT[1] for t, is_shown in zip(truth, shown)]
        self.add_grouped(detected, truth, split, match_px)
