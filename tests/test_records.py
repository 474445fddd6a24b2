"""Records: audit log entries for changes made in the dashboard and the REST API, animal notes, the per-animal
report, the facility's time zone and the spreadsheet downloads (real SQLite, no browser)."""

from __future__ import annotations

import io
import re
import time
import zipfile
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from mgs_core.errors import ConfigError
from server import audit
from server.config import DashboardConfig
from server.db import connect
from tests.ingest_support import window
from tests.web_support import (
    add_token,
    add_user,
    alert,
    csrf,
    logged_in,
    make_app,
    recent_window,
    repo_call,
    store,
)


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, timezone="Europe/Berlin")


def test_rule_and_assignment_changes_are_in_the_audit_log_with_old_and_new(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M07")
    store(app, recent_window(score=3.0))
    client = logged_in(app, "officer", "olga")
    token = csrf(client)
    client.post(
        "/rules", data={"target": f"animal:{animal}", "threshold": "6", "duration_min": "10", "csrf_token": token}
    )
    client.post("/rules/1/enabled", data={"enabled": "0", "csrf_token": token})
    client.post("/assignments", data={"animal_id": str(animal), "box": "rack1/0", "csrf_token": token})
    page = client.get("/audit").get_data(as_text=True)
    rows = re.findall(r'<tr data-audit="\d+"><td>([^<]+)</td><td>([^<]+)</td><td>([^<]+)</td>', page)
    assert [r[2] for r in rows] == ["create assignment", "disable rule", "create rule"]
    assert all(r[1] == "olga" for r in rows)
    assert all(r[0].endswith(("CET", "CEST")) for r in rows), "times name the facility's zone"
    assert re.search(r"enabled:</span> 1 → <b>0</b>", page)
    assert "duration_s:</span> – → <b>10 min</b>" in page
    only_rule = client.get("/audit?target=rule:1").get_data(as_text=True)
    assert only_rule.count("data-audit=") == 2


def test_user_and_token_changes_by_an_admin_are_audited(app: Flask) -> None:
    client = logged_in(app, "admin", "ada")
    token = csrf(client)
    client.post(
        "/admin/users", data={"username": "bob", "password": "long enough pw", "role": "viewer", "csrf_token": token}
    )
    users = client.get("/admin/users").get_data(as_text=True)
    bob = re.search(r'action="/admin/users/(\d+)/role"', users.split('data-user="bob"')[1]).group(1)  # type: ignore[union-attr]
    client.post(f"/admin/users/{bob}/role", data={"role": "officer", "csrf_token": token})
    client.post("/admin/tokens", data={"name": "alerting script", "user_id": bob, "csrf_token": token})
    page = client.get("/audit?target=user:bob").get_data(as_text=True)
    assert "create user" in page and "create token" in page
    assert re.search(r"role:</span> viewer → <b>officer</b>", page)


def test_a_viewer_cannot_read_the_audit_log(app: Flask) -> None:
    assert logged_in(app, "viewer").get("/audit").status_code == 403


def test_notes_and_humane_endpoint_are_shown_with_the_animal_and_audited(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M08")
    client = logged_in(app, "officer", "olga")
    client.post(
        f"/animals/{animal}/records",
        data={"notes": "post-op day 1", "humane_endpoint": "weight loss > 20 %", "csrf_token": csrf(client)},
    )
    page = client.get(f"/animals/{animal}").get_data(as_text=True)
    assert "post-op day 1" in page and "weight loss &gt; 20 %" in page
    assert "weight loss &gt; 20 %" in client.get("/audit").get_data(as_text=True)


def test_the_report_has_the_course_episodes_acknowledgements_and_notes(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M09", "C57BL/6J", "surgery 08:00")
    repo_call(app, "update_animal", animal, humane_endpoint="score ≥ 7 for 2 h")
    repo_call(app, "create_assignment", animal, "rack1", 0, time.time() - 7200)
    now = time.time()
    store(
        app,
        *[window("rack1", 0, i, now - 3600 + i * 60, 3.0 + (i % 10) * 0.5) for i in range(55)],
        alerts=(alert(score=7.5),),
    )
    client = logged_in(app, "officer", "olga")
    client.post("/alerts/1/acknowledge", data={"note": "vet informed", "csrf_token": csrf(client)})
    page = client.get(f"/animals/{animal}/report").get_data(as_text=True)
    assert "Welfare report: M09" in page
    assert "score ≥ 7 for 2 h" in page and "surgery 08:00" in page
    assert "olga" in page and "vet informed" in page and "still open" in page
    assert page.count("<polyline") >= 1 and 'class="episode"' in page
    assert "@media print" in client.get("/static/style.css").get_data(as_text=True)
    bad = client.get(f"/animals/{animal}/report?start=2026-05-02&end=2026-05-01")
    assert bad.status_code == 400 and "swap the dates" in bad.get_data(as_text=True)


def test_a_bad_time_zone_stops_with_the_key() -> None:
    with pytest.raises(ConfigError, match="dashboard.timezone.*Mars/Olympus"):
        DashboardConfig(timezone="Mars/Olympus").check()
    with pytest.raises(ConfigError, match="dashboard.severity_steps"):
        DashboardConfig(severity_steps=[4.0, 2.0, 6.0, 7.5]).check()


# --- spreadsheet downloads ----------------------------------------------------------------------------


def _setup_animal(app: Flask, now: float | None = None) -> int:
    """120 windows of MGS 2.5, 20 s apart, ending ten minutes before `now`."""
    now = time.time() if now is None else now
    animal = repo_call(app, "create_animal", "Maus-Ä1")
    repo_call(app, "create_assignment", animal, "rack1", 0, now - 7200)
    store(app, *[window("rack1", 0, i, now - 3000 + i * 20, 2.5) for i in range(120)])
    return animal


def _last_berlin_noon() -> float:
    """A moment whose last two hours lie inside one local day, whatever the time the test runs."""
    now = datetime.now(ZoneInfo("Europe/Berlin"))
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    return (noon if noon <= now else noon - timedelta(days=1)).timestamp()


def _start() -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.localtime(time.time() - 2 * 3600))


def test_csv_download_opens_in_excel_with_bom_local_time_and_the_animal_in_the_name(app: Flask) -> None:
    animal = _setup_animal(app)
    client = logged_in(app, "viewer")
    response = client.get(
        "/export/download",
        query_string={
            "scope": f"animal:{animal}",
            "start": str(time.time() - 7200),
            "resolution": "minute",
            "format": "csv",
        },
    )
    assert response.status_code == 200
    raw = response.data
    assert raw.startswith("\ufeff".encode())
    lines = raw.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("period start (Europe/Berlin),period_start_utc,device,box")
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:00,\d{4}-\d\d-\d\dT\d\d:\d\d:00Z,rack1,0,\d+,Maus-Ä1,", lines[1])
    assert 40 <= len(lines) - 1 <= 42, "120 windows over 40 minutes: one row per minute, not per window"
    disposition = response.headers["Content-Disposition"]
    assert "filename*=UTF-8''mgs-scores_Maus-%C3%841_" in disposition and disposition.count("_minute.csv") == 2


def test_european_csv_uses_semicolons_and_decimal_commas_and_days_add_up(app: Flask) -> None:
    noon = _last_berlin_noon()
    animal = _setup_animal(app, now=noon)
    client = logged_in(app, "viewer")
    response = client.get(
        "/export/download",
        query_string={
            "scope": f"animal:{animal}",
            "start": str(noon - 7200),
            "resolution": "day",
            "format": "csv-eu",
        },
    )
    lines = response.data.decode("utf-8-sig").splitlines()
    assert lines[0].split(";")[:3] == ["period start (Europe/Berlin)", "period_start_utc", "device"]
    cells = lines[1].split(";")
    assert cells[6] == "120" and cells[8] == "2,5", "120 windows in one day, mean 2,5 with a decimal comma"
    assert cells[0].endswith("00:00:00"), "a day starts at local midnight"


def test_xlsx_download_is_a_workbook_with_the_animal(app: Flask) -> None:
    animal = _setup_animal(app)
    client = logged_in(app, "viewer")
    response = client.get(
        "/export/download",
        query_string={"scope": f"animal:{animal}", "start": _start(), "resolution": "second", "format": "xlsx"},
    )
    assert response.status_code == 200 and response.headers["Content-Disposition"].endswith("_second.xlsx")
    book = zipfile.ZipFile(io.BytesIO(response.data))
    sheet = book.read("xl/worksheets/sheet1.xml").decode()
    assert "Maus-Ä1" in sheet and "time (Europe/Berlin)" in sheet
    assert sheet.count("<row ") == 121


@pytest.mark.parametrize("start", ["1e18", "-5", "nan", "inf"])
def test_a_start_outside_the_calendar_is_explained(app: Flask, start: str) -> None:
    response = logged_in(app, "viewer").get("/export/download", query_string={"start": start})
    assert response.status_code == 400 and "between 1970 and 9999" in response.get_data(as_text=True)


def test_a_bad_resolution_is_explained(app: Flask) -> None:
    response = logged_in(app, "viewer").get("/export/download", query_string={"start": _start(), "resolution": "week"})
    assert response.status_code == 400 and "second, minute, hour, day" in response.get_data(as_text=True)


def test_the_api_sets_the_humane_endpoint_shown_on_the_animal_page(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M10")
    officer = logged_in(app, "officer")
    response = officer.patch(
        f"/api/v1/animals/{animal}",
        json={"humane_endpoint": "no food intake for 24 h"},
        headers={"X-CSRF-Token": csrf(officer)},
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["animal"]["humane_endpoint"] == "no food intake for 24 h"
    assert "no food intake for 24 h" in officer.get(f"/animals/{animal}").get_data(as_text=True)


def test_changes_through_the_api_are_audited_in_the_tokens_name(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M10")
    store(app, recent_window(score=3.0), alerts=(alert(score=7.5),))
    api, client = {"Authorization": "Bearer " + add_token(app, add_user(app, "pipeline", "officer"))}, app.test_client()
    rule = {"animal_id": animal, "threshold": 6, "duration_s": 600}
    assert client.post("/api/v1/alert-rules", json=rule, headers=api).status_code == 201
    client.patch("/api/v1/alert-rules/1", json={"enabled": False}, headers=api)
    assert client.patch("/api/v1/alert-rules/99", json={"enabled": True}, headers=api).status_code == 404
    client.delete("/api/v1/alert-rules/1", headers=api)
    box = {"animal_id": animal, "device": "rack1", "box": 0}
    assignment = client.post("/api/v1/assignments", json=box, headers=api).get_json()["assignment"]["id"]
    client.patch(f"/api/v1/assignments/{assignment}", json={"end_time": "now"}, headers=api)
    client.delete(f"/api/v1/assignments/{assignment}", headers=api)
    client.post("/api/v1/animals", json={"name": "M11"}, headers=api)
    for _ in range(2):  # the unchanged second save and the second acknowledgement add no entry
        client.patch(f"/api/v1/animals/{animal}", json={"notes": "post-op"}, headers=api)
        client.post("/api/v1/alerts/1/acknowledge", headers=api)
    client.post("/api/v1/experiments", json={"name": "E1", "description": "analgesia"}, headers=api)
    db = connect(app.config["DATABASE"])
    try:
        entries = {e["action"]: e for e in audit.entries(db)}
        assert list(entries) == [
            "create experiment",
            "acknowledge alert",
            "update animal",
            "create animal",
            "delete assignment",
            "end assignment",
            "create assignment",
            "delete rule",
            "disable rule",
            "create rule",
        ]
    finally:
        db.conn.close()
    assert {e["username"] for e in entries.values()} == {"pipeline"}
    assert entries["disable rule"]["changes"] == [("enabled", 1, 0)]
    assert entries["create rule"]["new"]["animal_name"] == "M10"
    assert entries["update animal"]["changes"] == [("notes", "", "post-op")]
    assert entries["delete assignment"]["old"]["device"] == "rack1" and entries["delete assignment"]["new"] is None
    assert entries["end assignment"]["new"]["end_time"] is not None
    assert entries["acknowledge alert"]["target"] == "alert:1"
    assert entries["create experiment"]["new"] == {"name": "E1", "description": "analgesia"}
    page = logged_in(app, "officer", "olga").get("/audit?target=rule:1").get_data(as_text=True)
    assert page.count("data-audit=") == 3 and "pipeline" in page
