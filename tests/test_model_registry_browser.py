"""The Models page and the history chart's model marks in a real headless Chromium, against the real
`mgs-server run` of tests/test_browser.py: an admin uploads a corrupted set (refused, saying what is
wrong) and a good one (registered, listed), and a box whose windows changed model shows the change
as a labelled line on its history chart."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from server import auth
from server.db import connect
from server.store import IngestStore
from tests.ingest_support import window
from tests.model_set_support import build_set
from tests.test_browser import TIMEOUT_MS, browser, expect, screenshot, server  # noqa: F401  (fixtures)
from tests.web_support import PASSWORD

pytestmark = pytest.mark.browser


@pytest.fixture
def admin_page(browser: Any, server: Any) -> Any:  # noqa: F811
    db = connect(server.db_path)
    try:
        auth.create_user(db, "ada", PASSWORD, "admin")
    finally:
        db.conn.close()
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", "ada")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text("ada")
    try:
        yield page
    finally:
        context.close()


def _corrupt(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / "seg_fine.int8.onnx"
    path.write_bytes(path.read_bytes()[:-1] + b"\0")


def test_an_admin_uploads_sets_and_sees_the_verdict(admin_page: Any, server: Any, tmp_path: Path) -> None:  # noqa: F811
    page = admin_page
    page.click("header nav a:has-text('Models')")
    page.set_input_files("input[name=set]", str(build_set(tmp_path / "bad", hook=_corrupt)))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-result")).to_contain_text("Refused: seg_fine.int8.onnx: sha256 ")
    expect(page.locator("#upload-result")).to_contain_text("does not match the manifest's")
    page.set_input_files("input[name=set]", str(build_set(tmp_path)))
    page.click("#upload-form button[type=submit]")
    expect(page.locator("#upload-result")).to_contain_text("Version v2 registered")
    expect(page.locator("#versions-table tr[data-version=v2]")).to_contain_text("0.930")  # after the reload
    screenshot(page, tmp_path, "models.png")


def test_the_history_chart_marks_a_change_of_model(admin_page: Any, server: Any, tmp_path: Path) -> None:  # noqa: F811
    start = time.time() - 120
    windows = [window("rack1", 0, seq=i, t=start + i) for i in range(20)]
    for w in windows[10:]:
        w.model_version = "v2"
    db = connect(server.db_path)
    try:
        store = IngestStore(db)
        with store.write():
            store.store_windows(windows, time.time())
    finally:
        db.conn.close()
    page = admin_page
    page.goto(f"{server.url}/boxes/rack1/0")
    expect(page.locator("#plot")).to_have_attribute("data-model-changes", "1")
    expect(page.locator("#plot .annotation-text").filter(has_text="model: v2")).to_have_count(1)
    screenshot(page, tmp_path, "history-model-change.png")
