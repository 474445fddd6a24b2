"""The choice renderer: valid datasets, determinism across workers, masks that agree with the eye labels."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from export.cli import main as mgs_export
from export.dataset import validate_dataset


def _render(out: Path, seed: int, frames: int = 3, workers: int = 1) -> Path:
    argv = ["render-choice", "--out", str(out), "--frames", str(frames), "--seed", str(seed), "--quiet"]
    if workers > 1:
        argv += ["--workers", str(workers)]
    assert mgs_export(argv) == 0
    return out


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _render(tmp_path_factory.mktemp("choice") / "a", seed=5, frames=4)


def _lines(root: Path) -> list[dict]:
    return [json.loads(t) for t in (root / "labels.jsonl").read_text().splitlines()]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_output_is_a_valid_dataset(rendered: Path) -> None:
    problems, counts = validate_dataset(rendered)
    assert problems == []
    assert counts
    info = json.loads((rendered / "dataset.json").read_text())
    assert "choice renderer" in info["source"]


def test_same_seed_same_bytes_whatever_the_workers(rendered: Path, tmp_path: Path) -> None:
    again = _render(tmp_path / "b", seed=5, frames=4, workers=2)
    assert _files(again) == _files(rendered)


def test_different_seeds_differ(rendered: Path, tmp_path: Path) -> None:
    other = _render(tmp_path / "c", seed=6, frames=1)
    a = (rendered / "images" / "choice_000000.png").read_bytes()
    assert (other / "images" / "choice_000000.png").read_bytes() != a
    assert _lines(other)[0] != _lines(rendered)[0]


def test_mask_agrees_with_eye_labels(rendered: Path) -> None:
    for line in _lines(rendered):
        mask = np.asarray(cv2.imread(str(rendered / line["mask"]), cv2.IMREAD_UNCHANGED))
        assert mask.shape == (1080, 1920)
        eyes = [e for b in line["boxes"] for e in b["eyes"]]
        widths = [b["conditions"].get("eye_width_px", 0) for b in line["boxes"] for e in b["eyes"]]
        eye_pixels = np.asarray(mask == 3)
        ys, xs = np.nonzero(eye_pixels)
        for e in eyes:
            if e.get("visible", True):
                near = (xs - e["x"]) ** 2 + (ys - e["y"]) ** 2 <= 4.0
                assert near.any(), f"no eye pixels within 2 px of {e} in {line['image']}"
        n, comp = cv2.connectedComponents(eye_pixels.astype(np.uint8))
        for k in range(1, n):
            cy, cx = np.argwhere(comp == k).mean(axis=0)
            assert any(np.hypot(cx - e["x"], cy - e["y"]) <= 1.5 * w for e, w in zip(eyes, widths)), (
                f"eye pixels at ({cx:.0f}, {cy:.0f}) in {line['image']} belong to no labelled eye"
            )


def test_scores_and_conditions(rendered: Path) -> None:
    for line in _lines(rendered):
        assert line["conditions"]["style"] == "choice"
        assert line["conditions"]["boxes"] == len(line["boxes"])
        for box in line["boxes"]:
            assert {"fur", "pose", "box_width_px"} <= set(box["conditions"])
            x, y, w, h = box["roi"]
            assert x >= 0 and y >= 0 and x + w <= 1920 and y + h <= 1080
            for e in box["eyes"]:
                if "score" in e:
                    assert 0 <= e["score"] <= 9
                    assert e["visible"]


def test_non_empty_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "full"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert mgs_export(["render-choice", "--out", str(out), "--frames", "1", "--quiet"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
