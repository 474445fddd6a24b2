"""The server side of a model roll-out, in one process: the Models page (admins, CSRF), the device
download endpoint, assignments published retained through the ingest transport, devices' model
events stored once and shown, and model changes marked in the score history."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from mgs_core.messages import ModelAssignment, ModelEvent, model_event_topic, utc_iso
from server import rollout
from server.db import connect
from server.delivery import DeliveryTracker
from server.ingest_transport import IngestHealth, Received
from server.ingest_writer import IngestWriter
from server.rollout_publisher import AssignmentPublisher
from server.rules import RuleEngine
from server.store import IngestStore
from tests.ingest_support import T0, window
from tests.model_set_support import build_set
from tests.web_support import add_device_token, add_token, add_user, csrf, logged_in, make_app, status, store


def upload(client: FlaskClient, archive: Path, token: str | None = None) -> Any:
    with open(archive, "rb") as f:
        data = {"set": (f, archive.name), "csrf_token": token if token is not None else csrf(client)}
        return client.post("/models", data=data, headers={"Accept": "application/json"})


def registered(app: Flask, tmp_path: Path, version: str = "v2") -> FlaskClient:
    admin = logged_in(app, "admin")
    answer = upload(admin, build_set(tmp_path, version))
    assert answer.status_code == 201, answer.get_json()
    return admin


class FakeTransport:
    """The ingest transport as the publisher sees it: records what would go to the broker."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.connection_number = 0
        self.sent: list[tuple[str, ModelAssignment, bool]] = []

    def connect(self) -> None:
        self.connection_number += 1
        self.connected.set()

    def publish(self, topic: str, payload: str, retain: bool = False) -> bool:
        self.sent.append((topic, ModelAssignment.from_json(payload), retain))
        return True


class Outlet:
    def committed(self, items: Sequence[Received]) -> None:
        pass

    def publish(self, topic: str, payload: str, retain: bool = False) -> bool:
        return True


def ingest(app: Flask, *events: ModelEvent, topic_device: str | None = None) -> None:
    """Write model events through the ingest writer, as the worker does with a batch."""
    db = connect(app.config["DATABASE"])
    try:
        writer = IngestWriter(app.config["DATABASE"], "mgs", Outlet(), IngestHealth())
        items = [Received(time.time(), model_event_topic(topic_device or e.device), e.to_json(), 1, 0) for e in events]
        s = IngestStore(db)
        writer.write(s, RuleEngine(s.repository), DeliveryTracker(), items)
    finally:
        db.conn.close()


def event(kind: str, assignment_id: int, version: str = "v2", device: str = "rack1", **kw: Any) -> ModelEvent:
    return ModelEvent(
        device=device,
        assignment_id=assignment_id,
        version=version,
        event=kind,
        time=kw.pop("time", utc_iso(time.time())),
        **kw,
    )


def db_rows(app: Flask, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    db = connect(app.config["DATABASE"])
    try:
        return list(db.query(sql, params))
    finally:
        db.conn.close()


def test_only_admins_open_the_models_page_and_upload(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    for role in ("viewer", "officer"):
        client = logged_in(app, role)
        assert client.get("/models").status_code == 403
        assert upload(client, build_set(tmp_path, f"v-{role}")).status_code == 403
    assert app.test_client().get("/models").status_code == 302  # to the login page
    admin = logged_in(app, "admin")
    assert admin.get("/models").status_code == 200
    assert upload(admin, build_set(tmp_path, "nocsrf"), token="wrong").status_code == 400
    assert db_rows(app, "SELECT * FROM model_versions") == []


def test_an_upload_is_registered_and_shown_with_its_figures(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    admin = logged_in(app, "admin")
    answer = upload(admin, build_set(tmp_path))
    assert answer.status_code == 201
    assert answer.get_json()["message"].startswith("Version v2 registered (manifest ")
    page = admin.get("/models").get_data(as_text=True)
    assert 'data-version="v2"' in page
    assert "<th>heldout_mae</th><th>eye_recall</th><th>eye_precision</th>" in page
    assert "0.410" in page and "0.930" in page and "admin" in page
    assert db_rows(app, "SELECT action, target FROM audit_log") == [
        {"action": "upload model set", "target": "model:v2"}
    ]


def test_a_corrupted_upload_is_refused_with_what_is_wrong(tmp_path: Path) -> None:
    def corrupt(folder: Path, manifest: dict[str, Any]) -> None:
        path = folder / "seg_fine.int8.onnx"
        path.write_bytes(path.read_bytes()[:-1] + b"\0")

    app = make_app(tmp_path)
    admin = logged_in(app, "admin")
    answer = upload(admin, build_set(tmp_path, hook=corrupt))
    assert answer.status_code == 400
    message = answer.get_json()["message"]
    assert message.startswith("Refused: seg_fine.int8.onnx: sha256 ") and "does not match the manifest's" in message
    assert db_rows(app, "SELECT * FROM model_versions") == []
    # a plain form post (no script) gets the same message on the page
    with open(build_set(tmp_path / "b", hook=corrupt), "rb") as f:
        page = admin.post("/models", data={"set": (f, "set.tar.gz"), "csrf_token": csrf(admin)}, follow_redirects=True)
    assert "Refused: seg_fine.int8.onnx: sha256" in page.get_data(as_text=True)


def test_an_upload_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.config["MGS_CONFIG"].models.max_set_mb = 1
    admin = logged_in(app, "admin")
    answer = upload(admin, build_set(tmp_path, precisions=("fp32", "int8")))
    assert answer.status_code == 413


def test_devices_download_listed_files_with_their_token_only(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    registered(app, tmp_path)
    device = {"Authorization": f"Bearer {add_device_token(app, 'rack1')}"}
    client = app.test_client()
    answer = client.get("/api/v1/device/models/v2/seg_fine.int8.onnx", headers=device)
    assert answer.status_code == 200
    assert answer.data == (tmp_path / "set-v2" / "seg_fine.int8.onnx").read_bytes()
    manifest = client.get("/api/v1/device/models/v2/manifest.json", headers=device)
    assert json.loads(manifest.data)["set"]["version"] == "v2"
    assert client.get("/api/v1/device/models/v9/manifest.json", headers=device).status_code == 404
    assert client.get("/api/v1/device/models/v2/secret_key", headers=device).status_code == 404
    escape = client.get("/api/v1/device/models/v2/..%2Fserver.sqlite", headers=device)
    assert escape.status_code in (403, 404) and b"SQLite" not in escape.data
    person = add_token(app, add_user(app, "ada", "admin"))
    answer = client.get("/api/v1/device/models/v2/manifest.json", headers={"Authorization": f"Bearer {person}"})
    assert answer.status_code == 403
    assert client.get("/api/v1/device/models/v2/manifest.json").status_code == 401


def test_an_assignment_is_published_retained_once_and_again_after_a_reconnect(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    admin = registered(app, tmp_path)
    store(app, statuses=(status("rack1"), status("rack2")))
    transport = FakeTransport()
    publisher = AssignmentPublisher(app.config["DATABASE"], "mgs", transport)
    db = connect(app.config["DATABASE"])
    try:
        assert publisher.publish_due(db) == 0, "nothing is sent without a connection"
        admin.post("/models/assign", data={"version": "v2", "device": ["rack1"], "csrf_token": csrf(admin)})
        transport.connect()
        assert publisher.publish_due(db) == 1
        topic, sent, retain = transport.sent[0]
        version = db_rows(app, "SELECT manifest_sha256 FROM model_versions")[0]
        assert (topic, retain) == ("mgs/rack1/model", True)
        assert (sent.device, sent.version, sent.manifest_sha256, sent.canary) == (
            "rack1",
            "v2",
            version["manifest_sha256"],
            False,
        )
        assert publisher.publish_due(db) == 0, "an assignment is published once per connection"
        transport.connect()  # a new session (the broker may have lost its retained messages)
        assert publisher.publish_due(db) == 1 and transport.sent[-1][1].assignment_id == sent.assignment_id
        admin.post("/models/assign", data={"version": "", "target": "all", "csrf_token": csrf(admin)})
        assert publisher.publish_due(db) == 2
        assert {(m.device, m.version, m.manifest_sha256) for _, m, _ in transport.sent[-2:]} == {
            ("rack1", "", ""),
            ("rack2", "", ""),
        }
    finally:
        db.conn.close()


def test_a_canary_goes_first_and_the_rest_follow_its_promotion_once_it_is_active(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    admin = registered(app, tmp_path)
    store(app, statuses=(status("rack1"), status("rack2"), status("rack3")))
    admin.post("/models/assign", data={"version": "v2", "target": "all", "canary": "rack2", "csrf_token": csrf(admin)})
    rows = db_rows(app, "SELECT device, canary FROM model_assignments")
    assert rows == [{"device": "rack2", "canary": 1}]
    page = admin.post("/models/rollouts/1/promote", data={"csrf_token": csrf(admin)}, follow_redirects=True)
    assert "the canary rack2 is assigned, not yet sent to the device, not active" in page.get_data(as_text=True)
    canary_id = db_rows(app, "SELECT id FROM model_assignments")[0]["id"]
    ingest(app, event("active", canary_id, device="rack2", active_version="v2"))
    page = admin.post("/models/rollouts/1/promote", data={"csrf_token": csrf(admin)}, follow_redirects=True)
    assert "Roll-out 1 promoted: sent to rack1, rack3." in page.get_data(as_text=True)
    assert sorted(r["device"] for r in db_rows(app, "SELECT device FROM model_assignments")) == [
        "rack1",
        "rack2",
        "rack3",
    ]


def test_model_events_are_stored_once_and_a_rollback_is_shown_with_its_reason(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    admin = registered(app, tmp_path)
    store(app, statuses=(status("rack1"),))
    admin.post("/models/assign", data={"version": "v2", "device": ["rack1"], "csrf_token": csrf(admin)})
    assignment_id = db_rows(app, "SELECT id FROM model_assignments")[0]["id"]
    reason = "face-visible rate fell from 0.82 to 0.00 over the first 10 minutes"
    rolled = event("rolled_back", assignment_id, active_version="", previous_version="v2", reason=reason)
    ingest(app, event("active", assignment_id, time=utc_iso(time.time() - 60), active_version="v2"), rolled)
    ingest(app, rolled)  # a retained re-delivery
    assert len(db_rows(app, "SELECT * FROM model_events")) == 2
    state = rollout.device_state(connect(app.config["DATABASE"]), "rack1")
    assert state["state"] == "rolled_back"
    assert state["words"] == f"rolled back to the shipped models: {reason}"
    devices = admin.get("/devices").get_data(as_text=True)
    assert f"rolled back to the shipped models: {reason}" in devices
    assert f"rolled back to the shipped models: {reason}" in admin.get("/models").get_data(as_text=True)
    officer = logged_in(app, "officer")
    overview = officer.get("/").get_data(as_text=True)
    assert 'class="flash error model-notice" data-device="rack1"' in overview and reason in overview
    viewer = logged_in(app, "viewer")
    assert "model-notice" not in viewer.get("/").get_data(as_text=True)
    # assigning again ends the notice
    admin.post("/models/assign", data={"version": "", "device": ["rack1"], "csrf_token": csrf(admin)})
    assert "model-notice" not in officer.get("/").get_data(as_text=True)


def test_a_failed_assignment_names_the_version_that_still_runs(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    admin = registered(app, tmp_path)
    store(app, statuses=(status("rack1"),))
    admin.post("/models/assign", data={"version": "v2", "device": ["rack1"], "csrf_token": csrf(admin)})
    assignment_id = db_rows(app, "SELECT id FROM model_assignments")[0]["id"]
    reason = "eye.int8.onnx: sha256 00 is not the expected 11; the previous models keep scoring"
    ingest(app, event("failed", assignment_id, active_version="", reason=reason))
    state = rollout.device_state(connect(app.config["DATABASE"]), "rack1")
    assert state["words"] == f"failed, still running the shipped models: {reason}"
    assert f"v2 failed, still running the shipped models: {reason}" in logged_in(app, "officer").get("/").get_data(
        as_text=True
    )


def test_an_event_on_another_devices_topic_is_quarantined(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    ingest(app, event("active", 1, device="rack1"), topic_device="rack2")
    assert db_rows(app, "SELECT * FROM model_events") == []
    assert (
        "payload is from rack1 but was published on rack2's topic"
        in db_rows(app, "SELECT reason FROM quarantine")[0]["reason"]
    )


def test_every_window_keeps_its_model_version_and_the_history_marks_changes(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    windows = [window(seq=i, t=T0 + i) for i in range(6)]
    for w in windows[3:]:
        w.model_version = "v2"
    store(app, *windows[:2])
    store(app, *windows[2:])  # the change falls in the second batch
    store(app, window(seq=6, t=T0 + 6))  # back to the shipped models, first row of a batch
    viewer = logged_in(app, "viewer")
    body = viewer.get(f"/api/v1/boxes/rack1/0/scores?start={T0 - 10}&end={T0 + 100}").get_json()
    marks = [(c["t"], c["version"], c["previous_version"]) for c in body["model_changes"]]
    assert marks == [(T0 + 3, "v2", ""), (T0 + 6, "", "v2")]
    later = viewer.get(f"/api/v1/boxes/rack1/0/scores?start={T0 + 4}&end={T0 + 100}").get_json()
    assert [c["version"] for c in later["model_changes"]] == [""]
    csv = viewer.get(f"/api/v1/export?format=csv&start={T0 - 10}&end={T0 + 100}").get_data(as_text=True)
    header, *lines = csv.strip().splitlines()
    column = header.split(",").index("model_version")
    assert [line.split(",")[column] for line in lines] == ["", "", "", "v2", "v2", "v2", ""]
