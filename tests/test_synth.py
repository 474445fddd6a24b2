"""Synthetic rack frames: deterministic, truthful ground truth, and the score visible at the eye."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from export.synth.layout import RackLayout
from export.synth.mouse import CLASS_EYES, FURS, EyeLook, aperture_ratio, draw_eye
from export.synth.rack import render_frame

LAYOUT = RackLayout.random(7)


def test_same_seed_same_frame_and_labels() -> None:
    a, b = render_frame(11, layout=LAYOUT), render_frame(11, layout=LAYOUT)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert a.boxes == b.boxes and a.animal_scores == b.animal_scores


def test_different_seed_different_frame() -> None:
    a, b = render_frame(11, layout=LAYOUT), render_frame(12, layout=LAYOUT)
    assert not np.array_equal(a.image, b.image)
    assert a.boxes != b.boxes


def test_frame_shape_and_layout() -> None:
    f = render_frame(3)
    assert f.image.shape == (1080, 1920, 3) and f.image.dtype == np.uint8
    assert f.mask.shape == (1080, 1920) and f.mask.dtype == np.uint8
    rois = [b.roi for b in f.boxes]
    assert len(rois) == 4 and rois == sorted(rois)
    for (x, y, w, h), nxt in zip(rois, rois[1:] + [(1920, 0, 0, 0)]):
        assert 0 <= x and x + w <= nxt[0] and 0 <= y and y + h <= 1080


@pytest.mark.parametrize("seed", range(6))
def test_ground_truth_consistent(seed: int) -> None:
    f = render_frame(seed * 97)
    assert set(np.unique(f.mask)) <= {0, 1, 2, 3}
    for box, score in zip(f.boxes, f.animal_scores):
        x, y, w, h = box.roi
        assert box.face_visible == bool(box.eyes)
        if score is not None:
            assert (f.mask[y : y + h, x : x + w] == 1).any()
            assert (f.mask[y : y + h, x : x + w] == 2).any()
        for eye in box.eyes:
            assert x <= eye.x < x + w and y <= eye.y < y + h
            assert eye.score is None or 0.0 <= eye.score <= 9.0
            cx, cy = int(round(eye.x)), int(round(eye.y))
            assert (f.mask[cy - 1 : cy + 2, cx - 1 : cx + 2] == 3).any(), (seed, box.box, eye)


def test_closed_eye_has_fewer_eye_pixels_than_open() -> None:
    for seed in (5, 6, 7):
        open_ = render_frame(seed, scores=[0.0] * 4, layout=LAYOUT)
        shut = render_frame(seed, scores=[9.0] * 4, layout=LAYOUT)
        assert [len(b.eyes) for b in open_.boxes] == [len(b.eyes) for b in shut.boxes]
        if any(b.eyes for b in open_.boxes):
            assert 0.2 * (open_.mask == 3).sum() < (shut.mask == 3).sum() < 0.6 * (open_.mask == 3).sum()


@pytest.mark.parametrize("seed", [21, 22])
def test_score_changes_only_the_eye_region(seed: int) -> None:
    """The regressor sees a 50x50 patch at the eye: the score must not leak anywhere else.

    The drawn change stays within about 22 px of the eye centre; defocus and JPEG blocks of the
    box nuisance may carry it a little further, never beyond 40 px.
    """
    a = render_frame(seed, scores=[0.0] * 4, layout=LAYOUT)
    b = render_frame(seed, scores=[9.0] * 4, layout=LAYOUT)
    changed = np.argwhere(np.any(a.image != b.image, axis=2))
    eyes = np.array([(e.x, e.y) for box in a.boxes for e in box.eyes])
    assert len(eyes) and len(changed)
    nearest = np.min(np.hypot(changed[:, None, 1] - eyes[None, :, 0], changed[:, None, 0] - eyes[None, :, 1]), axis=1)
    assert nearest.max() <= 40.0


def test_aperture_falls_with_score() -> None:
    ratios = [aperture_ratio(s) for s in range(10)]
    assert ratios == sorted(ratios, reverse=True)
    assert ratios[0] > 0.8 and ratios[9] < 0.1


def _drawn_eye(score: float, look: EyeLook, coat: str = "white") -> tuple[np.ndarray, np.ndarray]:
    fur = FURS[coat]
    img, mask = np.full((60, 60, 3), fur.body, np.uint8), np.zeros((60, 60), np.uint8)
    draw_eye(img, mask, fur, 1.0, 30.0, 30.0, np.array([1.0, 0.0]), np.array([0.0, -1.0]), 24.0, score, False, look)
    return img, mask


def test_lid_skin_keeps_the_eyeball_bulge_and_leaves_the_label_alone() -> None:
    """A shut eye with the bulge kept looks like an eye-shaped patch, but its opening (mask) is the slit's."""
    plain_img, plain_mask = _drawn_eye(9.0, EyeLook())
    skin_img, skin_mask = _drawn_eye(9.0, EyeLook(margin=0.1, margin_shade=0.4, bulge=1.0))
    assert np.array_equal(plain_mask, skin_mask)
    rows = np.flatnonzero(np.any(skin_img != plain_img, axis=(1, 2)))
    assert rows.size and rows.max() - rows.min() + 1 > 0.7 * 24  # about the wide-open eye's height
    flat_img, _ = _drawn_eye(9.0, EyeLook(margin=0.1, margin_shade=0.4, bulge=0.0))
    flat_rows = np.flatnonzero(np.any(flat_img != plain_img, axis=(1, 2)))
    assert flat_rows.max() - flat_rows.min() < rows.max() - rows.min()


def test_dark_lids_make_a_shut_eye_a_dark_oval_and_leave_the_label_alone() -> None:
    """Lid skin mixed towards the eyeball: the band around the slit darkens, the opening (mask) stays the score's."""
    look = EyeLook(margin=0.1, margin_shade=1.0, bulge=1.0)
    pale_img, pale_mask = _drawn_eye(9.0, look, "agouti")
    dark_img, dark_mask = _drawn_eye(9.0, replace(look, skin_eye_mix=0.8), "agouti")
    assert np.array_equal(pale_mask, dark_mask)
    band = np.any(dark_img != pale_img, axis=2)
    assert band.sum() > 0.3 * 24 * 24 * 0.88 * np.pi / 4  # much of the wide-open eye's area
    assert dark_img[band].mean() < pale_img[band].mean() - 30


def test_a_dim_eye_fades_into_its_coat_and_keeps_its_label() -> None:
    """Eyeball, rim and reflections move towards the coat's colour; the opening (mask) stays the score's."""
    plain_img, plain_mask = _drawn_eye(2.0, EyeLook(), "black")
    dim_img, dim_mask = _drawn_eye(2.0, EyeLook(eye_mix=0.4, rim_mix=1.0, highlight_level=0.0), "black")
    assert np.array_equal(plain_mask, dim_mask)
    eye = plain_mask == CLASS_EYES
    coat = np.array(FURS["black"].body, float)
    assert dim_img[eye].max() < plain_img[eye].max()  # no lamp reflection left

    def contrast(img: np.ndarray) -> float:
        return float(np.abs(img[eye].astype(float) - coat).mean())

    assert contrast(dim_img) < 0.75 * contrast(plain_img)


def test_fur_choice() -> None:
    f = render_frame(4, scores=[2.0] * 4, furs=["white"] * 4, layout=LAYOUT)
    animal = f.mask == 1
    assert f.image[animal].mean() > 120  # a white coat is bright
    g = render_frame(4, scores=[2.0] * 4, furs=["black"] * 4, layout=LAYOUT)
    assert g.image[g.mask == 1].mean() < 90


def test_bad_arguments_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="outside the orbital-tightening scale"):
        render_frame(1, scores=[10.0], layout=LAYOUT)
    with pytest.raises(ValueError, match="unknown fur 'grey'"):
        render_frame(1, furs=["grey"], layout=LAYOUT)
