"""Model roll-out on the device with real parts: Mosquitto, a small HTTP server that serves model
sets the way mgs-server does (`GET /api/v1/device/models/<version>/<file>`, device bearer token),
packaged sets, and `mgs-device run` scoring a generated rack video.

What a facility relies on: an assigned set is downloaded, checked and switched to without a gap
in the windows; a bad download or a set that finds nothing never leaves the animals unscored; a
device that was off picks its assignment up; a restart keeps the version, and a corrupt store
falls back to the shipped models and heals.
"""

from __future__ import annotations

import json
import logging
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from flask import Flask, abort, request, send_file
from werkzeug.serving import make_server

from device.aggregate import BoxWindow, WindowAggregator
from device.inference import load_models
from device.model_store import ModelStore
from device.results import BoxResult, EyeScore, FrameResult
from device.rollout import RolloutConfig, RolloutManager
from device.server_link import ServerLinkConfig
from export.package import package
from mgs_core.manifest import MANIFEST_NAME, sha256_bytes
from mgs_core.messages import DeviceStatus, ModelAssignment, ModelEvent, model_topic, status_topic, utc_iso
from tests.conftest import Broker, free_port, wait_for
from tests.test_device_run import DEVICE, finish, rack_video, start, write_config  # noqa: F401
from tests.test_package import REPO, blind_models
from tests.test_publisher import Collector

TOKEN = "mgsdev_rollout-test-token"


@dataclass
class SetServer:
    """Serves unpacked model sets; records what was asked for."""

    root: Path
    port: int = field(default_factory=free_port)
    requests: list[str] = field(default_factory=list)

    def add(self, archive: Path, version: str) -> str:
        folder = self.root / version
        with tarfile.open(archive) as tar:
            tar.extractall(folder, filter="data")
        return sha256_bytes((folder / MANIFEST_NAME).read_bytes())

    def app(self) -> Flask:
        app = Flask(__name__)

        @app.get("/api/v1/device/models/<version>/<name>")
        def model_file(version: str, name: str):
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                abort(401)
            self.requests.append(f"{version}/{name}")
            path = self.root / version / name
            if "/" in name or not path.is_file():
                abort(404)
            return send_file(path)

        return app


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good set (the shipped models as version v2) and a blind one (loads, finds no animal)."""
    root = tmp_path_factory.mktemp("sets")
    good = package(REPO / "models", root / "v2.tar.gz", "v2", selftest_frames=2).path
    blind = package(blind_models(root / "blind-models"), root / "blind.tar.gz", "blind", selftest_frames=1).path
    return {"v2": good, "blind": blind}


@pytest.fixture
def set_server(tmp_path: Path, sets: dict[str, Path]) -> Iterator[SetServer]:
    server = SetServer(tmp_path / "served")
    http = make_server("127.0.0.1", server.port, server.app(), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        http.shutdown()
        thread.join(timeout=5)


def link_config(tmp_path: Path, server: SetServer) -> str:
    token = tmp_path / "server-token"
    token.write_text(TOKEN + "\n")
    # [server] turns review sampling on: its queue goes here, not into the working directory (the repository)
    return (
        f'[server]\nurl = "http://127.0.0.1:{server.port}"\ntoken_file = "{token}"\n'
        f'[sampling]\npath = "{tmp_path / "samples.sqlite"}"\n'
    )


def assignment(assignment_id: int, version: str, sha: str) -> bytes:
    return ModelAssignment(DEVICE, assignment_id, version, sha, utc_iso(time.time())).to_json()


def events(sub: Collector) -> list[ModelEvent]:
    return [ModelEvent.from_json(p) for p in sub.payloads("/model_event")]


def has_event(sub: Collector, event: str, version: str, assignment_id: int) -> ModelEvent | None:
    return next(
        (e for e in events(sub) if (e.event, e.version, e.assignment_id) == (event, version, assignment_id)), None
    )


def status(sub: Collector) -> DeviceStatus | None:
    raw = sub.last(status_topic(DEVICE))
    return DeviceStatus.from_json(raw) if raw else None


def test_roll_out_without_a_gap_then_roll_back_a_set_that_finds_nothing(
    broker: Broker,
    tmp_path: Path,
    rack_video,  # noqa: F811
    set_server: SetServer,
    sets,
) -> None:
    video, rois = rack_video
    v2 = set_server.add(sets["v2"], "v2")
    blind = set_server.add(sets["blind"], "blind")
    sub = Collector(broker.host, broker.port)
    extra = link_config(tmp_path, set_server) + "[rollout]\nobserve_s = 60\nmin_windows = 8\n"
    proc = start(write_config(tmp_path, broker.port, video, rois, extra=extra))
    try:
        wait_for(lambda: len(sub.scores()) >= 4 or proc.poll() is not None, 60, what="windows of the shipped models")
        sub.client.publish(model_topic(DEVICE), assignment(1, "v2", v2), qos=1, retain=True)
        wait_for(lambda: has_event(sub, "active", "v2", 1), 60, what="v2 active")
        assert [e.event for e in events(sub) if e.assignment_id == 1] == ["downloading", "active"]
        wait_for(lambda: (s := status(sub)) and s.model_version == "v2", 15, what="status model_version v2")
        # The old version's rates before the next switch: enough v2 windows with faces.
        wait_for(lambda: sum(w.model_version == "v2" for w in sub.scores()) >= 16, 60, what="v2 windows")
        sub.client.publish(model_topic(DEVICE), assignment(2, "blind", blind), qos=1, retain=True)
        wait_for(lambda: has_event(sub, "active", "blind", 2), 60, what="blind active")
        back = wait_for(lambda: has_event(sub, "rolled_back", "blind", 2), 60, what="blind rolled back")
        assert back.active_version == "v2" and back.previous_version == "blind"
        assert "face visible in 0%" in back.reason and "collapse_fraction = 0.5" in back.reason
        wait_for(lambda: (s := status(sub)) and s.model_version == "v2", 15, what="status back on v2")
        seen = len(sub.scores())
        wait_for(lambda: len(sub.scores()) >= seen + 4, 30, what="windows after the rollback")
        assert proc.poll() is None
    finally:
        code = finish(proc)
    assert code == 0, (tmp_path / "device.log").read_text()
    windows = sorted({w.seq: w for w in sub.scores()}.values(), key=lambda w: w.seq)
    assert [w.seq for w in windows] == list(range(1, windows[-1].seq + 1))  # never stopped publishing
    versions = [w.model_version for w in windows]
    runs = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert runs == ["", "v2", "blind", "v2"]
    assert all(w.score is None for w in windows if w.model_version == "blind")
    assert any(w.score is not None for w in windows if w.model_version == "v2")
    state = json.loads((tmp_path / "model-sets" / "state.json").read_text())
    assert state["active_version"] == "v2" and state["rolled_back"] == [2]
    sub.close()


def test_an_offline_device_picks_up_its_assignment_and_keeps_it_across_restarts(
    broker: Broker,
    tmp_path: Path,
    rack_video,  # noqa: F811
    set_server: SetServer,
    sets,
) -> None:
    video, rois = rack_video
    v2 = set_server.add(sets["v2"], "v2")
    sub = Collector(broker.host, broker.port)
    sub.client.publish(model_topic(DEVICE), assignment(7, "v2", v2), qos=1, retain=True)  # while the device is off
    extra = link_config(tmp_path, set_server) + "[rollout]\nmin_windows = 8\n"
    config = write_config(tmp_path, broker.port, video, rois, extra=extra)
    proc = start(config)
    try:
        wait_for(lambda: has_event(sub, "active", "v2", 7), 60, what="the retained assignment followed")
        wait_for(lambda: any(w.model_version == "v2" for w in sub.scores()), 30, what="a v2 window")
    finally:
        assert finish(proc) == 0
    downloads = len(set_server.requests)
    assert downloads >= 5 and "v2/selftest.npz" in set_server.requests

    sub.messages.clear()
    proc = start(config)  # a restart: the stored set scores at once, nothing is downloaded again
    try:
        first = wait_for(lambda: status(sub), 30, what="the first status")
        assert first.model_version == "v2"
        again = wait_for(lambda: has_event(sub, "active", "v2", 7), 30, what="the assignment confirmed")
        assert again.reason == "already running this version"
    finally:
        assert finish(proc) == 0
    assert len(set_server.requests) == downloads

    stored = tmp_path / "model-sets" / "v2" / "seg_fine.int8.onnx"
    stored.write_bytes(stored.read_bytes()[:1000])  # a corrupt store: shipped models, then heal
    sub.messages.clear()
    proc = start(config)
    try:
        failed = wait_for(lambda: has_event(sub, "failed", "v2", 7), 30, what="the corrupt store reported")
        assert "seg_fine.int8.onnx" in failed.reason and "running the shipped models" in failed.reason
        wait_for(lambda: has_event(sub, "active", "v2", 7), 60, what="v2 downloaded again")
        wait_for(lambda: (s := status(sub)) and s.model_version == "v2", 15, what="status v2 again")
    finally:
        assert finish(proc) == 0
    assert set_server.requests[downloads:] == ["v2/manifest.json", "v2/seg_fine.int8.onnx"]  # only what was bad
    sub.close()


def manager(tmp_path: Path, server: SetServer, **rollout) -> tuple[RolloutManager, list[ModelEvent]]:
    token = tmp_path / "server-token"
    token.write_text(TOKEN)
    link = ServerLinkConfig(url=f"http://127.0.0.1:{server.port}", token_file=token, timeout_s=5)
    m = RolloutManager(
        DEVICE,
        "mgs",
        RolloutConfig(retry_s=1, **rollout),
        link,
        tmp_path / "store",
        REPO / "models",
        lambda folder: load_models(folder, "int8"),
    )
    got: list[ModelEvent] = []
    m.attach(lambda topic, payload: got.append(ModelEvent.from_json(payload)))
    return m, got


def test_a_tampered_download_fails_and_the_old_models_keep_scoring(tmp_path: Path, set_server: SetServer, sets) -> None:
    sha = set_server.add(sets["v2"], "v2")
    served = set_server.root / "v2" / "eye.int8.onnx"
    served.write_bytes(served.read_bytes()[:-10] + b"0123456789")
    m, got = manager(tmp_path, set_server)
    shipped = m.initial_models()
    m.start()
    try:
        m.on_assignment(assignment(3, "v2", sha))
        failed = wait_for(lambda: next((e for e in got if e.event == "failed"), None), 30, what="failed")
        assert "eye.int8.onnx" in failed.reason and "sha256" in failed.reason
        assert "previous models keep scoring" in failed.reason and failed.active_version == ""
        assert m.take_swap(shipped) is None and m.active_version == ""
        m.on_assignment(assignment(4, "v2", "0" * 64))  # a manifest that is not the assigned one
        wrong = wait_for(lambda: next((e for e in got if e.event == "failed" and e.assignment_id == 4), None), 30)
        assert "manifest.json" in wrong.reason
        raw = json.loads((set_server.root / "v2" / MANIFEST_NAME).read_text())
        raw["models"][0]["file"] = "../escape.onnx"  # a manifest that would write outside the store
        (set_server.root / "v2" / MANIFEST_NAME).write_text(json.dumps(raw))
        sha = sha256_bytes((set_server.root / "v2" / MANIFEST_NAME).read_bytes())
        m.on_assignment(assignment(5, "v2", sha))
        unsafe = wait_for(lambda: next((e for e in got if e.event == "failed" and e.assignment_id == 5), None), 30)
        assert "'../escape.onnx'" in unsafe.reason and not (tmp_path / "store" / "escape.onnx").exists()
    finally:
        m.stop()


def test_unreachable_server_is_retried_and_a_withdrawal_goes_back_to_shipped(
    tmp_path: Path, set_server: SetServer, sets
) -> None:
    sha = set_server.add(sets["v2"], "v2")
    m, got = manager(tmp_path, set_server, observe_s=1)  # nothing scores here: no baseline to wait for
    m.server = ServerLinkConfig(url=f"http://127.0.0.1:{free_port()}", token_file=m.server.token_file, timeout_s=2)
    shipped = m.initial_models()
    m.start()
    try:
        m.on_assignment(assignment(5, "v2", sha))
        waiting = wait_for(lambda: next((e for e in got if "trying again" in e.reason), None), 30, what="retry")
        assert waiting.event == "downloading"
        m.server = ServerLinkConfig(url=f"http://127.0.0.1:{set_server.port}", token_file=m.server.token_file)
        swap = wait_for(lambda: m.take_swap(shipped), 60, what="the set handed to the frame loop")
        assert swap.version == "v2" and got[-1].event == "active" and m.active_version == "v2"
        assert ModelStore(tmp_path / "store").load_state().active_version == "v2"
        m.on_assignment(ModelAssignment(DEVICE, 6, "", "", utc_iso(time.time())).to_json())
        back = wait_for(lambda: m.take_swap(swap.models), 30, what="the shipped models handed back")
        assert back.version == "" and got[-1].event == "active" and got[-1].previous_version == "v2"
        assert ModelStore(tmp_path / "store").load_state().active_version == ""
    finally:
        m.stop()


def test_a_device_that_just_started_scores_a_baseline_before_it_switches(
    tmp_path: Path, set_server: SetServer, sets, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="device.rollout")
    sha = set_server.add(sets["v2"], "v2")
    m, got = manager(tmp_path, set_server, min_windows=4)
    shipped = m.initial_models()
    m.start()
    try:
        m.on_assignment(assignment(8, "v2", sha))  # found retained at start: no window of the old models yet

        def held() -> bool:
            assert m.take_swap(shipped) is None  # checked or not, it does not switch yet
            return "model set v2 is ready" in caplog.text

        wait_for(held, 60, what="the set checked and held")
        assert m.take_swap(shipped) is None and m.active_version == "" and got[-1].event == "downloading"
        m.observe([_window(b) for b in range(4)], "")
        swap = m.take_swap(shipped)
        assert swap is not None and swap.version == "v2" and got[-1].event == "active"
        m.observe([_window(b) for b in range(4)], "v2")
        assert "not watched" not in caplog.text  # the new version is judged against those windows
    finally:
        m.stop()


def _window(box: int) -> BoxWindow:
    return BoxWindow(box, 10.0, 11.0, 5, 2, 3.0, 3.0, 3.5, 1.0)


def _frame(t: float, eyes: int) -> FrameResult:
    eye = EyeScore(x=1.0, y=1.0, score=3.0)
    return FrameResult(frame_index=0, capture_time=t, boxes=(BoxResult(box=0, eyes=(eye,) * eyes),))


def test_a_split_window_closes_at_the_switch_and_the_rest_of_its_period_follows() -> None:
    agg = WindowAggregator([0], 1.0)
    assert agg.add(_frame(10.1, 1)) == [] and agg.add(_frame(10.3, 1)) == []
    before = agg.split(10.5)
    assert [(w.start, w.end, w.frames) for w in before] == [(10.0, 10.5, 2)]
    agg.add(_frame(10.5, 0))
    after = agg.add(_frame(11.2, 1))
    assert [(w.start, w.end, w.frames, w.score) for w in after] == [(10.5, 11.0, 1, None)]
    assert [(w.start, w.end) for w in agg.flush()] == [(11.0, 12.0)]
    assert agg.split(12.5) == []  # nothing open: nothing to close
