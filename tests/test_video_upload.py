"""Uploading recorded videos: limits, roles, the scoring child process, and the queue across a restart.

The upload end to end in a browser is tests/test_video_upload_browser.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from export.cli import main as export_main
from mgs_core.messages import utc_iso
from server.app import create_app
from server.config import DatabaseConfig, ServerConfig
from server.db import connect, transaction
from server.repository import Repository
from server.video_jobs import VideosConfig, VideoWorker, job, submit
from tests.conftest import wait_for
from tests.web_support import add_user, csrf, login, make_app

START = 1_772_615_700.25  # 2026-03-04T09:15:00.250Z


def repo_call_on(app: Any, call: Any) -> Any:
    db = connect(app.config["DATABASE"])
    try:
        return call(Repository(db))
    finally:
        db.conn.close()


def test_uploads_over_the_limit_and_from_viewers_are_refused(tmp_path: Path) -> None:
    config = ServerConfig(
        database=DatabaseConfig(path=tmp_path / "server.sqlite"), videos=VideosConfig(max_upload_mb=1)
    )
    app = create_app(config, {"TESTING": True, "SECRET_KEY": "test-secret-" + "x" * 32})
    add_user(app, "olga", "officer")
    add_user(app, "vic", "viewer")
    client = app.test_client()
    assert login(client, "olga").status_code == 302
    big = io.BytesIO(b"\0" * (2 * 1024 * 1024))
    response = client.post(
        "/videos",
        data={"csrf_token": csrf(client), "video": (big, "big.mp4")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    assert "larger than 1 MiB" in response.get_data(as_text=True)
    assert not list((tmp_path / "videos").rglob("*.mp4")), "a refused upload leaves no file behind"
    viewer = app.test_client()
    assert login(viewer, "vic").status_code == 302
    response = viewer.post(
        "/videos",
        data={"csrf_token": csrf(viewer), "video": (io.BytesIO(b"x"), "a.mp4")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403
    assert "Upload a video" not in viewer.get("/videos").get_data(as_text=True)


def test_a_video_interrupted_by_a_restart_is_taken_up_again(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    gone = tmp_path / "videos" / "x" / "lost.mp4"

    def interrupted(repo: Repository) -> int:
        job_id = submit(repo, "lost.mp4", gone, 123, {}, None, "olga")
        with transaction(repo.db) as conn:
            conn.execute("UPDATE video_jobs SET state = 'running' WHERE id = ?", [job_id])
        return job_id

    job_id = repo_call_on(app, interrupted)
    restarted = make_app(tmp_path)  # as `mgs-server run` after a stop: the worker starts by itself

    def state() -> dict[str, Any] | None:
        row = repo_call_on(restarted, lambda repo: job(repo, job_id))
        return row if row["state"] == "failed" else None

    row = wait_for(state, timeout=30, what="the interrupted video to be taken up again")
    assert "no such file" in row["message"]


def _app(tmp_path: Path, **videos: Any) -> Any:
    config = ServerConfig(database=DatabaseConfig(path=tmp_path / "server.sqlite"), videos=VideosConfig(**videos))
    return create_app(config, {"TESTING": True, "SECRET_KEY": "test-secret-" + "x" * 32})


def _queue_video(app: Any, tmp_path: Path, animals: dict[int, dict[str, str]], start: float | None) -> int:
    """A generated rack video queued as an upload (its own folder, as `uploads` makes it)."""
    video = tmp_path / "videos" / "upload1" / "cage-cam.mp4"
    video.parent.mkdir(parents=True)
    assert (
        export_main(["synth-video", "--seconds", "2", "--fps", "5", "--out", str(video), "--seed", "4", "--quiet"]) == 0
    )
    job_id = repo_call_on(
        app, lambda repo: submit(repo, video.name, video, video.stat().st_size, animals, start, "olga")
    )
    app.extensions["mgs_videos"].wake()
    return job_id


def _finished(app: Any, job_id: int) -> dict[str, Any]:
    def state() -> dict[str, Any] | None:
        row = repo_call_on(app, lambda repo: job(repo, job_id))
        return row if row["state"] in ("done", "failed") else None

    return wait_for(state, timeout=120, what=f"video job {job_id} to finish")  # type: ignore[return-value]


def test_the_scoring_child_gets_the_animals_and_start_and_its_result_is_imported(tmp_path: Path) -> None:
    app = _app(tmp_path, threads=1)
    animals = {1: {"animal": "M11", "group": "bup, 0.1 mg/kg", "timepoint": "day 1"}}
    row = _finished(app, _queue_video(app, tmp_path, animals, START))
    assert row["state"] == "done", row["message"]
    assert row["frames_done"] == row["frames_total"] == 10
    result = json.loads((Path(row["result_dir"]) / "result.json").read_text())
    assert result["start"] == utc_iso(START)
    box = result["boxes"][1]
    assert (box["animal"], box["group"], box["timepoint"]) == ("M11", "bup, 0.1 mg/kg", "day 1")
    assert [b["animal"] for b in result["boxes"]] == ["", "M11", "", ""]
    assert row["import_id"] is not None
    history = repo_call_on(app, lambda repo: repo.animals())
    assert [a["name"] for a in history] == ["M11"]


def test_a_scorer_error_is_the_jobs_message(tmp_path: Path) -> None:
    missing = tmp_path / "no-models-here"
    app = _app(tmp_path, models_dir=missing)
    row = _finished(app, _queue_video(app, tmp_path, {}, None))
    assert row["state"] == "failed"
    assert row["message"].startswith("cage-cam.mp4: ") and str(missing) in row["message"], row["message"]


def test_stopping_the_server_kills_the_scorer_and_leaves_the_job_to_the_restart(tmp_path: Path) -> None:
    app = _app(tmp_path, threads=1)
    job_id = _queue_video(app, tmp_path, {}, None)
    worker: VideoWorker = app.extensions["mgs_videos"]
    child = wait_for(lambda: worker._child, timeout=30, what="the scoring child to start")
    worker.stop()
    assert child.poll() is not None  # type: ignore[attr-defined]
    assert worker._thread is not None
    worker._thread.join(timeout=30)
    assert not worker._thread.is_alive()
    assert repo_call_on(app, lambda repo: job(repo, job_id))["state"] == "running"
