"""Whether the frame shows a labelled eye: crafted frames and masks, the delta E test and its tally."""

from __future__ import annotations

import numpy as np
import pytest

from device.eyes import ANIMAL, EYES
from device.results import EyeScore
from export.dataset import Eye
from export.discernible import MIN_EYE_DELTA_E, DiscernibleRecall, discernible, eye_contrast, hide_unseen_eyes
from export.label_mask import IGNORE

FUR = (150, 150, 150)


def _scene(eye_bgr: tuple[int, int, int], highlight: bool = False, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """A 120x120 frame of flat fur with a 14x8 px eye at (60, 60), and its class mask."""
    rng = np.random.default_rng(3)
    image = np.empty((120, 120, 3), np.float32)
    image[:] = FUR
    mask = np.full((120, 120), ANIMAL, np.uint8)
    mask[56:64, 53:67] = EYES
    image[56:64, 53:67] = eye_bgr
    if highlight:
        image[58:61, 58:61] = 255
    image += rng.normal(0, noise, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def test_a_dark_eye_in_pale_fur_is_shown() -> None:
    image, mask = _scene((20, 20, 25))
    contrast = eye_contrast(image, mask, 60.0, 60.0)
    assert contrast is not None and contrast.mean > 30
    assert discernible(image, mask, 60.0, 60.0)


def test_an_eye_drawn_in_the_colour_of_its_fur_is_not_shown() -> None:
    image, mask = _scene((152, 149, 151), noise=4.0)
    contrast = eye_contrast(image, mask, 60.0, 60.0)
    assert contrast is not None and contrast.shown < MIN_EYE_DELTA_E
    assert not discernible(image, mask, 60.0, 60.0)


def test_a_black_eye_in_black_fur_shows_by_its_highlight() -> None:
    dark = (18, 18, 20)
    image, mask = _scene(dark, highlight=True)
    image[mask != EYES] = dark
    with_highlight = eye_contrast(image, mask, 60.0, 60.0)
    image[58:61, 58:61] = dark
    without = eye_contrast(image, mask, 60.0, 60.0)
    assert with_highlight is not None and without is not None
    assert with_highlight.peak > max(with_highlight.mean, MIN_EYE_DELTA_E)
    assert without.shown < MIN_EYE_DELTA_E


def test_an_eye_without_mask_pixels_or_without_a_mask_counts_as_shown() -> None:
    image, mask = _scene(FUR)
    assert eye_contrast(image, mask, 10.0, 10.0) is None
    assert discernible(image, mask, 10.0, 10.0)
    assert discernible(image, None, 60.0, 60.0)


def test_training_masks_leave_out_the_eyes_the_frame_does_not_show_and_keep_the_rest() -> None:
    shown_image, mask = _scene((20, 20, 25))
    unseen_image, _ = _scene((152, 149, 151), noise=4.0)
    image = np.concatenate([shown_image, unseen_image], axis=1)  # two eyes: (60, 60) shown, (180, 60) not
    both = np.concatenate([mask, mask], axis=1)
    hidden = hide_unseen_eyes(image, both, [(60.0, 60.0), (180.0, 60.0), (20.0, 20.0)])
    assert (hidden[:, 120:] == IGNORE).sum() == (both[:, 120:] == EYES).sum() > 0
    assert (hidden[:, 120:][both[:, 120:] != EYES] == ANIMAL).all()
    assert (hidden[:, :120] == both[:, :120]).all()
    assert (both != IGNORE).all(), "the frame's own mask is left as it was"
    assert hide_unseen_eyes(shown_image, mask, [(60.0, 60.0)]) is mask


@pytest.mark.parametrize("found_shown", [True, False])
def test_the_tally_splits_found_scored_and_errors_by_whether_the_eye_was_shown(found_shown: bool) -> None:
    truth = [Eye(10.0, 10.0, 2.0), Eye(50.0, 10.0, 6.0), Eye(90.0, 10.0, None, visible=False)]
    detected = [EyeScore(11.0, 10.0, 5.0)]
    tally = DiscernibleRecall()
    tally.add(detected, truth, [found_shown, not found_shown, False], 8.0)
    report = tally.report()
    hit, other = ("discernible", "indiscernible") if found_shown else ("indiscernible", "discernible")
    assert report[hit] == {"n": 1, "found": 1, "scored": 1, "recall": 1.0, "scored_recall": 1.0, "scored_mae": 3.0}
    assert report[other]["n"] == 1 and report[other]["found"] == 0 and report[other]["scored_mae"] is None
