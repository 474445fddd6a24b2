"""A roll-out through real processes: the shipped Mosquitto config and ACL, `mgs-server run`, and
paho clients logged in as devices. Upload on the Models page, assign, the device receives the
retained assignment (also one that was offline when it was made), downloads with its token, and
its rolled_back event shows on the Devices page and as the officers' notice on the overview; a
broker that lost its retained messages is told every assignment again."""

from __future__ import annotations

import http.cookiejar
import json
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from mgs_core.manifest import sha256_bytes
from mgs_core.messages import ModelAssignment, ModelEvent, model_event_topic, model_topic, status_topic, utc_iso
from server.auth import create_device_token
from server.db import connect
from tests.conftest import MOSQUITTO, wait_for
from tests.fault_support import ServerProcess, ShippedBroker
from tests.model_set_support import build_set
from tests.web_support import PASSWORD, status

pytestmark = pytest.mark.timeout(180)

#: These tests post a model set in one request (the Models page sends it in pieces under the
#: default 1 MiB limit, tests/test_chunked_upload*.py), so their server takes bodies up to this.
UPLOAD_KB = 8192


class Web:
    """A logged-in browser session over plain HTTP (cookies, CSRF token from the page)."""

    def __init__(self, base: str, user: str) -> None:
        self.base = base
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        self.token = ""
        self.request("GET", "/login")
        answer = self.request("POST", "/login", form={"username": user, "password": PASSWORD})
        assert answer[0] == 200 and "Log out" in answer[1], answer

    def request(
        self, method: str, path: str, form: dict[str, Any] | None = None, files: dict[str, Path] | None = None
    ) -> tuple[int, str]:
        headers = {}
        data = None
        if form is not None or files is not None:
            fields = {"csrf_token": self.token, **(form or {})}
            if files:
                data, headers["Content-Type"] = _multipart(fields, files)
                headers["Accept"] = "application/json"
            else:
                data = urllib.parse.urlencode(fields, doseq=True).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=60) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode()
        match = re.search(r'name="csrf-token" content="([^"]+)"', body)
        if match:
            self.token = match.group(1)
        return status, body


def _multipart(fields: dict[str, Any], files: dict[str, Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for name, path in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/gzip\r\n\r\n" + path.read_bytes() + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class DeviceClient:
    """A paho client logged in with a device's broker credentials: publishes a status like a device
    that starts, and records the model assignments it receives."""

    def __init__(self, broker: ShippedBroker, name: str) -> None:
        self.name = name
        self.assignments: list[ModelAssignment] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-test", protocol=mqtt.MQTTv5)
        self.c.username_pw_set(name, broker.passwords[name])
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        wait_for(self.c.is_connected, what=f"{name} to connect")
        self.c.subscribe(model_topic(name), qos=1)
        self.c.publish(status_topic(name), status(name).to_json(), qos=1, retain=True).wait_for_publish(10)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.assignments.append(ModelAssignment.from_json(msg.payload))

    def latest(self) -> ModelAssignment | None:
        with self.lock:
            return self.assignments[-1] if self.assignments else None

    def report(self, event: ModelEvent) -> None:
        self.c.publish(model_event_topic(self.name), event.to_json(), qos=1, retain=True).wait_for_publish(10)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[ShippedBroker, ServerProcess, Web]]:
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed")
    broker = ShippedBroker(tmp_path, devices=("rack1", "rack2"))
    broker.start()
    server = ServerProcess(tmp_path, broker, max_request_kb=UPLOAD_KB)
    server.create_user("ada", "admin", PASSWORD)
    try:
        server.start()
        port = re.search(r"port = (\d+)", server.config.read_text().split("[http]")[1]).group(1)  # type: ignore[union-attr]
        yield broker, server, Web(f"http://127.0.0.1:{port}", "ada")
    finally:
        if server.proc is not None:
            server.stop()
        broker.stop()


def test_upload_assign_receive_download_and_a_rollback_shown(rig, tmp_path: Path) -> None:
    broker, server, web = rig
    status, body = web.request("POST", "/models", files={"set": build_set(tmp_path / "bad", hook=_corrupt)})
    assert status == 400 and "seg_fine.int8.onnx: sha256 " in json.loads(body)["message"]
    status, body = web.request("POST", "/models", files={"set": build_set(tmp_path)})
    assert status == 201, body
    manifest_sha = sha256_bytes((tmp_path / "set-v2" / "manifest.json").read_bytes())

    rack1 = DeviceClient(broker, "rack1")  # online during the roll-out; rack2 is not
    try:
        status, page = web.request("POST", "/models/assign", form={"version": "v2", "device": ["rack1", "rack2"]})
        assert status == 200 and "sent to rack1, rack2" in page
        got = wait_for(rack1.latest, timeout=15, what="rack1 to receive its assignment")
        assert (got.device, got.version, got.manifest_sha256) == ("rack1", "v2", manifest_sha)

        rack2 = DeviceClient(broker, "rack2")  # comes online after the assignment was made
        try:
            late = wait_for(rack2.latest, timeout=15, what="rack2 to find its retained assignment")
            assert (late.version, late.manifest_sha256) == ("v2", manifest_sha)
        finally:
            rack2.close()

        token = _device_token(server.db, "rack1")
        req = urllib.request.Request(
            web.base + "/api/v1/device/models/v2/manifest.json", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as response:
            assert sha256_bytes(response.read()) == manifest_sha

        reason = "scorable rate fell from 0.74 to 0.02 over the first 10 minutes"
        rack1.report(
            ModelEvent(
                device="rack1",
                assignment_id=got.assignment_id,
                version="v2",
                event="rolled_back",
                time=utc_iso(time.time()),
                active_version="",
                previous_version="v2",
                reason=reason,
            )
        )

        def shown() -> bool:
            return reason in web.request("GET", "/devices")[1]

        wait_for(shown, timeout=15, interval=0.2, what="the Devices page to show the rollback")
        overview = web.request("GET", "/")[1]
        assert "model-notice" in overview and f"rolled back to the shipped models: {reason}" in overview
    finally:
        rack1.close()

    # A broker killed before it saved its retained messages: the server tells every device again.
    connections = server.log.read_text().count("ingest connected")
    broker.kill()
    broker.start()
    wait_for(
        lambda: server.log.read_text().count("ingest connected") > connections,
        timeout=60,
        interval=0.2,
        what="the server to reconnect",
    )
    rack2 = DeviceClient(broker, "rack2")
    try:
        again = wait_for(rack2.latest, timeout=15, what="rack2 to be told its assignment again")
        assert (again.version, again.manifest_sha256) == ("v2", manifest_sha)
    finally:
        rack2.close()


def _corrupt(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / "seg_fine.int8.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")


def _device_token(db_path: Path, device: str) -> str:
    db = connect(db_path, migrate_schema=False)
    try:
        return create_device_token(db, device)
    finally:
        db.conn.close()
