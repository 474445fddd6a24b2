"""`mgs-device score --server`: windows of a recorded video land in the animal's history, once.

The server runs for real (the Flask app in a werkzeug server thread over a real SQLite file); the
CLI talks to it over HTTP with an officer's API token, as a researcher's PC would.
"""

from __future__ import annotations

import csv
import io
import json
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server

from device.cli import main as device_main
from export.cli import main as export_main
from mgs_core.messages import parse_utc_iso
from server.db import connect
from server.repository import Repository
from server.video_imports import store_import
from tests.ingest_support import window
from tests.web_support import add_token, add_user, logged_in, make_app, repo_call, store

SECONDS, FPS = 4, 10


@pytest.fixture
def live(tmp_path: Path) -> Iterator[dict[str, Any]]:
    app = make_app(tmp_path)
    officer = add_token(app, add_user(app, "olga", "officer"))
    viewer = add_token(app, add_user(app, "vic", "viewer"))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield {"app": app, "url": f"http://127.0.0.1:{server.server_port}", "officer": officer, "viewer": viewer}
    finally:
        server.shutdown()
        thread.join(timeout=10)


def _post(url: str, token: str, body: Any) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _windows(app: Any, device: str) -> int:
    from server.db import connect

    db = connect(app.config["DATABASE"])
    try:
        return db.execute("SELECT COUNT(*) FROM score_windows WHERE device = ?", [device]).fetchone()[0]
    finally:
        db.conn.close()


def test_importing_twice_stores_every_window_once_and_files_it_under_the_animal(tmp_path: Path, live, capsys) -> None:
    video = tmp_path / "day3.mp4"
    assert (
        export_main(
            [
                "synth-video",
                "--seconds",
                str(SECONDS),
                "--fps",
                str(FPS),
                "--out",
                str(video),
                "--seed",
                "21",
                "--quiet",
            ]
        )
        == 0
    )
    animals = tmp_path / "animals.csv"
    animals.write_text("video,box,animal,group,timepoint,start\nday3.mp4,2,M07,meloxicam,day 3,2026-05-01T08:00:00Z\n")
    args = [
        "score",
        str(video),
        "--out",
        str(tmp_path / "out"),
        "--animals",
        str(animals),
        "--jobs",
        "1",
        "--server",
        live["url"],
        "--token",
        live["officer"],
    ]
    assert device_main(args) == 0
    first = capsys.readouterr().out
    result = json.loads((tmp_path / "out" / "day3" / "result.json").read_text())
    device = "rec-" + result["fingerprint"][:20]
    assert f"{4 * SECONDS} window(s) stored" in first
    assert _windows(live["app"], device) == 4 * SECONDS

    assert device_main(args) == 0  # the same video again: nothing new
    assert f"0 window(s) stored, {4 * SECONDS} already there" in capsys.readouterr().out
    assert _windows(live["app"], device) == 4 * SECONDS

    animal = next(a for a in repo_call(live["app"], "animals") if a["name"] == "M07")
    start = parse_utc_iso("2026-05-01T08:00:00Z")
    history = repo_call(live["app"], "animal_scores", animal["id"], start - 60, start + 60, "raw")
    assert [p["device"] for p in history["points"]] == [device] * SECONDS
    assert [p["box"] for p in history["points"]] == [2] * SECONDS
    csv_scores = [w["score"] for w in result["windows"] if w["box"] == 2]
    assert [p["mean"] for p in history["points"]] == csv_scores
    abstained = [w["abstained_eyes"] for w in result["windows"] if w["box"] == 2]
    assert [p["abstained_eyes"] for p in history["points"]] == abstained
    assert device not in {d["name"] for d in repo_call(live["app"], "devices")}, "a recording is not a live rack"

    request = urllib.request.Request(
        live["url"] + "/api/v1/imports", headers={"Authorization": f"Bearer {live['viewer']}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        imports = json.loads(response.read())["imports"]
    assert [(i["device"], i["source"], i["video_name"], i["imported_by"]) for i in imports] == [
        (device, "api", "day3.mp4", "olga")
    ]
    assert [(b["box"], b["animal_name"], b["group_name"], b["timepoint"]) for b in imports[0]["boxes"]][2] == (
        2,
        "M07",
        "meloxicam",
        "day 3",
    )


def test_import_needs_an_officer_and_a_valid_result(live) -> None:
    url = live["url"] + "/api/v1/imports"
    code, body = _post(url, live["viewer"], {})
    assert code == 403 and "officer" in body["error"]
    code, body = _post(
        url,
        live["officer"],
        {
            "fingerprint": "f" * 64,
            "start": "2026-05-01T08:00:00Z",
            "window_s": 1.0,
            "model_sha256": "a" * 64,
            "windows": [
                {
                    "box": 0,
                    "index": 0,
                    "t_start_s": 0,
                    "t_end_s": 1,
                    "frames": 10,
                    "valid_eyes": 0,
                    "score": 3.0,
                    "median": 3.0,
                    "p90": 3.0,
                    "face_visible_fraction": 0.0,
                }
            ],
        },
    )
    assert code == 400 and "windows[0]" in body["error"] and "valid_eyes" in body["error"]
    code, body = _post(url, live["officer"], {"fingerprint": "not a hash"})
    assert code == 400 and "sha256" in body["error"]


def result_window(box: int, i: int) -> dict[str, Any]:
    """Window `i` (one second, score 5) of `box`, as result.json holds it."""
    return {
        "box": box,
        "index": i,
        "t_start_s": i,
        "t_end_s": i + 1,
        "frames": 10,
        "valid_eyes": 20,
        "score": 5.0,
        "median": 5.0,
        "p90": 5.5,
        "face_visible_fraction": 1.0,
    }


def _result(fingerprint: str, start: str, video: str, animal: str, box: int = 1, n: int = 5) -> dict[str, Any]:
    """A result.json as `mgs-device score` writes it: `n` one-second windows of one box."""
    return {
        "fingerprint": fingerprint,
        "video": video,
        "start": start,
        "window_s": 1.0,
        "model_sha256": "a" * 64,
        "boxes": [{"box": box, "animal": animal}],
        "windows": [result_window(box, i) for i in range(n)],
    }


def test_an_imported_recording_is_marked_in_the_history_and_the_exports(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    mouse = repo_call(app, "create_animal", "M07")
    t0 = parse_utc_iso("2026-05-01T08:00:00Z")
    repo_call(app, "create_assignment", mouse, "rack1", 0, t0 - 3600, t0 - 60)
    store(app, *[window("rack1", 0, i, t0 - 600 + i, 2.0) for i in range(3)])
    db = connect(app.config["DATABASE"])
    try:
        outcome = store_import(Repository(db), _result("e" * 64, "2026-05-01T08:00:00Z", "day3.mp4", "M07"), "olga")
    finally:
        db.conn.close()
    client = logged_in(app, "viewer")
    span = f"start={t0 - 3600}&end={t0 + 3600}"

    scores = client.get(f"/api/v1/animals/{mouse}/scores?{span}&resolution=raw").get_json()
    assert [(p["device"], p["source"]) for p in scores["points"]] == [("rack1", "live")] * 3 + [
        (outcome.device, "imported")
    ] * 5
    [recording] = scores["recordings"]
    assert (recording["video"], recording["box"], recording["imported_by"], recording["source"]) == (
        "day3.mp4",
        1,
        "olga",
        "api",
    )
    before = client.get(f"/api/v1/animals/{mouse}/scores?start={t0 - 3600}&end={t0 - 60}").get_json()
    assert before["recordings"] == [], "only the recordings in the range are listed"

    page = client.get(f"/animals/{mouse}").get_data(as_text=True)
    row = re.search(rf'<tr data-recording="{outcome.device}">(.*?)</tr>', page, re.S)
    assert row is not None and "day3.mp4" in row.group(1) and "olga" in row.group(1)

    exported = client.get(f"/api/v1/export?scope=animal:{mouse}&{span}").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [(r["device"], r["source"]) for r in rows] == [("rack1", "live")] * 3 + [(outcome.device, "imported")] * 5
    download = client.get(
        "/export/download",
        query_string={
            "scope": f"animal:{mouse}",
            "start": str(t0 - 3600),
            "end": str(t0 + 3600),
            "resolution": "minute",
        },
    ).data.decode("utf-8-sig")
    summaries = list(csv.DictReader(io.StringIO(download)))
    assert {(r["device"], r["source"]) for r in summaries} == {("rack1", "live"), (outcome.device, "imported")}
