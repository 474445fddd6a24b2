"""The dataset format: every broken input gives a message naming the file (and line); raters merge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from export.cli import main
from export.dataset import DatasetError, image_size, label_point, open_dataset, validate_dataset

H, W = 48, 64


def _line(
    image: str = "images/a.png", mask: str | None = "masks/a.png", score: float = 4.0, rater: str = "ann", **extra
) -> dict:
    eye = {"x": 20.0, "y": 12.5, "score": score, "visible": True}
    box = {"box": 0, "roi": [2, 2, 40, 40], "face_visible": True, "eyes": [eye]}
    return {"image": image, "mask": mask, "rater": rater, "boxes": [box], **extra}


def make_dataset(root: Path, lines: list[dict] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "dataset.json").write_text(
        json.dumps({"format": "mgs-rack-dataset", "version": 1, "score_scale": [0, 9], "source": "test"})
    )
    image = np.full((H, W, 3), 90, np.uint8)
    mask = np.zeros((H, W), np.uint8)
    mask[10:16, 17:24] = 3
    cv2.imwrite(str(root / "images" / "a.png"), image)
    cv2.imwrite(str(root / "images" / "b.jpg"), image)
    cv2.imwrite(str(root / "masks" / "a.png"), mask)
    lines = lines if lines is not None else [_line(), _line(image="images/b.jpg", mask=None)]
    (root / "labels.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return root


def test_valid_dataset_counts_and_samples(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    problems, counts = validate_dataset(root)
    assert problems == []
    assert counts["images"] == 2 and counts["masks"] == 1 and counts["scored_eyes"] == 2
    data = open_dataset(root)
    eyes = list(data.eye_samples())
    assert [(e.x, e.y, e.score) for e in eyes] == [(20.0, 12.5, 4.0), (20.0, 12.5, 4.0)]
    assert eyes[0].image.shape == (H, W, 3)
    seg = list(data.seg_samples())
    assert len(seg) == 1 and seg[0].mask.shape == (H, W) and seg[0].roi == (2, 2, 40, 40)


def test_raters_merge_to_mean_score_per_eye(tmp_path: Path) -> None:
    second = _line(score=6.0, rater="bob")
    second["boxes"][0]["eyes"][0]["x"] = 22.0  # same eye, clicked 2 px apart
    root = make_dataset(tmp_path / "ds", [_line(score=4.0), second])
    data = open_dataset(root)
    assert len(data.labels) == 2 and len(data.frames) == 1
    frame = data.frames[0]
    assert frame.raters == ("ann", "bob") and frame.lines == (1, 2)
    (eye,) = frame.boxes[0].eyes
    assert eye.score == 5.0 and eye.x == 21.0


def test_conditions_travel_with_frames_and_boxes(tmp_path: Path) -> None:
    line = _line(conditions={"light_lux": 450.0, "motion_blur": True})
    line["boxes"][0]["conditions"] = {"fur": "albino", "box_width_px": 412}
    data = open_dataset(make_dataset(tmp_path / "ds", [line]))
    frame = data.frames[0]
    assert frame.conditions == {"light_lux": 450.0, "motion_blur": True}
    assert frame.boxes[0].conditions == {"fur": "albino", "box_width_px": 412}
    assert frame.to_json()["boxes"][0]["conditions"]["fur"] == "albino"


def test_unscored_eye_is_kept_but_not_a_sample(tmp_path: Path) -> None:
    line = _line()
    del line["boxes"][0]["eyes"][0]["score"]
    root = make_dataset(tmp_path / "ds", [line])
    data = open_dataset(root)
    assert data.frames[0].boxes[0].eyes[0].score is None
    assert list(data.eye_samples()) == []


def _set(path: str, value: object) -> Callable[[dict], None]:
    def change(d: dict) -> None:
        keys = path.split(".")
        target = d
        for k in keys[:-1]:
            target = target[int(k)] if k.isdigit() else target[k]
        target[keys[-1]] = value

    return change


LINE_PROBLEMS = {
    "score outside": (_set("boxes.0.eyes.0.score", 9.5), "outside 0-9"),
    "eye outside": (_set("boxes.0.eyes.0.x", 70.0), "outside the 64x48 image"),
    "roi outside": (_set("boxes.0.roi", [30, 2, 40, 40]), "outside the 64x48 image"),
    "unknown line key": (_set("comment", "x"), "unknown key 'comment'"),
    "unknown eye key": (_set("boxes.0.eyes.0.blink", True), "unknown eye key 'blink'"),
    "unknown box key": (_set("boxes.0.animal", "m1"), "unknown box key 'animal'"),
    "missing image": (_set("image", "images/nope.png"), "images/nope.png: missing image"),
    "missing mask": (_set("mask", "masks/nope.png"), "masks/nope.png: missing mask"),
    "image outside folder": (_set("image", "../a.png"), "must stay inside the dataset folder"),
    "bad visible": (_set("boxes.0.eyes.0.visible", "yes"), "visible must be true or false"),
    "conditions not an object": (_set("conditions", ["fur"]), "conditions must be an object"),
    "box condition value is a list": (_set("boxes.0.conditions", {"fur": ["white"]}), "string, number or bool"),
}


@pytest.mark.parametrize("name", sorted(LINE_PROBLEMS))
def test_label_problem_names_file_and_line(tmp_path: Path, name: str) -> None:
    change, expected = LINE_PROBLEMS[name]
    bad = _line()
    change(bad)
    root = make_dataset(tmp_path / "ds", [_line(), bad])
    problems, counts = validate_dataset(root)
    assert counts == {}
    assert any("labels.jsonl:2: " in p and expected in p for p in problems), problems
    with pytest.raises(DatasetError) as err:
        open_dataset(root)
    assert "labels.jsonl:2" in str(err.value)


def test_bad_json_line(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    with open(root / "labels.jsonl", "a") as fh:
        fh.write('{"image": "images/a.png", \n')
    problems, _ = validate_dataset(root)
    assert any("labels.jsonl:3: bad JSON" in p for p in problems), problems


def test_mask_size_and_values(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    cv2.imwrite(str(root / "masks" / "a.png"), np.full((H, W), 7, np.uint8))
    problems, _ = validate_dataset(root)
    assert any(
        p.endswith("masks/a.png: mask values [7] outside 0-3 (0 background, 1 animal, 2 ears, 3 eyes)")
        for p in problems
    ), problems
    cv2.imwrite(str(root / "masks" / "a.png"), np.zeros((H, W + 1), np.uint8))
    problems, _ = validate_dataset(root)
    assert any(
        "labels.jsonl:1: masks/a.png: mask is 65x48 but the image images/a.png is 64x48" in p for p in problems
    ), problems


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "dataset.json: missing"),
        ("{not json", "dataset.json: bad JSON"),
        (json.dumps({"format": "other", "version": 1}), "format is 'other'"),
        (json.dumps({"format": "mgs-rack-dataset", "version": 2}), "version is 2"),
        (json.dumps({"format": "mgs-rack-dataset", "version": 1, "owner": "x"}), "unknown key 'owner'"),
    ],
)
def test_dataset_json_problems(tmp_path: Path, content: str | None, expected: str) -> None:
    root = make_dataset(tmp_path / "ds")
    if content is None:
        (root / "dataset.json").unlink()
    else:
        (root / "dataset.json").write_text(content)
    problems, _ = validate_dataset(root)
    assert any(expected in p for p in problems), problems


def test_missing_labels_and_folder(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    (root / "labels.jsonl").unlink()
    problems, _ = validate_dataset(root)
    assert any("labels.jsonl: missing" in p for p in problems)
    problems, _ = validate_dataset(tmp_path / "nowhere")
    assert any("no such dataset folder" in p for p in problems)


def test_image_size_from_headers(tmp_path: Path) -> None:
    root = make_dataset(tmp_path / "ds")
    assert image_size(root / "images" / "a.png") == (H, W)
    assert image_size(root / "images" / "b.jpg") == (H, W)
    (root / "x.txt").write_text("hello")
    assert image_size(root / "x.txt") is None


def test_validate_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = make_dataset(tmp_path / "ds")
    assert main(["validate", str(root)]) == 0
    assert capsys.readouterr().out.startswith(f"OK {root}: 2 images")
    (root / "images" / "b.jpg").unlink()
    assert main(["validate", str(root)]) == 1
    assert "images/b.jpg: missing image" in capsys.readouterr().out


def test_an_eye_that_rounds_onto_the_frame_edge_is_dropped():
    """Labels are written rounded to 0.01 px: an eye at 1919.996 would be written at 1920.0, outside a
    1920-px frame, and the dataset check would fail the whole rendered set (val-hardest-116000 did)."""
    bounds = (1500, 300, 1920, 1080)
    assert label_point(1919.996, 500.0, bounds) is None
    kept = label_point(1919.994, 500.0, bounds)
    assert kept is not None and kept == (1919.99, 500.0)
    assert label_point(1499.996, 500.0, bounds) is not None  # rounds to 1500.0, inside
