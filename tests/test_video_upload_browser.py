"""Uploading a recorded video on the dashboard, end to end: queued, scored by the server, result shown.

Drives the real `mgs-server run` process in a headless Chromium, with the fixtures of
tests/test_browser.py (a real broker, an officer login).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from export.cli import main as export_main
from tests.test_browser import browser, expect, page, screenshot, server  # noqa: F401, F811  (fixtures)

pytestmark = pytest.mark.browser

SCORING_TIMEOUT_MS = 120_000


def test_an_officer_uploads_a_video_and_sees_the_scores(page: Any, server: Any, tmp_path: Path) -> None:  # noqa: F811
    video = tmp_path / "cage-cam.mp4"
    assert (
        export_main(["synth-video", "--seconds", "2", "--fps", "5", "--out", str(video), "--seed", "4", "--quiet"]) == 0
    )
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
    expect(page.locator("#recordings")).to_contain_text("cage-cam.mp4")
    expect(page.locator("#plot .legend")).to_contain_text("imported recording: cage-cam.mp4")
    page.goto(f"{server.url}/videos")
    expect(page.locator("#imports")).to_contain_text("M11")
    expect(page.locator("#jobs")).to_contain_text("done")
    history = server.repo_call(
        "animal_scores", next(a["id"] for a in server.repo_call("animals") if a["name"] == "M11"), 0, 4e9, "raw"
    )
    assert len(history["points"]) == 2 and all(p["device"].startswith("rec-") for p in history["points"])
