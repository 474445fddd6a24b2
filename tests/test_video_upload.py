"""Uploading a recorded video on the dashboard: queued, scored by the server's worker, result shown.

The end-to-end test drives the real `mgs-server run` process in a headless Chromium (fixtures of
tests/test_browser.py); the limits are checked through Flask's test client.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest

from export.cli import main as export_main
from server.app import create_app
from server.config import DatabaseConfig, ServerConfig
from server.db import connect, transaction
from server.repository import Repository
from server.video_jobs import VideosConfig, job, submit
from tests.conftest import wait_for
from tests.test_browser import TIMEOUT_MS, browser, expect, page, screenshot, server  # noqa: F401  (fixtures)
from tests.web_support import add_user, csrf, login, make_app

SCORING_TIMEOUT_MS = 120_000


def repo_call_on(app: Any, call: Any) -> Any:
    db = connect(app.config["DATABASE"])
    try:
        return call(Repository(db))
    finally:
        db.conn.close()


@pytest.mark.browser
def test_an_officer_uploads_a_video_and_sees_the_scores(page: Any, server: Any, tmp_path: Path) -> None:
    video = tmp_path / "cage-cam.mp4"
    assert export_main(["synth-video", "--seconds", "2", "--fps", "5", "--out", str(video), "--seed", "4", "--quiet"]) == 0
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("these are my notes, not a video")

    page.goto(f"{server.url}/videos")
    page.set_input_files("input[name=video]", str(not_video))
    page.click("#upload-form button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("notes.mp4 is not a video this server can read")

    page.set_input_files("input[name=video]", str(video))
    page.fill("input[name=animal_1]", "M11")
    page.fill("input[name=group]", "buprenorphine")
    page.click("#upload-form button[type=submit]")
    expect(page.locator("h1")).to_have_text("cage-cam.mp4")
    expect(page.locator("#job-state")).to_have_text("done", timeout=SCORING_TIMEOUT_MS)
    expect(page.locator("#result-boxes")).to_contain_text("M11")
    assert page.locator("#result-boxes tbody tr").count() == 4
    plot = page.locator("#result img")
    expect(plot).to_be_visible()
    page.wait_for_function("document.querySelector('#result img').naturalWidth > 0")
    screenshot(page, tmp_path, "video-result.png")

    page.click("#result-boxes a:has-text('M11')")
    expect(page).to_have_url(re.compile(r"/animals/\d+$"))
    page.goto(f"{server.url}/videos")
    expect(page.locator("#imports")).to_contain_text("M11")
    expect(page.locator("#jobs")).to_contain_text("done")
    history = server.repo_call("animal_scores", next(a["id"] for a in server.repo_call("animals") if a["name"] == "M11"),
                               0, 4e9, "raw")
    assert len(history["points"]) == 2 and all(p["device"].startswith("rec-") for p in history["points"])


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
