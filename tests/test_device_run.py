"""`mgs-device run` as a real process: real models, a generated rack video, a real Mosquitto.

What a facility sees: valid windows on the contract's topics, a clean SIGTERM, seq continuing after
SIGKILL with the outbox drained, and one clear line (exit 2, no traceback) for a bad config, a
missing model or a camera that is gone.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from mgs_core.messages import DeviceStatus, availability_topic, status_topic
from tests.conftest import Broker, free_port, wait_for
from tests.ingest_support import running_worker
from tests.test_publisher import Collector

REPO = Path(__file__).resolve().parents[1]
DEVICE = "rack-t"


@pytest.fixture(scope="module")
def rack_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[list[int]]]:
    """A 3 s generated rack video (10 fps) and its four boxes from the truth sidecar."""
    out = tmp_path_factory.mktemp("video") / "rack.mp4"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "export.cli",
            "synth-video",
            "--seconds",
            "3",
            "--fps",
            "10",
            "--out",
            str(out),
            "--seed",
            "5",
            "--trajectory",
            "demo",
            "--quiet",
        ],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    header = json.loads(Path(f"{out}.truth.jsonl").read_text().splitlines()[0])
    return out, header["rois"]


def write_config(
    tmp_path: Path,
    port: int,
    video: Path,
    rois,
    extra: str = "",
    camera: str = "",
    http_port: int = 0,
    name: str = DEVICE,
) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(
        f'name = "{name}"\ntarget_fps = 5\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nreconnect_max_s = 1\n'
        f"[camera]\n{camera or f'source = {json.dumps(str(video))}' + chr(10) + 'loop = true'}\n"
        f"[rois]\nboxes = {json.dumps(rois)}\n"
        f'[outbox]\npath = "{tmp_path / "outbox.sqlite"}"\n'
        f"[status]\ninterval_s = 1\n"
        f'[http]\nenabled = {"true" if http_port else "false"}\nhost = "127.0.0.1"\nport = {http_port}\n' + extra
    )
    return path


def start(config: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    log = open(config.parent / "device.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "device.cli", "run", "--config", str(config), *args],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )


def finish(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=timeout)


def run_to_end(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", "run", "--config", str(config), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def outbox_rows(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        try:
            return db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def test_scores_status_local_view_and_clean_sigterm(broker: Broker, tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    sub = Collector(broker.host, broker.port)
    http = free_port()
    with running_worker(broker, tmp_path / "server.db"):  # the device deletes only what the server stored
        proc = start(write_config(tmp_path, broker.port, video, rois, http_port=http))
        try:
            wait_for(lambda: len(sub.payloads("/score")) >= 8 or proc.poll() is not None, 60, what="8 score windows")
            assert proc.poll() is None, (tmp_path / "device.log").read_text()
            windows = sub.scores()
            assert {w.box for w in windows} == {0, 1, 2, 3}
            assert all(w.device == DEVICE and w.frames > 0 for w in windows)
            assert all((w.score is None) == (w.valid_eyes == 0) for w in windows)
            wait_for(lambda: sub.last(status_topic(DEVICE)), 10, what="status")
            status = DeviceStatus.from_json(sub.last(status_topic(DEVICE)))
            assert status.backend == "local" and status.target_fps == 5 and status.boxes == 4
            assert status.models["model_set"] == windows[0].model_sha256
            assert set(status.models) >= {"seg_coarse", "seg_fine", "eye"}
            assert sub.last(availability_topic(DEVICE)) == b"online"

            health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/health", timeout=5).read())
            assert health["camera"] == "ok" and health["model_sha256"] == windows[0].model_sha256
            assert len(health["boxes"]) == 4 and health["boxes"][2]["roi"] == rois[2]
            assert health["frames_scored"] > 0 and "last_seq" in health
            jpeg = urllib.request.urlopen(f"http://127.0.0.1:{http}/preview.jpg", timeout=5).read()
            picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            assert picture is not None and picture.shape[1] == 960
            page = urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=5).read().decode()
            assert "preview.jpg" in page and "http" not in page.split("<script>")[1].split("</script>")[0]
        finally:
            code = finish(proc)
    assert code == 0, (tmp_path / "device.log").read_text()
    wait_for(lambda: sub.last(availability_topic(DEVICE)) == b"offline", 10, what="'offline' after SIGTERM")
    seqs = sorted({w.seq for w in sub.scores()})
    assert seqs == list(range(1, len(seqs) + 1))  # the windows flushed at shutdown were delivered too
    assert outbox_rows(tmp_path) == 0
    sub.close()


def test_sigkill_and_restart_continue_seq_and_drain_the_outbox(tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    broker = Broker(tmp_path)  # down during the first run: everything stays in the outbox
    config = write_config(tmp_path, broker.port, video, rois)
    proc = start(config)
    try:
        wait_for(lambda: outbox_rows(tmp_path) >= 8 or proc.poll() is not None, 60, what="windows queued in the outbox")
        assert proc.poll() is None, (tmp_path / "device.log").read_text()
    finally:
        proc.kill()  # SIGKILL: no flush, no goodbye
        proc.wait(timeout=10)
    with sqlite3.connect(tmp_path / "outbox.sqlite") as db:
        queued = [r[0] for r in db.execute("SELECT seq FROM outbox ORDER BY seq")]
    assert queued == list(range(1, len(queued) + 1))
    broker.start()
    sub = Collector(broker.host, broker.port)
    with running_worker(broker, tmp_path / "server.db"):
        proc = start(config)
        try:
            wait_for(
                lambda: max((w.seq for w in sub.scores()), default=0) > len(queued) + 4,
                60,
                what="new windows after the restart",
            )
            wait_for(lambda: set(queued) <= {w.seq for w in sub.scores()}, 30, what="the old outbox to drain")
        finally:
            assert finish(proc) == 0
            broker.stop()
    seqs = sorted({w.seq for w in sub.scores()})
    assert seqs == list(range(1, seqs[-1] + 1))  # strictly increasing across the kill, no gap, nothing lost
    assert outbox_rows(tmp_path) == 0
    sub.close()


def test_last_will_says_offline_when_the_device_is_killed(broker: Broker, tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    sub = Collector(broker.host, broker.port)
    config = write_config(tmp_path, broker.port, video, rois)
    config.write_text(config.read_text().replace("reconnect_max_s = 1\n", "reconnect_max_s = 1\nkeepalive = 5\n"))
    proc = start(config)
    try:
        wait_for(lambda: sub.last(availability_topic(DEVICE)) == b"online", 30, what="online")
    finally:
        proc.kill()  # no DISCONNECT, no 'offline' from the device itself
        proc.wait(timeout=10)
    wait_for(lambda: sub.last(availability_topic(DEVICE)) == b"offline", 20, what="the broker's last will 'offline'")
    sub.close()


def test_video_that_ends_stops_with_success_after_flushing(broker: Broker, tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    sub = Collector(broker.host, broker.port)
    config = write_config(tmp_path, broker.port, video, rois, camera=f"source = {json.dumps(str(video))}\nloop = false")
    done = run_to_end(config)
    assert done.returncode == 0, done.stderr
    assert "ended" in done.stderr
    wait_for(lambda: len(sub.payloads("/score")) >= 4, 10, what="windows of a short video")
    assert sum(w.frames for w in sub.scores() if w.box == 0) >= 10  # every frame scored landed in some window
    sub.close()


@pytest.mark.parametrize(
    "extra, words",
    [
        ("[alerts]\nthreshold = 12\n", "'alerts.threshold' = 12.0"),
        ('[mqtt.tls]\nenabled = true\nca = "/nonexistent/ca.pem"\n', "'mqtt.tls.ca'"),
        ("[outbox]\nmax_message = 5\n", "unknown key 'outbox.max_message'"),
    ],
)
def test_bad_config_gives_one_line_and_exit_2(tmp_path: Path, rack_video, extra: str, words: str) -> None:
    video, rois = rack_video
    config = write_config(tmp_path, 1, video, rois)
    text = config.read_text()
    if extra.startswith("[outbox]"):
        text = text.replace("[outbox]\n", "[outbox]\nmax_message = 5\n")
    else:
        text += extra
    config.write_text(text)
    done = run_to_end(config)
    assert done.returncode == 2
    assert words in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0


def test_bad_device_name_and_missing_boxes(tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    done = run_to_end(write_config(tmp_path, 1, video, rois, name="rack 1/a"))
    assert done.returncode == 2 and "'name' = 'rack 1/a'" in done.stderr and "Traceback" not in done.stderr
    done = run_to_end(write_config(tmp_path, 1, video, []))
    assert done.returncode == 2 and "detect-boxes" in done.stderr
    done = run_to_end(write_config(tmp_path, free_port(), video, [[1800, 900, 435, 607]]))  # off a 1920x1080 frame
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "1800" in done.stderr.strip().splitlines()[-1]


def test_missing_or_corrupt_model_names_the_file(tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    models = tmp_path / "models"
    shutil.copytree(REPO / "models", models, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    victim = sorted(models.glob("seg_fine.*.onnx"))[0]
    config = write_config(
        tmp_path,
        1,
        video,
        rois,
        extra=f'[models]\ndir = "{models}"\n[backend]\nprecision = "{victim.name.split(".")[1]}"\n',
    )
    victim.unlink()
    done = run_to_end(config)
    assert done.returncode == 2 and victim.name in done.stderr and "Traceback" not in done.stderr
    victim.write_bytes(b"\0" * 1000)
    done = run_to_end(config)
    assert done.returncode == 2 and victim.name in done.stderr and "Traceback" not in done.stderr


def test_local_page_port_in_use_is_a_clear_error(tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = run_to_end(write_config(tmp_path, free_port(), video, rois, http_port=taken.getsockname()[1]))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "[http] port" in done.stderr.strip().splitlines()[-1]


def test_missing_video_file_is_a_config_error(tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    config = write_config(tmp_path, 1, video, rois, camera='source = "/nonexistent/rack.mp4"\nkind = "file"')
    done = run_to_end(config)
    assert done.returncode == 2 and "/nonexistent/rack.mp4" in done.stderr and "Traceback" not in done.stderr


def test_absent_camera_reconnects_and_says_so_then_gives_up_when_told(
    broker: Broker, tmp_path: Path, rack_video
) -> None:
    video, rois = rack_video
    sub = Collector(broker.host, broker.port)
    camera = 'source = "9"\nreconnect_initial_s = 0.2\nreconnect_max_s = 0.5'
    proc = start(write_config(tmp_path, broker.port, video, rois, camera=camera))
    try:

        def reconnecting():
            raw = sub.last(status_topic(DEVICE))
            return raw and DeviceStatus.from_json(raw).camera == "reconnecting"

        wait_for(reconnecting, 30, what="status camera=reconnecting")
        status = DeviceStatus.from_json(sub.last(status_topic(DEVICE)))
        assert "camera index 9" in status.message
        assert proc.poll() is None  # a camera that is gone is waited for, not a crash
    finally:
        assert finish(proc) == 0
    sub.close()
    done = run_to_end(write_config(tmp_path, broker.port, video, rois, camera=camera + "\nreconnect_attempts = 2"))
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "camera failed" in last and "camera index 9" in last and "Traceback" not in done.stderr


def test_systemd_ready_watchdog_and_stopping(tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(30)
    config = write_config(tmp_path, free_port(), video, rois)
    proc = start(config, "--max-seconds", "4", env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "1000000"})
    got: list[str] = []
    try:
        while "STOPPING=1" not in got:
            got.append(sock.recv(256).decode())
    finally:
        sock.close()
        assert proc.wait(timeout=30) == 0
    assert got[0] == "READY=1"
    assert got.count("WATCHDOG=1") >= 3  # every half period for 4 s


def test_example_config_is_valid_and_every_runtime_key_is_documented() -> None:
    from device.config import DeviceConfig, load_device_config
    from mgs_core.tomlconfig import describe

    config = load_device_config(REPO / "device.example.toml")
    assert config.name == "rack-01" and len(config.rois.boxes) == 4
    docs = (REPO / "docs" / "device.md").read_text()
    runtime = ("name", "target_fps", "mqtt.", "models.", "aggregation.", "alerts.", "outbox.", "status.", "http.")
    keys = [key for key, *_ in describe(DeviceConfig) if key.startswith(runtime)]
    assert len(keys) > 25
    assert [k for k in keys if f"`{k}`" not in docs] == []


def test_offload_to_a_gpu_host_and_back_never_stops_the_windows(broker: Broker, tmp_path: Path, rack_video) -> None:
    video, rois = rack_video
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    host_log = open(tmp_path / "gpu-host.log", "ab")
    host = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "device.cli",
            "gpu-host",
            "--bind",
            endpoint,
            "--providers",
            "cpu",
            "--threads",
            "1",
            "--precision",
            "int8",
        ],
        cwd=REPO,
        stdout=host_log,
        stderr=subprocess.STDOUT,
    )
    sub = Collector(broker.host, broker.port)
    # A target no CPU reaches, so the device offloads after 1 s of measuring.
    extra = f'[offload]\nhost = "{endpoint}"\nswitch_after_s = 1\ntimeout_s = 2\nretry_after_s = 600\n'
    config = write_config(tmp_path, broker.port, video, rois, extra=extra)
    config.write_text(config.read_text().replace("target_fps = 5", "target_fps = 100"))
    proc = start(config)

    def status() -> DeviceStatus | None:
        raw = sub.last(status_topic(DEVICE))
        return DeviceStatus.from_json(raw) if raw else None

    try:
        wait_for(lambda: (s := status()) and s.backend == "offload", 60, what="status backend=offload")
        assert "offloading to" in status().message
        before = len(sub.payloads("/score"))
        host.kill()  # the GPU host dies: the device scores locally again and keeps publishing
        host.wait(timeout=10)
        wait_for(
            lambda: (s := status()) and s.backend == "local" and "offload host failed" in s.message,
            60,
            what="status back to local after the host died",
        )
        wait_for(lambda: len(sub.payloads("/score")) >= before + 8, 30, what="windows after the fallback")
        assert proc.poll() is None
    finally:
        if host.poll() is None:
            host.kill()
        code = finish(proc)
    assert code == 0, (tmp_path / "device.log").read_text()
    seqs = sorted({w.seq for w in sub.scores()})
    assert seqs == list(range(1, seqs[-1] + 1))
    sub.close()
