"""Triage overview: severity steps, the order of tiles, and live updates that send only changes."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from server import triage
from tests.ingest_support import window
from tests.web_support import (
    alert,
    logged_in,
    make_app,
    recent_window,
    repo_call,
    store,
)

STEPS = [2.0, 4.0, 6.0, 7.5]


def test_severity_has_five_steps_so_4_and_7_9_differ() -> None:
    assert [triage.level(s, STEPS) for s in (0.5, 2.0, 4.0, 5.9, 6.0, 7.9, 9.0)] == [0, 1, 2, 2, 3, 4, 4]
    assert triage.level(None, STEPS) is None
    legend = triage.legend(STEPS)
    assert [row["range"] for row in legend] == ["< 2", "2 < 4", "4 < 6", "6 < 7.5", "7.5 – 9"]
    assert "act now" in legend[4]["meaning"]


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


@pytest.fixture
def viewer(app: Flask) -> FlaskClient:
    return logged_in(app, "viewer")


def _order(page: str) -> list[str]:
    return re.findall(r'<a class="box [^"]*"[^>]*data-box="([^"]+)"', page)


def test_attention_first_then_highest_score_then_no_score(app: Flask, viewer: FlaskClient) -> None:
    store(
        app,
        recent_window(box=0, seq=1, score=2.0),
        recent_window(box=1, seq=2, score=8.1),
        recent_window(box=2, seq=3, score=None),
        recent_window(box=3, seq=4, score=5.5),
        recent_window(box=4, seq=5, score=3.0),
        recent_window(box=5, seq=6, score=6.5, age_s=900),
        alerts=(alert(box=4, seq=100, score=6.2),),
    )
    page = viewer.get("/").get_data(as_text=True)
    # no current score: the box that spent a minute at 6.5 before going quiet comes first
    assert _order(page) == ["rack1/4", "rack1/1", "rack1/3", "rack1/0", "rack1/5", "rack1/2"]
    tile = re.search(r'<a class="box ([^"]*)"[^>]*data-box="rack1/1"', page)
    assert tile and "lv4" in tile.group(1), "8.1 is in the top step (red) without any rule"
    assert 'class="legend"' in page and "act now" in page


def test_delta_sends_nothing_when_nothing_changed_and_only_the_changed_tile_otherwise(
    app: Flask, viewer: FlaskClient
) -> None:
    store(app, *[recent_window(box=b, seq=b, score=2.0 + b * 0.1) for b in range(6)])
    page = viewer.get("/").get_data(as_text=True)
    version = re.search(r'data-version="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    same = viewer.get(f"/overview/delta?v={version}").get_json()
    assert same["unchanged"] is True and len(viewer.get(f"/overview/delta?v={version}").data) < 200
    store(app, recent_window(box=3, seq=50, score=7.7))
    body = viewer.get(f"/overview/delta?v={version}").get_json()
    assert body["full"] is False
    assert list(body["tiles"]) == ["rack1/3"]
    assert ">7.7<" in body["tiles"]["rack1/3"]
    assert body["order"][0] == "rack1/3", "the new highest score moves to the front"
    again = viewer.get(f"/overview/delta?v={body['version']}").get_json()
    assert again["unchanged"] is True


def test_an_unknown_version_gets_every_tile(app: Flask, viewer: FlaskClient) -> None:
    store(app, recent_window(box=0, seq=1, score=3.0), recent_window(box=1, seq=2, score=4.0))
    body = viewer.get("/overview/delta?v=stale-or-restarted").get_json()
    assert body["full"] is True and set(body["tiles"]) == {"rack1/0", "rack1/1"}


def test_tiles_carry_what_the_filters_and_search_use(app: Flask, viewer: FlaskClient) -> None:
    experiment = repo_call(app, "create_experiment", "Post-op")
    animal = repo_call(app, "create_animal", "Maus-Ä1", "", "", experiment)
    repo_call(app, "update_animal", animal, humane_endpoint="score ≥ 7 for 2 h: euthanise")
    repo_call(app, "create_assignment", animal, "rack1", 0, time.time() - 60)
    store(app, recent_window(score=3.0))
    page = viewer.get("/").get_data(as_text=True)
    tile = re.search(r'<a class="box [^"]*"[^>]*data-box="rack1/0".*?</a>', page, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert 'data-rack="rack1"' in tile and 'data-experiment="Post-op"' in tile
    assert 'data-search="rack1/0 maus-ä1' in tile
    assert "humane endpoint" in tile and "euthanise" in tile
    assert re.search(r'<select id="f-experiment".*?<option>Post-op</option>', page, re.DOTALL)


def test_history_arriving_after_a_page_load_shows_in_the_sparkline_at_once(app: Flask, viewer: FlaskClient) -> None:
    # no face in the first window: its minute has no mean, so no line is drawn even when the clock
    # has just passed a minute and that window's minute already counts as completed
    store(app, recent_window(score=None))
    before = viewer.get("/").get_data(as_text=True)
    assert "<polyline" not in before
    now = time.time()
    store(
        app,
        *[window("rack1", 0, 100 + i, now - 1500 + i * 70, 2.0 + i * 0.2) for i in range(20)],
        recent_window(seq=500, score=6.0),
    )
    after = viewer.get("/").get_data(as_text=True)
    assert "<polyline" in after, "late windows for completed minutes must not wait for the next minute"
    assert ">↑<" in after, "a rising course shows a rising trend"
