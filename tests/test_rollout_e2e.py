"""A model roll-out with every part real: the shipped Mosquitto config and ACL, `mgs-server run`, a
device provisioned with `mgs-server provision-device` and run as `mgs-device run` scoring a generated
rack video, and model sets made by `mgs-export package` from the shipped models.

What a facility relies on: an admin uploads a set on the Models page and assigns it; the device
runs it within seconds and never stops publishing (the server's seq has no gap, every box's windows
follow each other through the switch); a corrupted upload is refused with what is wrong; a set that
loads but finds nothing is rolled back and the dashboard says so and why; a device that was off
during a roll-out picks its assignment up when it comes back; a withdrawal brings back the shipped
models.

The sets hold only the INT8 networks, which are what a device runs. They are posted in one request,
so this server takes request bodies up to `UPLOAD_KB` (`[http] max_request_kb`, 1 MiB by default):
the Models page sends a set in pieces under the default limit, which tests/test_chunked_upload*.py
cover.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomlkit

from mgs_core.manifest import MANIFEST_NAME
from server.provision import PASSWORD_FILE_NAME, TOKEN_FILE_NAME
from tests.conftest import MOSQUITTO, wait_for
from tests.fault_support import ServerProcess, ShippedBroker
from tests.test_device_run import finish, outbox_rows, rack_video, start  # noqa: F401
from tests.test_package import REPO, blind_models, models_copy
from tests.test_rollout_server_processes import UPLOAD_KB, Web
from tests.web_support import PASSWORD

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

DEVICE = "rack1"


def int8_only(folder: Path) -> Path:
    """Drop the FP32 networks from a models folder: the set holds what a device runs."""
    path = folder / MANIFEST_NAME
    raw = json.loads(path.read_text())
    for record in raw["models"]:
        if record["precision"] != "int8":
            (folder / record["file"]).unlink()
    raw["models"] = [r for r in raw["models"] if r["precision"] == "int8"]
    path.write_text(json.dumps(raw, indent=2))
    return folder


def mgs_export_package(models: Path, out: Path, version: str, evaluate: Path | None = None) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "export.cli", "package", "--models", str(models), "--out", str(out)]
        + ["--version", version, "--selftest-frames", "2"]
        + (["--evaluate", str(evaluate)] if evaluate else []),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr
    return out


def corrupted(archive: Path, out: Path, member: str) -> Path:
    """The same set with one byte of one network changed (a broken copy or a tampered file)."""
    with tarfile.open(archive) as src, tarfile.open(out, "w:gz") as dst:
        for info in src.getmembers():
            data = src.extractfile(info).read()  # type: ignore[union-attr]
            if info.name == member:
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            dst.addfile(info, io.BytesIO(data))
    return out


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v2 and v3: the shipped INT8 networks packaged as new versions; blind: loads, finds no animal."""
    root = tmp_path_factory.mktemp("sets")
    shipped = int8_only(models_copy(root / "models"))
    blind = int8_only(blind_models(root / "blind-models"))
    # The report's shape as `mgs-export evaluate` writes it (running it takes minutes).
    report = root / "evaluate.json"
    report.write_text(
        json.dumps(
            {
                "frames": 40,
                "detection": {"fast": {"precision": 0.91, "recall": 0.83}},
                "end_to_end": {"fast": {"mae": 0.71}},
                "facility_labels": {"mae": 0.64},
            }
        )
    )
    out = {
        "v2": mgs_export_package(shipped, root / "v2.tar.gz", "v2", evaluate=report),
        "v3": mgs_export_package(shipped, root / "v3.tar.gz", "v3"),
    }
    out["blind"] = mgs_export_package(blind, root / "blind.tar.gz", "blind")
    out["corrupt"] = corrupted(out["v2"], root / "corrupt.tar.gz", "seg_fine.int8.onnx")
    return out


@dataclass
class Rig:
    broker: ShippedBroker
    server: ServerProcess
    web: Web
    device_config: Path

    def rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        return self.server.query(sql, params)

    def model_version(self) -> str | None:
        rows = self.rows("SELECT model_version FROM devices WHERE name = ?", (DEVICE,))
        return rows[0][0] if rows else None

    def windows(self, version: str | None = None) -> int:
        sql = "SELECT COUNT(*) FROM score_windows WHERE device = ?"
        params: tuple = (DEVICE,)
        if version is not None:
            sql, params = sql + " AND model_version = ?", (DEVICE, version)
        rows = self.rows(sql, params)
        return rows[0][0] if rows else 0

    def event(self, version: str, event: str) -> tuple | None:
        rows = self.rows(
            "SELECT assignment_id, active_version, previous_version, reason FROM model_events "
            "WHERE device = ? AND version = ? AND event = ? ORDER BY id DESC LIMIT 1",
            (DEVICE, version, event),
        )
        return rows[0] if rows else None

    def assign(self, version: str) -> None:
        status, page = self.web.request("POST", "/models/assign", form={"version": version, "device": [DEVICE]})
        what = f"version {version}" if version else "the shipped models (withdrawal)"
        assert status == 200 and f"{what} sent to {DEVICE}" in page, page

    def upload(self, archive: Path) -> tuple[int, str]:
        status, body = self.web.request("POST", "/models", files={"set": archive})
        return status, json.loads(body)["message"]


def provision(tmp_path: Path, broker: ShippedBroker, server: ServerProcess, url: str, video: Path, rois: list) -> Path:
    """`mgs-server provision-device` as an admin runs it, then what the person installing the box
    does: install the files (here: point at them where they are), find the boxes and set the camera."""
    out = tmp_path / "provisioned"
    done = subprocess.run(
        [sys.executable, "-m", "server.cli", "provision-device", DEVICE, "--broker-host", "127.0.0.1"]
        + ["--broker-port", str(broker.port), "--out", str(out), "--server-config", str(server.config)]
        + ["--server-url", url, "--camera", str(video)]
        + ["--password-file", str(broker.files.password_file), "--acl-file", str(broker.files.acl_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config = out / "device.toml"
    doc = tomlkit.parse(config.read_text())
    assert doc["server"]["url"] == url  # type: ignore[index]
    doc["target_fps"] = 5
    doc["mqtt"]["password_file"] = str(out / PASSWORD_FILE_NAME)  # type: ignore[index]
    doc["mqtt"]["reconnect_max_s"] = 1  # type: ignore[index]
    doc["server"]["token_file"] = str(out / TOKEN_FILE_NAME)  # type: ignore[index]
    doc["camera"]["loop"] = True  # type: ignore[index]
    doc["rois"]["boxes"] = rois  # type: ignore[index]
    doc["outbox"]["path"] = str(out / "outbox.sqlite")  # type: ignore[index]
    doc["status"] = {"interval_s": 1}
    doc["http"] = {"enabled": False}
    doc["sampling"] = {"path": str(out / "samples.sqlite")}
    # Watch a new version over a few dozen windows, not ten minutes of them.
    doc["rollout"] = {"observe_s": 60, "min_windows": 8, "retry_s": 1}
    config.write_text(tomlkit.dumps(doc))
    return config


@pytest.fixture
def rig(tmp_path: Path, rack_video) -> Iterator[Rig]:  # noqa: F811
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed")
    video, rois = rack_video
    broker = ShippedBroker(tmp_path, devices=())
    server = ServerProcess(tmp_path, broker, max_request_kb=UPLOAD_KB)
    server.create_user("ada", "admin", PASSWORD)
    port = re.search(r"port = (\d+)", server.config.read_text().split("[http]")[1]).group(1)  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}"
    config = provision(tmp_path, broker, server, url, video, rois)
    broker.start()
    try:
        server.start()
        yield Rig(broker, server, Web(url, "ada"), config)
    finally:
        server.stop()
        broker.stop()


def test_upload_roll_out_roll_back_and_an_offline_device_catches_up(rig: Rig, sets: dict[str, Path]) -> None:
    status, message = rig.upload(sets["corrupt"])
    assert status == 400 and message.startswith("Refused: ") and "seg_fine.int8.onnx: sha256 " in message
    for name in ("v2", "blind", "v3"):
        status, message = rig.upload(sets[name])
        assert status == 201 and f"Version {name} registered" in message, message
    models = rig.web.request("GET", "/models")[1]
    head = "".join(f"<th>{f}</th>" for f in ("heldout_mae", "eye_recall", "eye_precision", "facility_label_mae"))
    assert f"<th>Version</th>{head}" in models  # the figures `package` wrote, first, in their order
    v2_row = re.search(r'<tr data-version="v2">.*?</tr>', models, re.S)
    assert v2_row is not None and all(f"<td>{x}</td>" in v2_row.group(0) for x in ("0.710", "0.830", "0.910", "0.640"))

    device = start(rig.device_config)
    log = rig.device_config.parent / "device.log"
    try:
        wait_for(lambda: rig.windows("") >= 8 or device.poll() is not None, 60, what="windows of the shipped models")
        assert device.poll() is None, log.read_text()[-3000:]

        rig.assign("v2")
        wait_for(lambda: rig.model_version() == "v2", 30, 0.1, what="the device's status to say v2")
        wait_for(lambda: rig.windows("v2") >= 4, 30, 0.1, what="windows scored by v2 at the server")
        active = rig.event("v2", "active")
        assert active is not None and active[1:3] == ("v2", "")
        row = re.search(rf'<tr data-device="{DEVICE}">.*?</tr>', rig.web.request("GET", "/devices")[1], re.S)
        assert row is not None and "model v2; assigned v2: active" in row.group(0)

        # The old version's rates are the baseline of the next watch: enough v2 windows first.
        wait_for(lambda: rig.windows("v2") >= 16, 60, 0.1, what="v2 windows before the next switch")
        rig.assign("blind")
        back = wait_for(lambda: rig.event("blind", "rolled_back"), 90, 0.2, what="the blind set rolled back")
        _, now_active, previous, reason = back  # type: ignore[misc]
        assert (now_active, previous) == ("v2", "blind") and "face visible in 0%" in reason
        wait_for(lambda: rig.model_version() == "v2", 30, 0.1, what="the status back on v2")
        devices = rig.web.request("GET", "/devices")[1]
        assert f"rolled back to v2: {reason}" in devices
        overview = rig.web.request("GET", "/")[1]
        assert "model-notice" in overview and f"rolled back to v2: {reason}" in overview
        after = rig.windows("v2")
        wait_for(lambda: rig.windows("v2") >= after + 4, 30, 0.1, what="v2 windows after the rollback")
        assert device.poll() is None
    finally:
        code = finish(device)
    assert code == 0, log.read_text()[-3000:]

    rig.assign("v3")  # the device is off: the assignment waits, retained, at the broker

    def waiting() -> bool:
        row = re.search(rf'<tr data-device="{DEVICE}".*?</tr>', rig.web.request("GET", "/models")[1], re.S)
        return row is not None and "assigned, waiting for the device" in row.group(0)

    wait_for(waiting, 15, 0.2, what="the Models page to say v3 waits for the device")
    seen_shipped = rig.windows("")
    device = start(rig.device_config)
    try:
        wait_for(lambda: rig.model_version() == "v3", 60, 0.1, what="the restarted device to run v3")
        wait_for(lambda: rig.windows("v3") >= 4, 30, 0.1, what="windows scored by v3 at the server")
        v3_row = re.search(r'<tr data-version="v3">.*?</tr>', rig.web.request("GET", "/models")[1], re.S)
        assert v3_row is not None and f"<td>{DEVICE}</td>" in v3_row.group(0)  # devices running it

        rig.assign("")  # withdrawn: back to the models shipped on the device
        wait_for(lambda: rig.model_version() == "", 30, 0.1, what="the device back on its shipped models")
        wait_for(lambda: rig.windows("") >= seen_shipped + 4, 30, 0.1, what="windows of the shipped models again")
        row = re.search(rf'<tr data-device="{DEVICE}">.*?</tr>', rig.web.request("GET", "/devices")[1], re.S)
        assert row is not None and "model shipped; assigned shipped models: active" in row.group(0)
    finally:
        code = finish(device)
    assert code == 0, log.read_text()[-3000:]
    assert "not watched" not in log.read_text()  # v3, picked up at start, was judged against v2's windows

    versions = [
        v for (v,) in rig.rows("SELECT model_version FROM score_windows WHERE device = ? ORDER BY seq", (DEVICE,))
    ]
    runs = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
    assert runs == ["", "v2", "blind", "v2", "v3", ""]
    epochs = rig.rows("SELECT DISTINCT epoch FROM score_windows WHERE device = ?", (DEVICE,))
    assert len(epochs) == 1
    assert outbox_rows(rig.device_config.parent) == 0  # every window the device made is at the server
    seqs = [s for (s,) in rig.rows("SELECT seq FROM score_windows WHERE device = ? ORDER BY seq", (DEVICE,))]
    assert seqs == list(range(1, len(seqs) + 1))  # never stopped publishing: no seq missing, none twice
    for box in range(4):
        spans = rig.rows(
            "SELECT window_start, window_end, model_version FROM score_windows WHERE device = ? AND box = ? "
            "ORDER BY seq",
            (DEVICE, box),
        )
        switches = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if a[2] != b[2]]
        assert len(switches) == 5
        # At every switch the old version's last window ends where the new one's first begins: no time unscored.
        assert all(a[1] == b[0] for a, b in switches), switches
