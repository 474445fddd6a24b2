"""Review sampling on the device: which windows are kept, what a sample holds, the disk queue's limits,
and the upload thread against the real web app served over HTTP."""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from flask import Flask
from werkzeug.serving import make_server

from device.aggregate import BoxWindow
from device.alerts import AlertEvent
from device.results import BoxResult, EyeScore, FrameResult
from device.rois import Roi
from device.sample_queue import SampleQueue, SampleWorker
from device.sampling import SampleJob, Sampler, SamplingConfig, build_body
from device.server_link import ServerLink, ServerLinkConfig
from server.sample_store import parse_upload
from tests.conftest import free_port, wait_for
from tests.web_support import add_device_token, make_app

SHA = "ab" * 32
ROIS = [Roi(0, 0, 200, 160), Roi(200, 0, 200, 160)]
THRESHOLD = 6.0


def eye(x: float, y: float, score: float = 3.0, confidence: float = 0.9) -> EyeScore:
    abstained = confidence < 0.6
    return EyeScore(x, y, score, quality_ok=not abstained, confidence=confidence, abstained=abstained)


def frame_result(t: float, eyes: dict[int, tuple[EyeScore, ...]]) -> FrameResult:
    return FrameResult(0, t, tuple(BoxResult(b, eyes.get(b, ()), bool(eyes.get(b))) for b in range(len(ROIS))))


def window(box: int, start: float, score: float | None = 3.0, abstained: int = 0) -> BoxWindow:
    valid = 0 if score is None else 2
    return BoxWindow(box, start, start + 1, 5, valid, score, score, score, 1.0 if valid else 0.0, abstained)


def sampler(rng_value: float = 0.5, **config: Any) -> Sampler:
    rng = random.Random()
    rng.random = lambda: rng_value  # type: ignore[method-assign]
    s = Sampler(SamplingConfig(**config), ROIS, 96, 0.6, THRESHOLD, 1.0, rng)
    s.model_sha256 = SHA
    return s


def image(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (160, 400, 3), dtype=np.uint8)


def test_alert_windows_are_always_kept_and_other_reasons_obey_the_per_box_interval() -> None:
    s = sampler(min_interval_s=60)
    s.observe(image(), frame_result(100.2, {0: (eye(50, 60), eye(80, 62))}))
    assert s.decide(window(0, 100), None) is None  # ordinary, not drawn (0.5 >= share 0.02)
    s.observe(image(), frame_result(101.2, {0: (eye(50, 60, confidence=0.3),)}))
    job = s.window_closed(window(0, 101, abstained=1), None)
    assert job is not None and job.reason == "low_confidence"
    s.observe(image(), frame_result(102.2, {0: (eye(50, 60, confidence=0.3),)}))
    assert s.window_closed(window(0, 102, abstained=1), None) is None  # 1 s after the last sample of box 0
    s.observe(image(), frame_result(103.2, {0: (eye(50, 60, score=7),)}))
    event = AlertEvent(0, "raised", 104.0, THRESHOLD, 30.0, 7.0)
    job = s.window_closed(window(0, 103, score=7.0), event)
    assert job is not None and job.reason == "alert"
    s.observe(image(), frame_result(104.2, {1: (eye(250, 60, confidence=0.2),)}))
    assert s.window_closed(window(1, 104, score=None, abstained=1), None).reason == "low_confidence"  # other box


def test_borderline_and_random_windows_and_no_face_no_sample() -> None:
    s = sampler(rng_value=0.5, share=0.4, min_interval_s=0)
    s.observe(image(), frame_result(10.5, {0: (eye(50, 60),), 1: (eye(250, 60),)}))
    assert s.decide(window(0, 10, score=5.6), None) == "borderline"
    assert s.decide(window(1, 10, score=3.0), None) is None  # 0.5 >= share 0.4
    s.observe(image(), frame_result(11.5, {0: (eye(50, 60),)}))
    assert sampler(rng_value=0.1, share=0.4).decide(window(0, 11), None) is None  # no candidate in that sampler
    lucky = sampler(rng_value=0.1, share=0.4, min_interval_s=0)
    lucky.observe(image(), frame_result(11.5, {0: (eye(50, 60),)}))
    assert lucky.decide(window(0, 11, score=3.0), None) == "random"
    assert lucky.decide(window(1, 11, score=None), None) is None  # box 1 showed no eye: nothing to rate
    off = sampler(rng_value=0.0, share=1.0, borderline=False, low_confidence=False, alerts=False, min_interval_s=0)
    off.observe(image(), frame_result(12.5, {0: (eye(50, 60, confidence=0.1),)}))
    assert off.decide(window(0, 12, score=6.0, abstained=1), AlertEvent(0, "raised", 13, 6, 30, 6)) == "random"


def test_a_candidate_from_an_earlier_window_is_never_used() -> None:
    s = sampler(share=1.0, min_interval_s=0)
    s.observe(image(), frame_result(20.5, {0: (eye(50, 60), eye(80, 60))}))
    s.observe(image(), frame_result(21.5, {0: (eye(50, 60),)}))  # fewer eyes, but a new window
    job = s.window_closed(window(0, 21), None)
    assert job is not None and job.taken_at == 21.5 and len(job.eyes) == 1


def test_the_frame_with_the_uncertain_eye_is_kept_and_the_face_crop_stays_in_the_box() -> None:
    s = sampler(min_interval_s=0)
    first, second = image(1), image(2)
    s.observe(first, frame_result(30.1, {1: (eye(390, 150), eye(360, 150))}))
    s.observe(second, frame_result(30.4, {1: (eye(390, 150, confidence=0.3),)}))
    job = s.window_closed(window(1, 30, abstained=1), None)
    assert job is not None and job.image is second and job.reason == "low_confidence"
    x, y, w, h = job.face
    assert ROIS[1].x <= x and x + w <= ROIS[1].x1 and y + h <= ROIS[1].y1 and w == h == 96


def test_a_device_sample_passes_the_server_checks_with_positions_in_both_frames() -> None:
    s = sampler(min_interval_s=0)
    s.model_version = "v2"
    frame = image(3)
    s.observe(frame, frame_result(40.3, {1: (eye(300, 80, score=4.25), eye(330, 82, confidence=0.4))}))
    job = s.window_closed(window(1, 40, score=4.25, abstained=1), None, window_seq=17)
    assert job is not None
    body = build_body(job, SamplingConfig(image_format="png"))
    sample = parse_upload(json.loads(json.dumps(body)), "rack-a", 8192)
    assert (sample.model_sha256, sample.model_version) == (SHA, "v2")
    roi, face = sample.images
    assert (roi.width, roi.height) == (200, 160) and (face.width, face.height) == (96, 96)
    fx, fy, _, _ = sample.meta["face_box"]
    e = sample.meta["eyes"][0]
    assert (e["x"] + fx, e["y"] + fy) == (e["roi_x"], e["roi_y"]) == (100, 80)
    assert e["score"] == 4.25 and e["counted"] and not e["abstained"]
    assert sample.meta["eyes"][1]["abstained"] and sample.meta["window_seq"] == 17
    assert sample.meta["roi_box"] == [200, 0, 200, 160] and sample.meta["threshold"] == THRESHOLD
    assert sample.reason == "low_confidence" and sample.model_score == 4.25 and sample.box == 1
    decoded = np.frombuffer(roi.data, np.uint8)
    assert np.array_equal(cv2.imdecode(decoded, cv2.IMREAD_COLOR), frame[0:160, 200:400])  # PNG is lossless


# --- the disk queue ---------------------------------------------------------------------------------


def keys(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [r[0] for r in db.execute("SELECT sample_key FROM samples ORDER BY id")]


def test_queue_limits_drop_the_oldest_and_count_why(tmp_path: Path) -> None:
    path = tmp_path / "samples.sqlite"
    q = SampleQueue(path, max_queued=3, max_bytes=1000, max_age_s=3600)
    for i in range(5):
        assert q.put(f"k{i}", b"x" * 100, now=1000.0 + i)
    assert keys(path) == ["k2", "k3", "k4"] and q.dropped["max_queued"] == 2
    q.put("big", b"y" * 850, now=1010.0)  # one over the count, then 1050 bytes
    assert keys(path) == ["k4", "big"] and q.dropped["max_queued"] == 3 and q.dropped["max_disk_mb"] == 1
    assert not q.put("huge", b"z" * 1001) and q.dropped["too_large"] == 1 and "huge" not in keys(path)
    assert q.expire(now=1004.0 + 3600.5) == 1 and keys(path) == ["big"] and q.dropped["max_age_hours"] == 1
    q.close()
    reopened = SampleQueue(path, 3, 1000, 3600)  # what was committed survives a restart
    assert reopened.depth() == (1, 850) and reopened.oldest().sample_key == "big"  # type: ignore[union-attr]
    reopened.close()


# --- the upload thread against the real app -----------------------------------------------------------


class Served:
    """The real Flask app on a real port, in a thread, that a test can start late."""

    def __init__(self, app: Flask, port: int) -> None:
        self.app, self.port = app, port
        self._server: Any = None

    def start(self) -> None:
        self._server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    app = make_app(tmp_path)
    token_file = tmp_path / "server-token"
    token_file.write_text(add_device_token(app, "rack-a") + "\n")
    s = Served(app, free_port())
    yield s, token_file
    s.stop()


def server_keys(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "server.sqlite") as db:
        return [r[0] for r in db.execute("SELECT sample_key FROM samples ORDER BY id")]


def a_job(box: int = 0, t: float = 50.2) -> SampleJob:
    s = sampler(min_interval_s=0, share=1.0)
    s.observe(image(box), frame_result(t, {box: (eye(60 + 200 * box, 70),)}))
    job = s.window_closed(window(box, int(t)), None)
    assert job is not None
    return job


def test_uploads_wait_for_the_server_then_arrive_once_and_a_refused_sample_does_not_block(
    tmp_path: Path, served: tuple[Served, Path]
) -> None:
    server, token_file = served
    config = SamplingConfig(path=tmp_path / "device" / "samples.sqlite", retry_max_s=1)
    link = ServerLink(ServerLinkConfig(url=f"http://127.0.0.1:{server.port}", token_file=token_file, timeout_s=5))
    worker = SampleWorker(config, SampleQueue.from_config(config), link)
    worker.start()
    try:
        for box in (0, 1):
            worker.submit(a_job(box))
        wait_for(lambda: worker.queue.depth()[0] == 2 and worker.last_error, 10, what="two samples queued, server away")
        queued = keys(config.path)
        assert "cannot reach the server" in worker.last_error
        # A sample the server must refuse (a key it cannot accept) waits between the two good ones.
        worker.queue.put(
            "bad", json.dumps({**json.loads(worker.queue.oldest().body), "sample_key": "no/slash"}).encode()
        )  # type: ignore[union-attr]
        worker.queue.put("late", worker.queue.oldest().body)  # type: ignore[union-attr]  # same sample_key again
        server.start()
        wait_for(lambda: worker.queue.depth()[0] == 0, 20, what="the queue to drain")
    finally:
        worker.stop()
    assert server_keys(tmp_path) == queued
    assert (worker.uploaded, worker.already_stored, worker.refused) == (2, 1, 1)
    assert worker.last_error == ""


def test_a_revoked_token_keeps_the_samples_queued(tmp_path: Path, served: tuple[Served, Path]) -> None:
    server, token_file = served
    token_file.write_text("mgsdev_revoked\n")
    server.start()
    config = SamplingConfig(path=tmp_path / "samples.sqlite", retry_max_s=1)
    link = ServerLink(ServerLinkConfig(url=f"http://127.0.0.1:{server.port}", token_file=token_file, timeout_s=5))
    worker = SampleWorker(config, SampleQueue.from_config(config), link)
    worker.start()
    try:
        worker.submit(a_job())
        wait_for(lambda: "401" in worker.last_error, 10, what="the refusal")
        assert worker.queue.depth()[0] == 1 and worker.refused == 0
    finally:
        worker.stop()
