"""What the dashboard pages show, from real rows in a temporary SQLite file (no browser)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server.config import DashboardConfig
from server.dashboard import PLOTLY_JS, box_state, sparkline, trend
from server.db import connect, transaction
from server.store import IngestStore
from tests.web_support import alert, csrf, logged_in, make_app, recent_window, repo_call, status, store


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, stale_after_s=120.0, warn_score=4.0)


@pytest.fixture
def viewer(app: Flask) -> FlaskClient:
    return logged_in(app, "viewer")


def _tile(page: str, device: str, box: int) -> str:
    match = re.search(rf'<a class="box [^"]*"[^>]*data-box="{device}/{box}".*?</a>', page, re.S)
    assert match, f"no tile for {device}/{box}"
    return match.group(0)


def test_a_fresh_score_is_shown_with_one_decimal(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=3.24))
    tile = _tile(viewer.get("/").get_data(as_text=True), "rack1", 0)
    assert 'data-state="ok"' in tile
    assert ">3.2<" in tile


def test_no_face_visible_is_shown_as_such_never_as_a_score(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=None))
    tile = _tile(viewer.get("/").get_data(as_text=True), "rack1", 0)
    assert "no face visible" in tile
    assert 'class="score"' not in tile


def test_an_old_score_is_shown_as_no_data_for_n_minutes(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=2.0, age_s=600))
    tile = _tile(viewer.get("/").get_data(as_text=True), "rack1", 0)
    assert 'data-state="stale"' in tile
    assert "no data for 10 min" in tile
    assert "2.0" not in tile


def test_a_raised_device_alert_marks_the_tile(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=7.5), alerts=(alert(score=7.5),))
    page = viewer.get("/").get_data(as_text=True)
    assert 'data-state="alert"' in _tile(page, "rack1", 0)
    assert "1 alert episode open or unacknowledged" in page


def test_the_assigned_animal_is_named_on_its_box(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=3.0))
    animal = repo_call(app, "create_animal", "M07")
    repo_call(app, "create_assignment", animal, "rack1", 0, time.time() - 60)
    assert "M07" in _tile(viewer.get("/").get_data(as_text=True), "rack1", 0)


def test_overview_fragment_is_only_the_live_part(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=3.0))
    fragment = viewer.get("/?fragment=1").get_data(as_text=True)
    assert 'data-box="rack1/0"' in fragment
    assert "<html" not in fragment


def test_pages_reference_no_external_assets(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=3.0))
    for url in ("/", "/boxes/rack1/0", "/alerts", "/devices", "/assignments", "/export"):
        page = viewer.get(url).get_data(as_text=True)
        assert not re.search(r'(src|href)="(https?:)?//', page), url


def test_plotly_is_served_from_the_installed_package(viewer: FlaskClient) -> None:
    with viewer.get("/vendor/plotly.min.js") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/javascript"
        assert len(response.get_data()) == PLOTLY_JS.stat().st_size


def test_history_page_points_the_plot_at_the_api_with_the_threshold(app: Flask, viewer: FlaskClient) -> None:
    animal = repo_call(app, "create_animal", "M01")
    repo_call(app, "create_assignment", animal, "rack1", 0, time.time() - 60)
    repo_call(app, "create_alert_rule", 5.5, 600, animal_id=animal)
    page = viewer.get("/boxes/rack1/0").get_data(as_text=True)
    assert 'data-url="/api/' in page
    assert 'data-threshold="5.5"' in page


def test_devices_page_shows_health_from_the_status_message(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=3.0), statuses=(status(fps=17.25, queue_depth=42),))
    page = viewer.get("/devices").get_data(as_text=True)
    row = re.search(r'<tr data-device="rack1">.*?</tr>', page, re.S)
    assert row
    assert "17.2 / 20 fps" in row.group(0)
    assert "<td>42</td>" in row.group(0)
    assert "online" in row.group(0)


def test_devices_page_shows_a_seq_regression(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=3.0), recent_window(device="rack2", score=3.0))
    db = connect(app.config["DATABASE"])
    with transaction(db):
        IngestStore(db).record_seq_regression(
            "rack1", "new outbox epoch 'ab12cd34ef56ab78' after epoch '' reached seq 9", time.time()
        )
    db.conn.close()
    page = viewer.get("/devices").get_data(as_text=True)
    rack1 = re.search(r'<tr data-device="rack1">.*?</tr>', page, re.S).group(0)
    rack2 = re.search(r'<tr data-device="rack2">.*?</tr>', page, re.S).group(0)
    assert "seq went back 1×" in rack1 and "ab12cd34ef56ab78" in rack1
    assert "seq went back" not in rack2


def test_officer_assigns_an_animal_to_a_box_from_the_form(app: Flask) -> None:
    store(app, recent_window(score=3.0))
    animal = repo_call(app, "create_animal", "M02")
    client = logged_in(app, "officer", name="olga")
    client.post(
        "/assignments",
        data={
            "animal_id": str(animal),
            "box": "rack1/0",
            "start": "",
            "end": "",
            "note": "after surgery",
            "csrf_token": csrf(client),
        },
    )
    rows = repo_call(app, "assignments", animal_id=animal)
    assert [(r["device"], r["box"], r["created_by"], r["note"]) for r in rows] == [
        ("rack1", 0, "olga", "after surgery")
    ]


def test_an_overlapping_assignment_is_refused_with_the_reason_on_the_page(app: Flask) -> None:
    store(app, recent_window(score=3.0))
    first, second = repo_call(app, "create_animal", "M01"), repo_call(app, "create_animal", "M02")
    repo_call(app, "create_assignment", first, "rack1", 0, time.time() - 60)
    client = logged_in(app, "officer")
    page = client.post(
        "/assignments",
        data={"animal_id": str(second), "box": "rack1/0", "csrf_token": csrf(client)},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert 'class="flash error"' in page
    assert len(repo_call(app, "assignments")) == 1


def test_officer_creates_an_alert_rule_for_an_experiment(app: Flask) -> None:
    experiment = repo_call(app, "create_experiment", "Surgery")
    client = logged_in(app, "officer")
    client.post(
        "/rules",
        data={"target": f"experiment:{experiment}", "threshold": "6", "duration_min": "10", "csrf_token": csrf(client)},
    )
    rules = repo_call(app, "alert_rules")
    assert [(r["experiment_id"], r["threshold"], r["duration_s"]) for r in rules] == [(experiment, 6.0, 600.0)]


def test_box_state_prefers_stale_over_an_old_score() -> None:
    config = DashboardConfig(stale_after_s=60)
    row = {"last_window_end": 1.0, "age_s": 61.0, "ahead_s": 0.0, "alert": None, "last_score": 3.0}
    assert box_state(row, config) == "stale"
    assert box_state({**row, "age_s": 5.0}, config) == "ok"
    assert box_state({**row, "age_s": 5.0, "last_score": None}, config) == "noface"
    assert box_state({**row, "age_s": 5.0, "last_score": None, "alert": "raised"}, config) == "alert"


def test_sparkline_breaks_where_no_face_was_visible() -> None:
    points = [{"t": 0.0, "mean": 1.0}, {"t": 60.0, "mean": None}, {"t": 120.0, "mean": 2.0}, {"t": 180.0, "mean": 2.0}]
    lines = sparkline(points, 0.0, 180.0)
    assert len(lines) == 2
    assert lines[0].count(",") == 1 and lines[1].count(",") == 2


def test_trend_compares_the_last_minutes_with_the_ones_before() -> None:
    now = 10_000.0
    rising = [{"t": now - 900, "mean": 2.0}, {"t": now - 120, "mean": 4.0}]
    assert trend(rising, now) == "up"
    assert trend([{"t": now - 900, "mean": 4.0}, {"t": now - 120, "mean": 2.0}], now) == "down"
    assert trend([{"t": now - 120, "mean": 4.0}], now) is None


def test_acknowledging_on_a_box_history_page_returns_to_that_page(app: Flask) -> None:
    store(app, recent_window(score=7.0), alerts=(alert(),))
    client = logged_in(app, "officer")
    page = client.get("/boxes/rack1/0").get_data(as_text=True)
    back = re.search(r'name="back" value="([^"]+)"', page)
    assert back and back.group(1) == "/boxes/rack1/0"
    response = client.post("/alerts/1/acknowledge", data={"back": back.group(1), "csrf_token": csrf(client)})
    assert response.headers["Location"] == "/boxes/rack1/0"


def test_export_form_fields_are_what_the_download_takes(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(score=3.5), recent_window(box=1, seq=1, score=None))
    page = viewer.get("/export").get_data(as_text=True)
    form = re.search(r'<form[^>]*action="([^"]+)"[^>]*id="export-form">(.*?)</form>', page, re.S)
    assert form and form.group(1) == "/export/download"
    names = set(re.findall(r'name="([a-z_]+)"', form.group(2)))
    assert names == {"scope", "start", "end", "resolution", "format"}
    start = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    response = viewer.get(
        form.group(1),
        query_string={"scope": "box:rack1/1", "start": start, "end": "", "resolution": "second", "format": "csv"},
    )
    lines = response.get_data(as_text=True).strip().splitlines()
    assert response.status_code == 200
    assert len(lines) == 2 and lines[1].split(",")[1:3] == ["rack1", "1"]
