"""Synthetic datasets and videos on disk: readable, deterministic, matching their ground truth."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from export.cli import main
from export.dataset import open_dataset, validate_dataset
from export.synth.trajectory import scores
from export.synth.video import read_video_truth, truth_path, write_video
from export.synth.writer import write_dataset
from mgs_core.errors import MgsError


def test_write_dataset_is_valid_and_deterministic(tmp_path: Path) -> None:
    a = write_dataset(tmp_path / "a", frames=3, seed=4, progress=False)
    b = write_dataset(tmp_path / "b", frames=3, seed=4, progress=False)
    c = write_dataset(tmp_path / "c", frames=3, seed=5, progress=False, image_format="png")
    problems, counts = validate_dataset(a)
    assert problems == [] and counts["images"] == 3 and counts["boxes"] == 12
    assert (a / "labels.jsonl").read_bytes() == (b / "labels.jsonl").read_bytes()
    assert (a / "labels.jsonl").read_bytes() != (c / "labels.jsonl").read_bytes()
    data = open_dataset(c)
    frame = data.frames[0]
    assert data.read_image(frame).shape == (1080, 1920, 3)
    mask = data.read_mask(frame)
    for box in frame.boxes:
        for eye in box.eyes:
            assert mask[int(round(eye.y)), int(round(eye.x))] in (1, 2, 3)


def test_a_seed_renders_the_same_pixels_whatever_opencvs_thread_count(tmp_path: Path) -> None:
    """Some of OpenCV's filters round differently with another thread count; its default is one per
    core, so a dataset would differ between machines with other core counts. The caller's setting is
    left as it was."""
    threads = cv2.getNumThreads()
    try:
        images = []
        for count in (1, 3):
            cv2.setNumThreads(count)
            out = write_dataset(tmp_path / str(count), frames=1, seed=7, progress=False, image_format="png")
            assert cv2.getNumThreads() == count
            data = open_dataset(out)
            images.append(data.read_image(data.frames[0]))
    finally:
        cv2.setNumThreads(threads)
    np.testing.assert_array_equal(images[0], images[1])


def test_write_dataset_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("precious")
    with pytest.raises(MgsError, match="not empty"):
        write_dataset(tmp_path, frames=1, seed=0, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("name, fourcc", [("rack.mp4", "mp4v"), ("rack.avi", "MJPG")])
def test_video_has_frames_and_matching_truth(tmp_path: Path, name: str, fourcc: str) -> None:
    path = write_video(tmp_path / name, seconds=1.0, fps=6, seed=2, trajectory="demo")
    truth = read_video_truth(path)
    assert truth.header["codec"] == fourcc and truth.header["frames"] == 6
    assert truth_path(path).is_file() and len(truth.rois) == 4
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    assert len(frames) == len(truth.frames) == 6
    assert frames[0].shape == (1080, 1920, 3)
    for ft in truth.frames:
        assert [b.roi for b in ft.boxes] == truth.rois
        assert all(s is not None and 0 <= s <= 9 for s in ft.animal_scores)
        for b in ft.boxes:
            x, y, w, h = b.roi
            assert all(x <= e.x < x + w and y <= e.y < y + h for e in b.eyes)


def test_video_motion_is_smooth(tmp_path: Path) -> None:
    truth = read_video_truth(write_video(tmp_path / "m.mp4", seconds=1.0, fps=10, seed=3, trajectory="baseline"))
    for box in range(4):
        eyes = [f.boxes[box].eyes[0] for f in truth.frames if f.boxes[box].eyes]
        steps = [np.hypot(a.x - b.x, a.y - b.y) for a, b in zip(eyes, eyes[1:])]
        assert max(steps, default=0.0) < 40.0


def test_demo_trajectory_alerts_within_a_minute() -> None:
    t = np.arange(0, 120, 1.0)
    s = scores("demo", t, 4, np.random.default_rng(0))
    assert s[t <= 60, 1].max() > 6.0
    assert s[:, [0, 2, 3]].max() < 6.0


def test_postop_trajectory_rises_and_recovers() -> None:
    t = np.linspace(0, 3600, 721)
    s = scores("postop", t, 4, np.random.default_rng(1))
    assert np.all(s[: len(t) // 20] < 5.0)
    treated = [i for i in range(4) if s[:, i].max() > 6.0]
    assert len(treated) == 3
    assert all(s[-1, i] < s[:, i].max() - 2.0 for i in treated)


def test_cli_synth_validate_and_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    assert main(["synth", "--frames", "2", "--seed", "1", "--out", str(out), "--quiet"]) == 0
    assert "2 images" in capsys.readouterr().out
    assert main(["validate", str(out)]) == 0
    assert main(["synth", "--frames", "2", "--out", str(out), "--quiet"]) == 2
    assert "not empty" in capsys.readouterr().err
    video = tmp_path / "v.mp4"
    assert main(["synth-video", "--seconds", "0.5", "--fps", "4", "--out", str(video), "--quiet"]) == 0
    assert len(read_video_truth(video).frames) == 2
    assert main(["synth-video", "--seconds", "0.5", "--out", str(tmp_path / "v.mkv"), "--quiet"]) == 2
    assert "use a .avi (MJPG) or .mp4 (mp4v)" in capsys.readouterr().err
