"""Eye extraction on hand-drawn class maps: counts, centres, filters, partial flag, patch crops."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from device.eyes import (
    ZOOM_RANGE,
    EyeBlob,
    EyeConfig,
    crop_patches,
    find_eye_blobs,
    patch_zooms,
    score_blobs,
    sharpness,
)
from mgs_core.errors import ConfigError
from mgs_core.tomlconfig import from_dict


def head_map(h: int = 200, w: int = 300) -> np.ndarray:
    """Background with an animal body holding two eyes and one ear."""
    classes = np.zeros((h, w), np.uint8)
    cv2.ellipse(classes, (150, 100), (110, 70), 0, 0, 360, 1, -1)
    cv2.circle(classes, (100, 80), 8, 3, -1)
    cv2.circle(classes, (190, 85), 6, 3, -1)
    cv2.circle(classes, (150, 45), 12, 2, -1)
    return classes


def test_two_eyes_found_with_centres_in_frame_coordinates() -> None:
    blobs = find_eye_blobs(head_map(), EyeConfig(), origin=(1000.0, 500.0))
    assert len(blobs) == 2
    big, small = blobs
    assert big.area_px > small.area_px
    assert abs(big.x - 1100) < 0.6 and abs(big.y - 580) < 0.6
    assert abs(small.x - 1190) < 0.6 and abs(small.y - 585) < 0.6
    assert not big.touches_border and not small.touches_border


def test_scale_maps_coarse_pixels_to_full_frame() -> None:
    blobs = find_eye_blobs(
        head_map(), EyeConfig(min_area_px=20, max_area_px=10000), origin=(0.0, 0.0), scale=(2.0, 2.0)
    )
    assert len(blobs) == 2
    assert abs(blobs[0].x - 200.5) < 1.5 and abs(blobs[0].y - 160.5) < 1.5
    assert blobs[0].area_px > 4 * 150


def test_size_shape_and_context_filters() -> None:
    classes = head_map()
    cv2.circle(classes, (20, 20), 6, 3, -1)  # eye-sized blob in the background: no animal around
    classes[150, 150] = 3  # a speck inside the animal: too small
    cv2.line(classes, (60, 130), (140, 131), 3, 2)  # long thin streak: wrong shape
    blobs = find_eye_blobs(classes, EyeConfig())
    assert len(blobs) == 2
    assert all(b.y < 100 for b in blobs)


def test_blob_cut_by_the_map_border_is_flagged() -> None:
    cut = head_map()[:, 95:]
    blobs = find_eye_blobs(cut, EyeConfig(min_area_px=10))
    by_x = sorted(blobs, key=lambda b: b.x)
    assert by_x[0].touches_border
    assert not by_x[-1].touches_border


def test_padding_outside_valid_area_counts_as_border() -> None:
    blobs = find_eye_blobs(head_map(), EyeConfig(), valid=(0, 0, 105, 200))
    assert any(b.touches_border for b in blobs if b.x < 150)


def test_max_candidates_per_box_keeps_the_largest() -> None:
    blobs = find_eye_blobs(head_map(), EyeConfig(max_eyes_per_box=1, max_candidates_per_box=1))
    assert len(blobs) == 1 and abs(blobs[0].x - 100) < 1


def test_patch_crop_inside_and_at_borders() -> None:
    frame = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    patches, clipped = crop_patches(frame, [(60, 50), (3.2, 2.0), (119, 99), (-30, 50)])
    assert patches.shape == (4, 50, 50, 3)
    assert list(clipped) == [False, True, True, True]
    assert np.array_equal(patches[0], frame[25:75, 35:85])
    # top-left corner: the frame's corner pixel is repeated into the padding
    assert np.array_equal(patches[1][:23, :22], np.broadcast_to(frame[0, 0], (23, 22, 3)))
    assert np.array_equal(patches[1][23:, 22:], frame[0:27, 0:28])
    # centre completely outside: padding repeats the nearest column
    assert np.array_equal(patches[3][:, -1], frame[25:75, 0])


def test_blob_width_is_its_longest_side_in_frame_pixels() -> None:
    classes = np.zeros((100, 100), np.uint8)
    cv2.ellipse(classes, (50, 50), (40, 30), 0, 0, 360, 1, -1)
    cv2.ellipse(classes, (50, 50), (9, 2), 0, 0, 360, 3, -1)  # a nearly shut eye: a slit 19 px long
    (blob,) = find_eye_blobs(classes, EyeConfig(min_area_px=10), scale=(2.0, 2.0))
    assert blob.width_px == 2 * 19


def disc_frame(radius: int) -> np.ndarray:
    frame = np.full((400, 400, 3), 200, np.uint8)
    cv2.circle(frame, (200, 200), radius, (20, 20, 20), -1)
    return frame


def dark_width(patch: np.ndarray) -> int:
    return int(np.count_nonzero(patch[25, :, 0] < 110))


@pytest.mark.parametrize("radius", [6, 10, 18])
def test_scale_normalised_patches_show_every_eye_at_the_same_width(radius: int) -> None:
    """An eye 12, 20 or 36 px wide fills 20 px of its patch: the regressor sees one scale."""
    zooms = patch_zooms([2 * radius], 20.0)
    patches, clipped = crop_patches(disc_frame(radius), [(200, 200)], zooms=zooms)
    assert patches.shape == (1, 50, 50, 3) and not clipped[0]
    assert abs(dark_width(patches[0]) - 20) <= 2
    plain, _ = crop_patches(disc_frame(radius), [(200, 200)])
    assert dark_width(plain[0]) == 2 * radius + 1


def test_patch_zoom_is_bounded_and_absent_for_fixed_crop_models() -> None:
    assert patch_zooms([4.0, 400.0], 20.0) == [ZOOM_RANGE[1], ZOOM_RANGE[0]]
    assert patch_zooms([20.0], 0.0) is None
    # a zoomed-out patch reaches further: a window that leaves the frame is flagged as clipped
    frame = disc_frame(10)
    assert list(crop_patches(frame, [(40, 200)], zooms=[1.0])[1]) == [False]
    assert list(crop_patches(frame, [(40, 200)], zooms=[0.5])[1]) == [True]


def test_score_blobs_cuts_the_patches_the_eye_model_was_trained_on() -> None:
    """A stand-in eye model that reports the dark share of the patch's middle row: with the
    model's eye_width the small and the large eye look alike, with fixed crops they do not."""

    def dark_share(batch: np.ndarray) -> np.ndarray:
        return (batch[:, 0, 25, :] < 0.43).mean(axis=1, keepdims=True).astype(np.float32) * 9

    def scores(eye_width: float) -> list[float]:
        out = []
        for radius in (6, 18):
            blob = EyeBlob(200, 200, int(np.pi * radius**2), False, width_px=2.0 * radius)
            (eye,) = score_blobs(
                disc_frame(radius), [blob], dark_share, EyeConfig(min_confidence=0.0), eye_width=eye_width
            )
            assert eye is not None
            out.append(eye.score)
        return out

    small, large = scores(20.0)
    assert abs(small - large) < 0.5
    small, large = scores(0.0)
    assert large - small > 3


def test_blur_is_judged_at_the_cameras_scale_not_on_the_enlarged_patch() -> None:
    frame = disc_frame(6)
    native = sharpness(crop_patches(frame, [(200, 200)])[0][0])
    enlarged = sharpness(crop_patches(frame, [(200, 200)], zooms=patch_zooms([12.0], 20.0))[0][0])
    assert enlarged < native / 2
    config = EyeConfig(min_confidence=0.0, min_sharpness=(native + enlarged) / 2)
    constant = lambda batch: np.full((len(batch), 1), 3.0, np.float32)  # noqa: E731 - a stand-in regressor
    (eye,) = score_blobs(frame, [EyeBlob(200, 200, 113, False, width_px=12.0)], constant, config, eye_width=20.0)
    assert eye is not None and eye.quality_ok and eye.sharpness == round(native, 2)


def test_blurred_and_partial_eyes_are_not_quality_ok() -> None:
    rng = np.random.default_rng(1)
    frame = (rng.random((200, 200, 3)) * 255).astype(np.uint8)
    frame[:, 100:] = cv2.GaussianBlur(frame[:, 100:], (0, 0), 6)
    assert sharpness(frame[75:125, 25:75]) > 10 * sharpness(frame[75:125, 125:175])
    blobs = [
        EyeBlob(50, 100, 100, False),
        EyeBlob(150, 100, 100, False),
        EyeBlob(50, 100, 100, True),
        EyeBlob(10, 10, 100, False),
    ]
    constant = lambda batch: np.full((len(batch), 1), 12.5, np.float32)  # noqa: E731 - a stand-in regressor, out of range on purpose
    # noise is no eye: score it anyway; one blob per box, so the box's two-eye limit keeps them all
    eyes = score_blobs(frame, blobs, constant, EyeConfig(min_confidence=0.0), groups=[0, 1, 2, 3])
    assert [e is not None and e.quality_ok for e in eyes] == [True, False, False, False]
    assert all(e is not None and e.score == 9.0 for e in eyes)


def test_eye_config_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="pipeline.eyes.max_area_px"):
        from_dict(EyeConfig, {"min_area_px": 50, "max_area_px": 40})


def test_dark_hole_with_little_fur_around_is_not_an_eye() -> None:
    """A lid vent of the box looks like an eye to the U-Net; a sliver of animal pixels next to it must not rescue it."""
    classes = head_map()
    cv2.circle(classes, (260, 180), 7, 3, -1)  # a "hole" in the background...
    classes[176:184, 268:270] = 1  # ...touching two columns of fur
    blobs = find_eye_blobs(classes, EyeConfig())
    assert len(blobs) == 2
    assert all(b.x < 230 for b in blobs)
    permissive = find_eye_blobs(classes, EyeConfig(min_context_fraction=0.0, max_eyes_per_box=3))
    assert any(b.x > 250 for b in permissive)


def _head_picture(classes: np.ndarray, eye_bgr: tuple[int, int, int]) -> np.ndarray:
    """The picture behind `head_map`: grey fur, pale background, the big eye (at 100, 80) in eye_bgr and
    the small one (at 190, 85) black with a white highlight."""
    image = np.full((*classes.shape, 3), 230, np.uint8)
    image[classes == 1] = (120, 120, 125)
    image[classes == 2] = (150, 140, 200)
    image[classes == 3] = (15, 15, 15)
    image[78:82, 188:192] = 255
    cv2.circle(image, (100, 80), 8, eye_bgr, -1)
    return image


def test_each_blob_measures_how_far_the_picture_shows_it_apart_from_its_fur() -> None:
    classes = head_map()
    gated = EyeConfig(min_delta_e=6.0)  # the contrast is measured for the gate only
    hidden = find_eye_blobs(classes, gated, image=_head_picture(classes, (121, 119, 124)))
    shown = find_eye_blobs(classes, gated, image=_head_picture(classes, (40, 30, 30)))
    assert [b.delta_e is not None for b in hidden + shown] == [True] * 4
    (big_hidden, small), (big_shown, _) = hidden, shown
    assert big_hidden.delta_e < 2 < 30 < big_shown.delta_e  # type: ignore[operator]
    assert small.delta_e > 30  # type: ignore[operator]
    assert all(b.delta_e is None for b in find_eye_blobs(classes, EyeConfig()))


def test_an_eye_the_picture_does_not_show_gets_no_confidence_and_no_score() -> None:
    classes = head_map()
    image = _head_picture(classes, (121, 119, 124))
    constant = lambda batch: np.full((len(batch), 1), 4.0, np.float32)  # noqa: E731 - a stand-in regressor
    blobs = find_eye_blobs(classes, EyeConfig(min_delta_e=6.0), image=image)
    for gate, scored in ((0.0, [True, True]), (6.0, [False, True])):
        config = EyeConfig(min_confidence=0.0, min_sharpness=0.0, min_delta_e=gate)
        eyes = score_blobs(image, blobs, constant, config)
        assert [e is not None and e.quality_ok for e in eyes] == scored
        assert [e is not None and e.abstained for e in eyes] == [not s for s in scored]
    assert eyes[0] is not None and eyes[0].confidence == 0.0 and eyes[0].cues is not None
    assert eyes[0].cues.delta_e == blobs[0].delta_e
