""" "Not scorable" (a face seen, every eye abstained on) is stored, served and shown apart from "no face".

Windows go in through the real paths: a real Mosquitto and the ingest worker, the ingest writer's
store calls, and a video import; they come out through the REST API, the exports, the overview
tiles, the history page and the animal report of the real app over a temporary SQLite file.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from mgs_core.messages import ScoreWindow, score_topic
from server import db as server_db
from server.config import DashboardConfig
from server.dashboard import NOT_SCORABLE_HELP, box_state
from server.db import connect, migrations
from server.repository import Repository
from server.video_imports import store_import
from tests.conftest import wait_for
from tests.ingest_support import SHA, T0, publish, running_worker, score_message, window
from tests.web_support import add_token, add_user, logged_in, make_app, recent_window, repo_call, store

NOT_SCORABLE_VERSION = 8


def unsure(w: ScoreWindow, eyes: int = 3) -> ScoreWindow:
    """The same window with no valid eye and `eyes` abstained on: the device's "not scorable"."""
    return replace(w, valid_eyes=0, score=None, median=None, p90=None, face_visible_fraction=0.0, abstained_eyes=eyes)


def legacy_payload(w: ScoreWindow) -> bytes:
    """A window as a device from before abstention publishes it: no `abstained_eyes` field at all."""
    body = asdict(w)
    del body["abstained_eyes"]
    return json.dumps(body).encode()


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path, stale_after_s=120.0)


def bearer(app: Flask) -> dict[str, str]:
    return {"Authorization": "Bearer " + add_token(app, add_user(app, "script", "viewer"))}


def _tile(page: str, key: str) -> str:
    match = re.search(rf'<a class="box [^"]*"[^>]*data-box="{key}".*?</a>', page, re.S)
    assert match, f"no tile for {key}"
    return match.group(0)


# --- storage ---------------------------------------------------------------------------------------


def test_migration_8_upgrades_an_old_database_and_old_rows_read_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrations()
    assert shipped[NOT_SCORABLE_VERSION - 1].name == "not_scorable"
    monkeypatch.setattr(server_db, "migrations", lambda: shipped[: NOT_SCORABLE_VERSION - 1])
    db = connect(tmp_path / "s.db")
    db.execute("INSERT INTO models (id, sha256) VALUES (1, 'ab')")
    db.execute(
        "INSERT INTO score_windows (device, box, seq, window_start, window_end, frames, valid_eyes, "
        "face_visible_fraction, model_id, received_at) VALUES ('rack1', 0, 1, 60, 61, 5, 0, 0, 1, 62)"
    )
    db.execute("INSERT INTO boxes (device, box, last_seq, last_window_end) VALUES ('rack1', 0, 1, 61)")
    db.execute(
        "INSERT INTO rollup_minute (device, box, bucket, windows, face_windows, score_sum) VALUES ('rack1', 0, 60, 1, 0, 0)"
    )
    db.conn.commit()
    monkeypatch.setattr(server_db, "migrations", lambda: shipped)
    assert server_db.migrate(db) == list(range(NOT_SCORABLE_VERSION, len(shipped) + 1))
    assert db.execute("SELECT abstained_eyes FROM score_windows").fetchall() == [(0,)]
    assert db.execute("SELECT last_abstained_eyes FROM boxes").fetchall() == [(0,)]
    assert db.execute("SELECT not_scorable_windows FROM rollup_minute").fetchall() == [(0,)]
    points = Repository(db).box_scores("rack1", 0, 0, 120, "raw")["points"]
    assert [(p["mean"], p["abstained_eyes"], p["not_scorable_windows"]) for p in points] == [(None, 0, 0)]


def test_not_scorable_windows_are_counted_in_the_box_state_and_the_rollups(app: Flask) -> None:
    store(app, window(seq=1, t=T0, score=2.0), unsure(window(seq=2, t=T0 + 1)), window(seq=3, t=T0 + 2, score=None))
    store(app, unsure(window(seq=4, t=T0 + 3), eyes=1))  # a second batch adds to the same buckets
    db = connect(app.config["DATABASE"])
    try:
        assert db.execute("SELECT seq, abstained_eyes FROM score_windows ORDER BY seq").fetchall() == [
            (1, 0),
            (2, 3),
            (3, 0),
            (4, 1),
        ]
        for table in ("rollup_minute", "rollup_hour"):
            row = db.execute(f"SELECT SUM(windows), SUM(face_windows), SUM(not_scorable_windows) FROM {table}")
            assert row.fetchone() == (4, 1, 2), table
        assert db.execute("SELECT last_seq, last_score, last_abstained_eyes FROM boxes").fetchall() == [(4, None, 1)]
    finally:
        db.conn.close()
    store(app, window(seq=5, t=T0 + 4, score=None))
    assert [(b["last_seq"], b["last_abstained_eyes"]) for b in repo_call(app, "boxes", T0 + 5)] == [(5, 0)]


def test_a_video_import_stores_abstained_eyes_and_an_older_result_json_stores_0(app: Flask) -> None:
    def result(fingerprint: str, extra: dict[str, Any]) -> dict[str, Any]:
        base = {"frames": 10, "valid_eyes": 0, "score": None, "median": None, "p90": None, "face_visible_fraction": 0.0}
        return {
            "fingerprint": fingerprint,
            "start": "2026-05-01T08:00:00Z",
            "window_s": 1.0,
            "model_sha256": SHA,
            "windows": [{"box": 0, "index": 0, "t_start_s": 0, "t_end_s": 1, **base, **extra}],
        }

    db = connect(app.config["DATABASE"])
    try:
        repo = Repository(db)
        new = store_import(repo, result("e" * 64, {"abstained_eyes": 4}), "olga")
        old = store_import(repo, result("f" * 64, {}), "olga")
        stored = dict(db.execute("SELECT device, abstained_eyes FROM score_windows").fetchall())
        assert stored == {new.device: 4, old.device: 0}
        assert db.execute("SELECT SUM(not_scorable_windows) FROM rollup_minute").fetchone() == (1,)
        with pytest.raises(Exception, match="abstained_eyes"):
            store_import(repo, result("0" * 64, {"abstained_eyes": -1}), "olga")
    finally:
        db.conn.close()


def test_a_not_scorable_window_published_over_mqtt_is_stored_and_served(broker: Any, tmp_path: Path) -> None:
    app = make_app(tmp_path)
    db_path = Path(app.config["DATABASE"])
    messages = [
        score_message(unsure(window(box=0, seq=1, t=T0), eyes=3)),
        score_message(window(box=1, seq=2, t=T0, score=None)),
        (score_topic("rack1", 2), legacy_payload(unsure(window(box=2, seq=3, t=T0), eyes=2))),
        (score_topic("rack1", 3), legacy_payload(window(box=3, seq=4, t=T0, score=4.5))),
    ]
    with running_worker(broker, db_path) as worker:
        publish(broker, messages)
        wait_for(lambda: worker.stats().get("stored", 0) >= 4, what="the four windows to be stored")
    assert worker.stats().get("rejected", 0) == 0
    client, headers = app.test_client(), bearer(app)
    served = {}
    for box in range(4):
        body = client.get(f"/api/v1/boxes/rack1/{box}/scores?start={T0 - 10}&end={T0 + 10}", headers=headers)
        (point,) = body.get_json()["points"]
        served[box] = (point["mean"], point["abstained_eyes"], point["not_scorable_windows"])
    assert served == {0: (None, 3, 1), 1: (None, 0, 0), 2: (None, 0, 0), 3: (4.5, 0, 0)}
    minute = client.get(
        f"/api/v1/boxes/rack1/0/scores?start={T0 - 10}&end={T0 + 10}&resolution=minute", headers=headers
    )
    assert [(p["mean"], p["not_scorable_windows"]) for p in minute.get_json()["points"]] == [(None, 1)]
    boxes = client.get("/api/v1/boxes", headers=headers).get_json()["boxes"]
    assert [(b["box"], b["last_score"], b["last_abstained_eyes"]) for b in boxes] == [
        (0, None, 3),
        (1, None, 0),
        (2, None, 0),
        (3, 4.5, 0),
    ]


# --- exports ---------------------------------------------------------------------------------------


def test_exports_carry_abstained_eyes_and_not_scorable_windows(app: Flask) -> None:
    store(
        app,
        window(seq=1, t=T0, score=2.0),
        unsure(window(seq=2, t=T0 + 1), eyes=3),
        window(seq=3, t=T0 + 2, score=None),
    )
    client, headers = app.test_client(), bearer(app)
    query = f"scope=box:rack1/0&start={T0}&end={T0 + 60}"
    rows = list(csv.DictReader(io.StringIO(client.get(f"/api/v1/export?{query}&format=csv", headers=headers).text)))
    assert [(r["seq"], r["score"], r["abstained_eyes"]) for r in rows] == [
        ("1", "2.0", "0"),
        ("2", "", "3"),
        ("3", "", "0"),
    ]
    windows = client.get(f"/api/v1/export?{query}&format=json", headers=headers).get_json()["windows"]
    assert [(w["score"], w["abstained_eyes"]) for w in windows] == [(2.0, 0), (None, 3), (None, 0)]

    viewer = logged_in(app, "viewer", "vic")
    for resolution in ("second", "minute", "hour", "day"):
        download = viewer.get(
            "/export/download",
            query_string={"scope": "box:rack1/0", "start": str(T0 - 60), "end": str(T0 + 60), "resolution": resolution},
        ).data.decode("utf-8-sig")
        rows = list(csv.DictReader(io.StringIO(download)))
        if resolution == "second":
            assert [r["abstained_eyes"] for r in rows] == ["0", "3", "0"]
        else:
            assert [(r["windows"], r["face_windows"], r["not_scorable_windows"]) for r in rows] == [("3", "1", "1")]


# --- what the dashboard shows ------------------------------------------------------------------------


def test_box_state_tells_not_scorable_from_no_face() -> None:
    config = DashboardConfig(stale_after_s=60)
    row = {"last_window_end": 1.0, "age_s": 5.0, "ahead_s": 0.0, "alert": None, "last_score": None}
    assert box_state({**row, "last_abstained_eyes": 0}, config) == "noface"
    assert box_state({**row, "last_abstained_eyes": 2}, config) == "notscorable"
    assert box_state({**row, "last_abstained_eyes": 2, "last_score": 3.0}, config) == "ok"  # some eyes scored
    assert box_state({**row, "last_abstained_eyes": 2, "age_s": 61.0}, config) == "stale"
    assert box_state({**row, "last_abstained_eyes": 2, "alert": "raised"}, config) == "alert"


def test_tiles_read_not_scorable_with_its_reason_and_never_a_score(app: Flask) -> None:
    store(
        app,
        unsure(recent_window(box=0, seq=1)),
        recent_window(box=1, seq=2, score=None),
        replace(recent_window(box=2, seq=3, score=5.5), abstained_eyes=1),
    )
    page = logged_in(app, "viewer").get("/").get_data(as_text=True)
    unscorable, hidden, scored = (_tile(page, f"rack1/{box}") for box in range(3))
    assert 'data-state="notscorable"' in unscorable and "not scorable" in unscorable
    assert f'title="{NOT_SCORABLE_HELP}"' in unscorable
    assert "no face visible" not in unscorable and 'class="score"' not in unscorable
    assert 'data-state="noface"' in hidden and "no face visible" in hidden and "not scorable" not in hidden
    assert 'data-state="high"' in scored and ">5.5<" in scored and "not scorable" not in scored
    assert "not scorable" in page.split('id="legend"')[1].split("</details>")[0]


def test_history_page_and_report_explain_not_scorable(app: Flask) -> None:
    mouse = repo_call(app, "create_animal", "M-9")
    now = time.time()
    hour = (now - 600) // 3600 * 3600  # the report of a week is drawn from hour buckets
    repo_call(app, "create_assignment", mouse, "rack1", 0, hour - 3 * 3600)
    store(app, window(seq=1, t=hour - 2 * 3600, score=2.0), *[unsure(window(seq=i, t=hour + i)) for i in range(2, 7)])
    viewer = logged_in(app, "viewer")
    history = viewer.get("/boxes/rack1/0").get_data(as_text=True)
    assert f'data-not-scorable-help="{NOT_SCORABLE_HELP}"' in history
    report = viewer.get(f"/animals/{mouse}/report").get_data(as_text=True)
    scores = re.search(r"<th>Scores</th><td>(.*?)</td>", report, re.S)
    assert scores and "not scorable</b> in 5 windows" in scores.group(1) and "face visible in 1 of 6" in scores.group(1)
    assert len(re.findall(r'<line [^>]*class="notscorable"', report)) == 1  # one bucket without a score
