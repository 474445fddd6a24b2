"""The local preview picture: boxes, eyes and scores drawn where they belong."""

from __future__ import annotations

import numpy as np

from device.aggregate import BoxWindow
from device.localview import GREEN, GREY, ORANGE, PREVIEW_WIDTH, RED, draw_preview
from device.results import BoxResult, EyeScore, FrameResult
from device.rois import Roi

ROIS = [Roi(100, 200, 400, 600), Roi(600, 200, 400, 600), Roi(1100, 200, 400, 600)]


def window(box: int, score: float | None) -> BoxWindow:
    return BoxWindow(box, 0.0, 1.0, 10, 0 if score is None else 2, score, score, score, 0.0 if score is None else 1.0)


def near(pixel, colour) -> bool:
    return int(np.abs(pixel.astype(int) - np.array(colour)).max()) <= 40


def test_boxes_are_coloured_by_state_and_eyes_by_quality() -> None:
    frame = np.zeros((1080, 1920, 3), np.uint8)
    result = FrameResult(
        0,
        0.0,
        (
            BoxResult(0, (EyeScore(300.0, 500.0, 3.0, quality_ok=True, area_px=100),), True),
            BoxResult(1, (EyeScore(800.0, 500.0, 8.0, quality_ok=False, area_px=100),), True),
        ),
    )
    pic = draw_preview(frame, ROIS, result, {0: window(0, 3.0), 1: window(1, None), 2: window(2, 7.5)}, alerts=[2])
    assert pic.shape == (540, PREVIEW_WIDTH, 3)
    s = PREVIEW_WIDTH / 1920
    bottom = round(800 * s)  # bottom edge of every box, scaled
    assert near(pic[bottom, round(300 * s)], GREEN)  # box 0 has a score
    assert near(pic[bottom, round(800 * s)], GREY)  # box 1: no face
    assert near(pic[bottom, round(1300 * s)], RED)  # box 2: alert raised
    radius = max(5, round(10 * s))
    assert near(pic[round(500 * s), round(300 * s) + radius], GREEN)  # eye used for the score
    assert near(pic[round(500 * s), round(800 * s) + radius], ORANGE)  # eye rejected
    assert frame.max() == 0  # the camera frame itself is not drawn on


def test_without_a_frame_the_picture_says_why() -> None:
    pic = draw_preview(None, ROIS, None, {}, note="camera reconnecting: cannot open camera index 0")
    assert pic.shape == (540, PREVIEW_WIDTH, 3)
    assert pic.max() > 200  # the note is written in white on grey
