"""Box ROIs: config validation, automatic detection on generated rack frames, detect-boxes CLI."""

from __future__ import annotations

import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.cli import main as device_main
from device.rois import Roi, RoiConfig, check_inside, detect_boxes
from export.synth.rack import SESSION_FRAMES, render_frame
from mgs_core.errors import ConfigError
from mgs_core.tomlconfig import from_dict

SESSION = 3  # a camera placement of the generator (its frames share one layout)


def session_frames(count: int) -> list:
    return [render_frame(SESSION * SESSION_FRAMES + i) for i in range(count)]


def true_rois(frame) -> list[Roi]:
    return [Roi(*b.roi) for b in frame.boxes]


def assert_found(found: list[Roi], truth: list[Roi]) -> None:
    assert len(found) == len(truth)
    for f, t in zip(found, truth):
        assert f.iou(t) > 0.8, (f, t)


def test_boxes_found_in_a_median_of_rack_frames() -> None:
    frames = session_frames(7)
    median = np.median(np.stack([f.image for f in frames]), axis=0).astype(np.uint8)
    assert_found(detect_boxes(median), true_rois(frames[0]))


@pytest.mark.parametrize("seed", [5, 70, 140])
def test_boxes_found_in_single_frames_with_animals(seed: int) -> None:
    frame = render_frame(seed)
    assert_found(detect_boxes(frame.image), true_rois(frame))


def test_frame_without_a_rack_finds_nothing() -> None:
    grey = np.full((540, 960, 3), 128, np.uint8)
    assert detect_boxes(grey) == []


def test_roi_config_validation() -> None:
    cfg = from_dict(RoiConfig, {"boxes": [[10, 20, 300, 400], [400, 20, 300, 400]]})
    assert cfg.rois == [Roi(10, 20, 300, 400), Roi(400, 20, 300, 400)]
    with pytest.raises(ConfigError, match=r"rois.boxes\[0\]"):
        from_dict(RoiConfig, {"boxes": [[-1, 0, 100, 100]]})
    with pytest.raises(ConfigError, match="must have 4 items"):
        from_dict(RoiConfig, {"boxes": [[1, 2, 3]]})
    with pytest.raises(ConfigError, match="at most 4"):
        from_dict(RoiConfig, {"boxes": [[0, 0, 20, 20]] * 5})
    with pytest.raises(ConfigError, match="outside the 1920x1080"):
        check_inside([Roi(1800, 0, 200, 100)], (1080, 1920, 3))
    with pytest.raises(ConfigError, match="no boxes configured"):
        check_inside([], (1080, 1920, 3))


def write_video(path: Path, images: list[np.ndarray]) -> Path:
    h, w = images[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (w, h))
    for image in images:
        writer.write(image)
    writer.release()
    return path


def test_detect_boxes_cli_rewrites_only_the_rois_section(tmp_path: Path, capsys) -> None:
    frames = session_frames(5)
    video = write_video(tmp_path / "rack.avi", [f.image for f in frames])
    config = tmp_path / "device.toml"
    config.write_text(
        '# my device\nname = "rack-1"\n\n[rois]\nexpected = 4 # four boxes\nboxes = [[0, 0, 20, 20]]\n\n[camera]\nsource = "0"\n'
    )
    png = tmp_path / "found.png"
    assert device_main(["detect-boxes", "--config", str(config), "--source", str(video), "--png", str(png)]) == 0
    text = config.read_text()
    assert text.startswith("# my device\n") and "# four boxes" in text
    data = tomllib.loads(text)
    assert data["name"] == "rack-1" and data["camera"] == {"source": "0"}
    assert_found([Roi(*b) for b in data["rois"]["boxes"]], true_rois(frames[0]))
    assert cv2.imread(str(png)).shape == frames[0].image.shape
    assert "wrote 4 boxes" in capsys.readouterr().out


def test_detect_boxes_cli_says_when_boxes_are_missing(tmp_path: Path, capsys) -> None:
    frame = render_frame(SESSION * SESSION_FRAMES).image.copy()
    x, y, w, h = render_frame(SESSION * SESSION_FRAMES).boxes[3].roi
    frame[y - 10 : y + h + 10, x - 10 : x + w + 10] = (128, 128, 128)  # box 3 hidden behind a grey board
    image = tmp_path / "rack.png"
    cv2.imwrite(str(image), frame)
    config = tmp_path / "device.toml"
    config.write_text("[rois]\nboxes = []\n")
    assert device_main(["detect-boxes", "--config", str(config), "--source", str(image)]) == 2
    err = capsys.readouterr().err
    assert "found 3 of 4 boxes" in err and "config was not changed" in err
    assert config.read_text() == "[rois]\nboxes = []\n"
    assert (tmp_path / "device.boxes.png").exists()


def test_detect_boxes_cli_unreadable_source(tmp_path: Path, capsys) -> None:
    assert (
        device_main(["detect-boxes", "--config", str(tmp_path / "d.toml"), "--source", str(tmp_path / "none.png")]) == 2
    )
    assert "cannot read image" in capsys.readouterr().err
