"""Uploading recorded videos: limits, roles, and the queue across a server restart.

The upload end to end in a browser is tests/test_video_upload_browser.py.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from server.app import create_app
from server.config import DatabaseConfig, ServerConfig
from server.db import connect, transaction
from server.repository import Repository
from server.video_jobs import VideosConfig, job, submit
from tests.conftest import wait_for
from tests.web_support import add_user, csrf, login, make_app


def repo_call_on(app: Any, call: Any) -> Any:
    db = connect(app.config["DATABASE"])
    try:
        return call(Repository(db))
    finally:
        db.conn.close()


def test_uploads_over_the_limit_and_from_viewers_are_refused(tmp_path: Path) -> None:
    config = ServerConfig(database=DatabaseConfig(path=tmp_path / "server.sqlite"), videos=VideosConfig(max_upload_mb=1))
    app = create_app(config, {"TESTING": True, "SECRET_KEY": "test-secret-" + "x" * 32})
    add_user(app, "olga", "officer")
    add_user(app, "vic", "viewer")
    client = app.test_client()
    assert login(client, "olga").status_code == 302
    big = io.BytesIO(b"\0" * (2 * 1024 * 1024))
    response = client.post("/videos", data={"csrf_token": csrf(client), "video": (big, "big.mp4")},
                           content_type="multipart/form-data", follow_redirects=True)
    assert "larger than 1 MiB" in response.get_data(as_text=True)
    assert not list((tmp_path / "videos").rglob("*.mp4")), "a refused upload leaves no file behind"
    viewer = app.test_client()
    assert login(viewer, "vic").status_code == 302
    response = viewer.post("/videos", data={"csrf_token": csrf(viewer), "video": (io.BytesIO(b"x"), "a.mp4")},
                           content_type="multipart/form-data")
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
