"""The independent evaluation renderer: deterministic, valid datasets, masks that agree with the labels."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from export.cli import main as mgs_export
from export.dataset import open_dataset, validate_dataset
from export.independent import mouse
from export.independent.scene import render_frame

FRAME_KEYS = {
    "boxes",
    "focal_px",
    "camera_yaw_deg",
    "camera_pitch_deg",
    "camera_roll_deg",
    "backdrop",
    "lighting",
    "light_level",
    "colour_temp",
    "defocus_px",
    "noise_sigma",
    "jpeg_quality",
}
BOX_KEYS = {
    "box_width_px",
    "box_height_px",
    "bedding",
    "fur",
    "eye_colour",
    "pose",
    "mouse_yaw_deg",
    "mouse_length_px",
    "eye_width_px",
    "motion_blur_px",
    "card",
    "occlusion",
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("indep") / "set"
    assert mgs_export(["render-independent", "--out", str(out), "--frames", "3", "--seed", "5", "--quiet"]) == 0
    return out


def test_same_seed_same_frame_other_seed_other_frame() -> None:
    a, b, c = render_frame(17, 2), render_frame(17, 2), render_frame(18, 2)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert [x.to_json() for x in a.boxes] == [x.to_json() for x in b.boxes] and a.conditions == b.conditions
    assert a.image.shape == (1080, 1920, 3) and a.mask.shape == (1080, 1920)
    assert not np.array_equal(a.image, c.image)


def test_written_dataset_is_valid_and_repeatable(rendered: Path, tmp_path: Path) -> None:
    problems, counts = validate_dataset(rendered)
    assert problems == []
    assert counts["images"] == counts["masks"] == 3 and counts["boxes"] >= 3
    again = tmp_path / "again"
    assert (
        mgs_export(
            ["render-independent", "--out", str(again), "--frames", "3", "--seed", "5", "--workers", "2", "--quiet"]
        )
        == 0
    )
    assert (again / "labels.jsonl").read_text() == (rendered / "labels.jsonl").read_text()
    for image in sorted((rendered / "images").iterdir()):
        assert (again / "images" / image.name).read_bytes() == image.read_bytes()


def test_every_visible_eye_lies_on_eye_pixels_inside_its_box(rendered: Path) -> None:
    data = open_dataset(rendered)
    visible = 0
    for frame in data.frames:
        mask = data.read_mask(frame)
        assert set(np.unique(mask)) <= {0, 1, 2, 3}
        for box in frame.boxes:
            x, y, w, h = box.roi
            assert box.face_visible == any(e.visible for e in box.eyes)
            for eye in box.eyes:
                assert x <= eye.x < x + w and y <= eye.y < y + h
                if eye.visible:
                    visible += 1
                    assert mask[round(eye.y), round(eye.x)] == 3
                else:
                    assert eye.score is None
    assert visible > 0


def test_conditions_on_every_frame_and_box(rendered: Path) -> None:
    for line in (rendered / "labels.jsonl").read_text().splitlines():
        d = json.loads(line)
        assert FRAME_KEYS <= set(d["conditions"])
        assert d["boxes"] and all(BOX_KEYS <= set(b["conditions"]) for b in d["boxes"])


def test_eye_aperture_shrinks_with_the_score() -> None:
    heights = [float(np.ptp(mouse.eye_outline(20.0, s, 0.0)[:, 1])) for s in range(10)]
    assert heights[0] == pytest.approx(20.0, rel=0.02)  # score 0: round
    assert all(a > b for a, b in itertools.pairwise(heights))
    assert heights[9] < 0.15 * heights[0]  # score 9: a slit


def test_refuses_to_write_into_a_folder_with_files(rendered: Path, capsys: pytest.CaptureFixture) -> None:
    assert mgs_export(["render-independent", "--out", str(rendered), "--frames", "1", "--quiet"]) == 2
    assert "not an empty folder" in capsys.readouterr().err
