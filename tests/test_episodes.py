"""Alert episodes: pairing, merging device and rule alerts, acknowledging with a note (real SQLite)."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from server import audit, episodes
from server.db import connect, transaction
from server.repository import Repository
from tests.web_support import (
    alert,
    csrf,
    logged_in,
    make_app,
    recent_window,
    repo_call,
    store,
)


def _row(
    id: int,
    source: str,
    event: str,
    t: float,
    animal: int | None = 1,
    device: str = "rack1",
    box: int = 0,
    rule: int | None = None,
    score: float | None = 7.0,
) -> dict[str, Any]:
    return {
        "id": id,
        "source": source,
        "event": event,
        "time": t,
        "animal_id": animal,
        "animal_name": "M1",
        "device": device,
        "box": box,
        "rule_id": rule,
        "threshold": 6.0,
        "duration_s": 300.0,
        "score": score,
        "received_at": t,
        "acknowledged_at": None,
    }


def test_raised_and_cleared_become_one_episode_with_duration_and_peak() -> None:
    found = episodes.build([_row(2, "device", "cleared", 1600.0, score=5.0), _row(1, "device", "raised", 1000.0)])
    assert len(found) == 1
    e = found[0]
    assert (e.start, e.end, e.duration(9999.0), e.peak) == (1000.0, 1600.0, 600.0, 7.0)
    assert not e.acknowledged and e.sources == ["device"]


def test_device_and_rule_alerts_of_one_animal_at_one_time_are_one_episode_with_both_sources() -> None:
    rows = [
        _row(1, "device", "raised", 1000.0),
        _row(2, "server", "raised", 1100.0, rule=3, score=7.8),
        _row(3, "device", "cleared", 1500.0),
        _row(4, "server", "cleared", 1550.0, rule=3),
        _row(5, "device", "raised", 5000.0),
    ]
    found = episodes.build(rows)
    assert [(e.start, e.end) for e in found] == [(1000.0, 1550.0), (5000.0, None)]
    first = found[0]
    assert first.sources == ["device", "rule"]
    assert first.raised_ids == [1, 2]
    assert first.peak == 7.8
    assert found[1].open


def test_separate_animals_and_far_apart_alerts_stay_separate() -> None:
    rows = [
        _row(1, "device", "raised", 1000.0),
        _row(2, "device", "cleared", 1100.0),
        _row(3, "device", "raised", 1100.0 + episodes.MERGE_GAP_S + 1),
        _row(4, "device", "cleared", 2000.0),
        _row(5, "device", "raised", 1000.0, animal=2, box=1),
    ]
    found = episodes.build(rows)
    assert len(found) == 3
    assert {e.animal_id for e in found} == {1, 2}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


def _rule_alert(app: Flask, event: str, animal: int, rule: int, t: float, score: float) -> None:
    db = connect(app.config["DATABASE"])
    try:
        with transaction(db):
            Repository(db).record_server_alert(event, "rack1", 0, animal, rule, t, 6.0, 60.0, score, t)
    finally:
        db.conn.close()


def test_an_episode_is_acknowledged_once_with_a_note_and_shows_who_and_what(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M03")
    repo_call(app, "create_assignment", animal, "rack1", 0, time.time() - 3600)
    rule = repo_call(app, "create_alert_rule", 6.0, 60.0, animal_id=animal)
    store(app, recent_window(score=7.5), alerts=(alert(score=7.5),))
    _rule_alert(app, "raised", animal, rule, time.time(), 7.6)
    client = logged_in(app, "officer", "olga")
    page = client.get("/alerts").get_data(as_text=True)
    rows = re.findall(r'<tr data-episode="(\d+)"', page)
    assert len(rows) == 1, "the device and the rule alert are one episode, not two open alerts"
    assert "device + rule" in page
    response = client.post(
        f"/alerts/{rows[0]}/acknowledge",
        data={"note": "analgesia given, vet informed", "back": "/alerts", "csrf_token": csrf(client)},
    )
    assert response.status_code == 302
    assert repo_call(app, "alerts", unacknowledged=True) == [], "both alerts of the episode are acknowledged"
    page = client.get("/alerts?show=all").get_data(as_text=True)
    assert "olga" in page and "analgesia given, vet informed" in page
    still_open = client.get("/alerts").get_data(as_text=True)
    assert still_open.count('data-episode="') == 1, "an open episode stays listed after it was acknowledged"
    assert "Add note" in still_open and "Acknowledge<" not in still_open
    db = connect(app.config["DATABASE"])
    try:
        entry = audit.entries(db)[0]
    finally:
        db.conn.close()
    assert (entry["username"], entry["action"]) == ("olga", "acknowledge episode")
    assert ("note", None, "analgesia given, vet informed") in entry["changes"]


def test_acknowledge_all_of_an_animal_takes_every_open_episode(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M04")
    repo_call(app, "create_assignment", animal, "rack1", 0, time.time() - 3600)
    rule = repo_call(app, "create_alert_rule", 6.0, 60.0, animal_id=animal)
    _rule_alert(app, "raised", animal, rule, time.time() - 900, 7.0)
    _rule_alert(app, "cleared", animal, rule, time.time() - 800, 3.0)
    _rule_alert(app, "raised", animal, rule, time.time() - 100, 7.2)
    client = logged_in(app, "officer")
    response = client.post(f"/animals/{animal}/acknowledge", data={"note": "checked", "csrf_token": csrf(client)})
    assert response.status_code == 302
    assert repo_call(app, "alerts", unacknowledged=True) == []
    page = client.get(f"/animals/{animal}").get_data(as_text=True)
    assert page.count("checked") >= 2


def test_a_viewer_cannot_acknowledge(app: Flask) -> None:
    store(app, recent_window(score=7.5), alerts=(alert(score=7.5),))
    client = logged_in(app, "viewer")
    assert client.post("/alerts/1/acknowledge", data={"note": "x", "csrf_token": csrf(client)}).status_code == 403
    assert len(repo_call(app, "alerts", unacknowledged=True)) == 1


def test_open_episode_on_the_tile_says_since_when_and_how_long(app: Flask) -> None:
    store(app, recent_window(score=7.5), alerts=(alert(score=7.5),))
    page = logged_in(app, "viewer").get("/").get_data(as_text=True)
    tile = re.search(r'<a class="box [^"]*"[^>]*data-box="rack1/0".*?</a>', page, re.DOTALL)
    assert tile and re.search(r"ALERT</span> since \d\d:\d\d UTC \(&lt; 1 min\)", tile.group(0))
