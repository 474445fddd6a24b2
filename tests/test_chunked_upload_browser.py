"""A video and a model set larger than `[http] max_request_kb` uploaded through the pages, in a real
headless Chromium against a real `mgs-server run` whose request limit is 64 KiB: the pages' script
sends them in pieces (server/static/chunked_upload.js), so the files arrive whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from export.cli import main as export_main
from server import auth
from server.db import connect
from tests.conftest import Broker
from tests.model_set_support import build_set
from tests.test_browser import TIMEOUT_MS, Server, browser, expect  # noqa: F401  (fixtures)
from tests.test_chunked_upload import LIMIT_KB, limited_config
from tests.web_support import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def server(tmp_path: Path, broker: Broker) -> Iterator[Server]:
    """tests/test_browser.py's server (an officer olga), started with the 64 KiB request limit."""
    s = Server(tmp_path, broker, write=limited_config)
    try:
        yield s
    finally:
        s.stop()


def _page(browser: Any, server: Server, username: str) -> Any:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text(username)
    return page


def test_a_video_over_the_request_limit_is_uploaded_and_queued(browser: Any, server: Server, tmp_path: Path) -> None:  # noqa: F811
    video = tmp_path / "long-cage-cam.mp4"
    assert export_main(["synth-video", "--seconds", "2", "--fps", "5", "--out", str(video), "--quiet"]) == 0
    assert video.stat().st_size > 4 * LIMIT_KB * 1024
    page = _page(browser, server, "olga")
    page.goto(f"{server.url}/videos")
    page.set_input_files("input[name=video]", str(video))
    page.fill("input[name=animal_2]", "M7")
    page.click("#upload-form button[type=submit]")
    expect(page.locator("h1")).to_have_text("long-cage-cam.mp4")
    expect(page.locator("#job-state")).to_be_visible()
    uploads = tmp_path / "videos"
    stored = list(uploads.rglob("long-cage-cam.mp4"))
    assert len(stored) == 1 and stored[0].read_bytes() == video.read_bytes()
    assert list((uploads / ".partial-uploads").iterdir()) == []
    page.context.close()


def test_a_model_set_over_the_request_limit_is_registered(browser: Any, server: Server, tmp_path: Path) -> None:  # noqa: F811
    db = connect(server.db_path)
    try:
        auth.create_user(db, "ada", PASSWORD, "admin")
    finally:
        db.conn.close()
    model_set = build_set(tmp_path)
    assert model_set.stat().st_size > 4 * LIMIT_KB * 1024
    page = _page(browser, server, "ada")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(f"{r.method} {r.url}") if "/api/v1/uploads/" in r.url else None)
    cut = []

    def cut_the_second_piece_once(route: Any) -> None:
        if "offset=0" not in route.request.url and not cut:
            cut.append(route.request.url)
            route.abort("connectionreset")  # the network fails: the page must ask the server and resume
        else:
            route.continue_()

    page.route("**/api/v1/uploads/model_set/*", cut_the_second_piece_once)
    page.goto(f"{server.url}/models")
    page.set_input_files("input[name=set]", str(model_set))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-result")).to_contain_text("Version v2 registered")
    assert len(cut) == 1
    assert any(a.startswith("GET ") for a in asked)  # it asked how much the server holds
    assert [a for a in asked if a.startswith("PUT ")].count(f"PUT {cut[0]}") == 2  # and sent that piece again
    expect(page.locator("#versions-table tr[data-version=v2]")).to_contain_text("0.930")  # after the reload
    assert list((tmp_path / "model-sets" / ".partial-uploads").iterdir()) == []
    page.context.close()
