"""Capture thread on real video files: newest frame wins, offline mode, end of file, absent camera."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from device.capture import Capture, CaptureConfig
from mgs_core.errors import ConfigError
from mgs_core.tomlconfig import from_dict
from tests.conftest import wait_for


def write_counting_video(path: Path, frames: int, fps: float) -> Path:
    """Frame i is a flat grey of level 4*i, so a frame read back tells its own index."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), 4 * i, np.uint8))
    writer.release()
    return path


def level(frame) -> int:
    return int(round(float(frame.image.mean()) / 4))


def test_newest_frame_wins_and_skipped_frames_are_counted(tmp_path: Path) -> None:
    video = write_counting_video(tmp_path / "v.avi", 40, fps=200)
    with Capture(CaptureConfig(source=str(video))) as cap:
        first = cap.get(timeout=5)
        assert first is not None
        wait_for(lambda: cap.state == "ended", 10, what="end of video")
        last = cap.get(timeout=1)
    assert last is not None and last.index == 39 and level(last) == 39
    assert cap.delivered == 40
    assert cap.skipped == 38  # every frame but the two handed out was overwritten, and counted


def test_offline_mode_hands_over_every_frame(tmp_path: Path) -> None:
    video = write_counting_video(tmp_path / "v.avi", 25, fps=30)
    seen = []
    with Capture(CaptureConfig(source=str(video), realtime=False)) as cap:
        while (frame := cap.get(timeout=5)) is not None:
            seen.append(frame)
    assert [f.index for f in seen] == list(range(25))
    assert [level(f) for f in seen] == list(range(25))
    assert cap.skipped == 0 and cap.state == "ended"
    assert "ended" in cap.message


def test_loop_restarts_the_file(tmp_path: Path) -> None:
    video = write_counting_video(tmp_path / "v.avi", 10, fps=240)
    with Capture(CaptureConfig(source=str(video), loop=True, realtime=False)) as cap:
        levels = [level(cap.get(timeout=5)) for _ in range(25)]
        assert cap.state == "ok"
    assert levels[:12] == list(range(10)) + [0, 1]


def test_absent_camera_index_reports_reconnecting_then_failed() -> None:
    config = CaptureConfig(source="97", reconnect_initial_s=0.01, reconnect_max_s=0.02, reconnect_attempts=2)
    with Capture(config) as cap:
        wait_for(lambda: cap.state == "failed", 10, what="capture gives up")
        assert cap.get(timeout=0.1) is None
    assert "camera index 97" in cap.message and "gave up after 2 retries" in cap.message
    assert cap.reconnects == 2


def test_missing_file_keeps_retrying_with_a_clear_message(tmp_path: Path) -> None:
    config = CaptureConfig(source=str(tmp_path / "nothing.mp4"), reconnect_initial_s=0.01, reconnect_max_s=0.05)
    with Capture(config) as cap:
        wait_for(lambda: cap.reconnects >= 3, 10, what="reopen attempts")
        assert cap.state == "reconnecting"
        assert "cannot open video file" in cap.message


def test_capture_config_rejects_bad_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="camera.fps"):
        from_dict(CaptureConfig, {"fps": -1})
    with pytest.raises(ConfigError, match="no such video file"):
        from_dict(CaptureConfig, {"source": str(tmp_path / "x.mp4"), "kind": "file"})
    assert CaptureConfig(source="rtsp://cam/1").resolved_kind() == "opencv"
    assert CaptureConfig(source="2").resolved_kind() == "opencv"
    assert CaptureConfig(source="rack.mp4").resolved_kind() == "file"
