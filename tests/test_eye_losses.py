"""Which stage a missed eye is counted at, and what a found one became: crafted class maps and eyes, no models."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from device.eyes import ANIMAL, EYES, EyeConfig, find_eye_blobs
from device.pipeline import FineCrop
from device.results import EyeScore
from export.eye_losses import (
    NOT_A_CANDIDATE,
    NOT_KEPT,
    OFF_CENTRE,
    FoundFates,
    LossStages,
    lost_at,
    no_candidate_reason,
)

CONFIG = EyeConfig()


def _crop(eye_at: tuple[int, int] | None, eye_px: int = 7, box: int = 0) -> FineCrop:
    """A 96x96 crop at frame (100, 200): fur everywhere, an eye blob of eye_px x eye_px at eye_at (map pixels)."""
    classes = np.full((96, 96), ANIMAL, np.uint8)
    if eye_at is not None:
        u, v = eye_at
        classes[v : v + eye_px, u : u + eye_px] = EYES
    blobs = find_eye_blobs(classes, CONFIG, origin=(100, 200), valid=(0, 0, 96, 96))
    return FineCrop(box=box, x0=100, y0=200, valid=(0, 0, 96, 96), classes=classes, blobs=blobs)


def test_an_eye_outside_every_crop_was_lost_to_the_head_search() -> None:
    assert lost_at(50.0, 50.0, [_crop((40, 40))], 8.0) == "no_crop"
    assert lost_at(150.0, 250.0, [], 8.0) == "no_crop"


def test_an_eye_in_a_crop_without_eye_pixels_was_lost_to_the_fine_unet() -> None:
    assert lost_at(150.0, 250.0, [_crop(None)], 8.0) == "no_eye_pixel"
    assert lost_at(150.0, 250.0, [_crop((80, 5))], 8.0) == "no_eye_pixel"


def test_eye_pixels_too_small_for_a_blob_were_lost_to_the_filters() -> None:
    assert lost_at(141.0, 241.0, [_crop((40, 40), eye_px=2)], 8.0) == "no_candidate"


def test_a_candidate_that_was_not_reported_is_counted_after_the_filters() -> None:
    assert lost_at(143.0, 243.0, [_crop((40, 40))], 8.0) == "not_reported"


def test_a_missed_eye_without_a_candidate_is_told_which_filter_dropped_its_pixels() -> None:
    assert no_candidate_reason(141.0, 241.0, [_crop((40, 40), eye_px=2)], CONFIG, 8.0) == "too small"


def test_a_blob_reaching_far_past_the_eye_is_a_candidate_off_its_centre() -> None:
    """An eye merged with a dark neighbour into one 7 x 30 blob: its centre is 14 px from the eye."""
    crop = _crop(None)
    crop.classes[40:70, 40:47] = EYES
    assert lost_at(143.0, 241.0, [crop], 8.0) == "no_candidate"
    assert no_candidate_reason(143.0, 241.0, [crop], CONFIG, 8.0) == OFF_CENTRE


def test_a_missed_candidate_is_split_by_whether_it_reached_the_eye_model() -> None:
    truth = [SimpleNamespace(x=143.0, y=243.0, visible=True), SimpleNamespace(x=141.0, y=241.0, visible=True)]
    crops = [_crop((40, 40))]
    reached, left_out = LossStages(), LossStages()
    reached.add(0, [], truth[:1], crops, crops[0].blobs, 8.0)
    left_out.add(0, [], truth[:1], crops, [], 8.0)
    assert reached.report_why()["not_reported"] == {NOT_KEPT: 1}
    assert left_out.report_why()["not_reported"] == {NOT_A_CANDIDATE: 1}
    small = LossStages()
    small.add(0, [], truth[1:], [_crop((40, 40), eye_px=2)], [], 8.0)
    assert small.report_why() == {"no_candidate": {"too small": 1}, "not_reported": {}}


def test_every_visible_eye_is_counted_once_and_hidden_ones_not_at_all() -> None:
    truth = [
        SimpleNamespace(x=143.0, y=243.0, visible=True),
        SimpleNamespace(x=20.0, y=20.0, visible=True),
        SimpleNamespace(x=30.0, y=30.0, visible=False),
    ]
    found = EyeScore(x=144.0, y=242.0, score=3.0, quality_ok=True)
    stages = LossStages()
    stages.add(0, [found], truth, [_crop((40, 40)), _crop(None, box=1)], [], 8.0)
    report = stages.report()
    assert report["found"]["n"] == 1 and report["no_crop"]["n"] == 1
    assert sum(v["n"] for v in report.values()) == 2
    assert report["found"]["share"] == 0.5


def test_a_magnified_crop_is_read_in_frame_pixels() -> None:
    """A small box's crop magnified 2x: its 96-px map covers 48 frame pixels from (100, 200)."""
    classes = np.full((96, 96), ANIMAL, np.uint8)
    classes[60:74, 60:74] = EYES  # frame pixels (130, 230) to (137, 237)
    blobs = find_eye_blobs(classes, CONFIG, origin=(100, 200), scale=(0.5, 0.5), valid=(0, 0, 96, 96))
    crop = FineCrop(box=0, x0=100, y0=200, valid=(0, 0, 96, 96), classes=classes, blobs=blobs, scale=0.5)
    assert lost_at(133.5, 233.5, [crop], 4.0) == "not_reported"
    assert lost_at(160.0, 260.0, [crop], 4.0) == "no_crop"  # inside 96 px, outside the 48 it covers
    assert lost_at(110.0, 210.0, [crop], 4.0) == "no_eye_pixel"


def test_found_eyes_are_split_by_the_check_that_held_them_back() -> None:
    truth = [SimpleNamespace(x=10.0 * k, y=0.0, visible=k != 5, score=float(k)) for k in range(6)]
    detected = [
        EyeScore(x=0.0, y=0.0, score=1.0, quality_ok=True, sharpness=40.0),  # scored, 1 off
        EyeScore(x=10.0, y=0.0, score=1.0, quality_ok=False, sharpness=40.0, abstained=True),
        EyeScore(x=20.0, y=0.0, score=5.0, quality_ok=False, sharpness=3.0),  # blurred, 3 off
        EyeScore(x=30.0, y=0.0, score=3.5, quality_ok=False, sharpness=40.0),  # sharp but held back: cut
        EyeScore(x=50.0, y=0.0, score=5.0, quality_ok=True, sharpness=40.0),  # a hidden eye: not counted
        EyeScore(x=90.0, y=0.0, score=5.0, quality_ok=True, sharpness=40.0),  # a false eye: not counted
    ]
    fates = FoundFates(min_sharpness=CONFIG.min_sharpness)
    fates.add(detected, truth, 4.0)
    report = fates.report()
    assert {fate: v["n"] for fate, v in report.items()} == {"scored": 1, "abstained": 1, "blurred": 1, "cut": 1}
    assert report["scored"]["mae"] == 1.0 and report["blurred"]["mae"] == 3.0 and report["cut"]["mae"] == 0.5
    assert report["cut"]["share"] == 0.25
