"""The REST API through the real app (Flask test client over a temporary SQLite file)."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest
from flask import Flask

from tests.ingest_support import T0, window
from tests.web_support import (
    add_token,
    add_user,
    alert,
    csrf,
    logged_in,
    make_app,
    recent_window,
    repo_call,
    status,
    store,
)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


def bearer(app: Flask, role: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + add_token(app, add_user(app, f"{role}-script", role))}


def test_boxes_show_score_animal_alert_and_health(app: Flask) -> None:
    mouse = repo_call(app, "create_animal", "M-1")
    repo_call(app, "create_assignment", mouse, "rack1", 0, time.time() - 3600)
    store(
        app,
        recent_window(seq=1, age_s=4.0, score=6.5),
        recent_window(box=1, seq=2, score=None),
        alerts=(alert(box=0),),
        statuses=(status(),),
    )
    body = app.test_client().get("/api/v1/boxes", headers=bearer(app, "viewer")).get_json()
    box0, box1 = body["boxes"]
    assert (box0["animal_name"], box0["last_score"], box0["alert"], box0["device_online"]) == (
        "M-1",
        6.5,
        "raised",
        True,
    )
    assert 3.0 < box0["age_s"] < 60
    assert (box1["last_score"], box1["animal_id"], box1["alert"]) == (None, None, None)


def test_scores_pick_a_resolution_and_accept_iso_or_seconds(app: Flask) -> None:
    store(app, *[window(seq=i, t=T0 + i * 30, score=(i % 10) * 0.9) for i in range(2 * 24 * 120)])
    client, headers = app.test_client(), bearer(app, "viewer")
    url = "/api/v1/boxes/rack1/0/scores"
    day = client.get(f"{url}?start={T0}&end={T0 + 86400}", headers=headers).get_json()
    assert (day["resolution"], len(day["points"])) == ("minute", 1441)  # T0 is not on a minute: one partial bucket
    hour = client.get(f"{url}?start=2025-06-15T15:06:40Z&end={T0 + 3600}", headers=headers).get_json()
    assert (hour["resolution"], len(hour["points"]), hour["start"]) == ("raw", 120, T0)
    forced = client.get(f"{url}?start={T0}&end={T0 + 2 * 86400}&resolution=hour", headers=headers).get_json()
    assert (forced["resolution"], sum(p["windows"] for p in forced["points"])) == ("hour", 5760)
    for query, message in (
        ("resolution=weekly", "resolution"),
        (f"start={T0}&end={T0 - 5}", "after"),
        ("start=yesterday", "ISO-8601"),
    ):
        response = client.get(f"{url}?{query}", headers=headers)
        assert response.status_code == 400 and message in response.get_json()["error"], query


def test_viewers_read_but_only_officers_change_assignments(app: Flask) -> None:
    mouse = repo_call(app, "create_animal", "M-1")
    viewer, officer = bearer(app, "viewer"), bearer(app, "officer")
    client = app.test_client()
    new = {"animal_id": mouse, "device": "rack1", "box": 2, "start_time": "2025-06-15T00:00:00Z"}
    assert client.post("/api/v1/assignments", json=new, headers=viewer).status_code == 403
    created = client.post("/api/v1/assignments", json=new, headers=officer)
    assert created.status_code == 201
    assignment = created.get_json()["assignment"]
    assert (assignment["created_by"], assignment["end_time"]) == ("officer-script", None)
    clash = client.post("/api/v1/assignments", json={**new, "box": 3}, headers=officer)
    assert clash.status_code == 409 and "already in box" in clash.get_json()["error"]
    ended = client.patch(f"/api/v1/assignments/{assignment['id']}", json={"end_time": "now"}, headers=officer)
    assert ended.get_json()["assignment"]["end_time"] is not None
    assert client.get("/api/v1/assignments?active=1", headers=viewer).get_json()["assignments"] == []
    assert client.delete(f"/api/v1/assignments/{assignment['id']}", headers=officer).status_code == 204
    assert client.get(f"/api/v1/assignments/{assignment['id']}", headers=viewer).status_code == 404
    assert client.post("/api/v1/assignments", json={"device": "rack1"}, headers=officer).status_code == 400
    bad_device = client.post("/api/v1/assignments", json={**new, "device": "rack 1; --"}, headers=officer)
    assert bad_device.status_code == 400 and "device name" in bad_device.get_json()["error"]


def test_session_logins_need_the_csrf_token_to_change_data(app: Flask) -> None:
    client = logged_in(app, "officer")
    assert client.post("/api/v1/animals", json={"name": "M-9"}).status_code == 400
    response = client.post("/api/v1/animals", json={"name": "M-9"}, headers={"X-CSRF-Token": csrf(client)})
    assert response.status_code == 201


def test_animal_names_are_stored_verbatim(app: Flask) -> None:
    officer, client = bearer(app, "officer"), app.test_client()
    name = "Robert'); DROP TABLE animals;-- <script>alert(1)</script>"
    created = client.post("/api/v1/animals", json={"name": name, "strain": "C57BL/6"}, headers=officer)
    assert created.status_code == 201
    listed = client.get("/api/v1/animals", headers=officer).get_json()["animals"]
    assert [a["name"] for a in listed] == [name]
    assert client.post("/api/v1/animals", json={"name": name}, headers=officer).status_code == 409
    assert client.post("/api/v1/animals", data="name=x", headers=officer).status_code == 400
    assert client.post("/api/v1/animals", json={"name": "x" * 500}, headers=officer).status_code == 400


def test_alerts_are_listed_and_acknowledged_by_officers(app: Flask) -> None:
    store(app, recent_window(seq=1), alerts=(alert(seq=5), alert(box=1, seq=6)))
    client, viewer, officer = app.test_client(), bearer(app, "viewer"), bearer(app, "officer")
    open_alerts = client.get("/api/v1/alerts?open=1", headers=viewer).get_json()["alerts"]
    assert len(open_alerts) == 2
    target = open_alerts[0]["id"]
    assert client.post(f"/api/v1/alerts/{target}/acknowledge", headers=viewer).status_code == 403
    acked = client.post(f"/api/v1/alerts/{target}/acknowledge", headers=officer).get_json()["alert"]
    assert acked["acknowledged_by"] == "officer-script"
    assert len(client.get("/api/v1/alerts?open=true", headers=viewer).get_json()["alerts"]) == 1
    assert client.post("/api/v1/alerts/999/acknowledge", headers=officer).status_code == 404


def test_alert_rules_crud(app: Flask) -> None:
    mouse = repo_call(app, "create_animal", "M-1")
    client, officer = app.test_client(), bearer(app, "officer")
    created = client.post(
        "/api/v1/alert-rules", json={"animal_id": mouse, "threshold": 4.5, "duration_s": 600}, headers=officer
    )
    assert created.status_code == 201
    rule = created.get_json()["rule"]
    assert (rule["animal_name"], rule["enabled"]) == ("M-1", 1)
    off = client.patch(f"/api/v1/alert-rules/{rule['id']}", json={"enabled": False}, headers=officer).get_json()
    assert off["rule"]["enabled"] == 0
    assert (
        client.post("/api/v1/alert-rules", json={"threshold": 4, "duration_s": 1}, headers=officer).status_code == 400
    )
    assert client.delete(f"/api/v1/alert-rules/{rule['id']}", headers=officer).status_code == 204


def test_devices_and_ingest_counters(app: Flask) -> None:
    store(app, recent_window(seq=1), statuses=(status(fps=12.5),))
    client, viewer = app.test_client(), bearer(app, "viewer")
    [device] = client.get("/api/v1/devices", headers=viewer).get_json()["devices"]
    assert (device["name"], device["fps"], device["availability"], device["boxes"]) == ("rack1", 12.5, "online", [0])
    detail = client.get("/api/v1/devices/rack1", headers=viewer).get_json()
    assert detail["status"]["models"]["unet"] == window().model_sha256
    assert client.get("/api/v1/devices/nope", headers=viewer).status_code == 404
    assert "counters" in client.get("/api/v1/ingest", headers=viewer).get_json()
    assert client.get("/api/v1/quarantine", headers=viewer).status_code == 403
    assert client.get("/api/v1/quarantine", headers=bearer(app, "officer")).status_code == 200


def test_export_csv_and_json_for_an_animal(app: Flask) -> None:
    mouse = repo_call(app, "create_animal", '=HYPERLINK("http://evil")')
    repo_call(app, "create_assignment", mouse, "rack1", 0, T0 + 10, T0 + 20)
    store(app, *[window(seq=i, t=T0 + i, score=None if i == 12 else 2.0) for i in range(30)])
    client, viewer = app.test_client(), bearer(app, "viewer")
    response = client.get(f"/api/v1/export?scope=animal:{mouse}&start={T0}&end={T0 + 100}&format=csv", headers=viewer)
    assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [int(r["seq"]) for r in rows] == list(range(10, 20))
    assert rows[2]["score"] == "" and rows[0]["score"] == "2.0"
    assert rows[0]["animal_name"].startswith("'=")
    body = client.get(f"/api/v1/export?animal_id={mouse}&start={T0}&end={T0 + 100}&format=json", headers=viewer)
    data = body.get_json()
    assert len(data["windows"]) == 10 and data["windows"][2]["score"] is None
    assert data["windows"][0]["animal_name"] == '=HYPERLINK("http://evil")'
    everything = client.get(f"/api/v1/export?start={T0}&format=json", headers=viewer).get_json()
    assert len(everything["windows"]) == 30
    assert client.get(f"/api/v1/export?scope=animal:999&start={T0}", headers=viewer).status_code == 404
    assert client.get("/api/v1/export?format=csv", headers=viewer).status_code == 400
    assert client.get(f"/api/v1/export?start={T0}&format=xlsx", headers=viewer).status_code == 400
    assert client.get(f"/api/v1/export?start={T0}&scope=cage:1", headers=viewer).status_code == 400


def test_officers_label_boxes(app: Flask) -> None:
    client, officer = app.test_client(), bearer(app, "officer")
    assert (
        client.patch("/api/v1/boxes/rack1/3", json={"label": "cage 12"}, headers=bearer(app, "viewer")).status_code
        == 403
    )
    labelled = client.patch("/api/v1/boxes/rack1/3", json={"label": "cage 12"}, headers=officer)
    assert labelled.get_json()["box"]["label"] == "cage 12"
    assert client.patch("/api/v1/boxes/rack1/99", json={"label": "x"}, headers=officer).status_code == 400
