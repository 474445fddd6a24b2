"""The dashboard in a real headless Chromium, against the real server process and a real broker.

Scores are published over MQTT exactly as a device publishes them; the test waits for the page to
show them (Playwright's auto-waiting `expect`, no sleeps). Screenshots are kept in the test's tmp
folder and, when MGS_SCREENSHOT_DIR is set, copied there (that is how docs/img/dashboard.png is made:
`MGS_SCREENSHOT_DIR=docs/img pytest tests/test_browser.py`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mgs_core.messages import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    BoxAlert,
    alert_topic,
    availability_topic,
    status_topic,
    utc_iso,
)
from server import auth
from server.db import connect
from server.repository import Repository
from tests.conftest import Broker, free_port, wait_for
from tests.ingest_support import publish, score_message, window
from tests.test_server_run import http_status, write_config
from tests.web_support import PASSWORD, status

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 20_000

if not CHROMIUM.exists():
    pytest.skip(
        "/usr/bin/chromium is missing (Debian package 'chromium'); browser tests need it", allow_module_level=True
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install .[dev])")
expect = sync_api.expect


class Server:
    """`mgs-server run` as a child process, with an officer login and a helper to publish."""

    def __init__(
        self,
        tmp_path: Path,
        broker: Broker,
        users: tuple[tuple[str, str], ...] = (("olga", "officer"),),
        write: Callable[[Path, int, int], Path] = write_config,
    ) -> None:
        self.broker = broker
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = write(tmp_path, broker.port, self.port)
        self.db_path = tmp_path / "server.sqlite"
        db = connect(self.db_path)
        try:
            for name, role in users:
                auth.create_user(db, name, PASSWORD, role)
        finally:
            db.conn.close()
        self.log = open(tmp_path / "server.log", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "run", "--config", str(self.config)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(
            lambda: http_status(f"{self.url}/login") == 200 or self.proc.poll() is not None,
            timeout=30,
            what="the server to answer",
        )
        assert self.proc.poll() is None, (tmp_path / "server.log").read_text()

    def repo_call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        db = connect(self.db_path)
        try:
            return getattr(Repository(db), method)(*args, **kwargs)
        finally:
            db.conn.close()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


@pytest.fixture
def server(tmp_path: Path, broker: Broker) -> Iterator[Server]:
    s = Server(tmp_path, broker)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any, server: Server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 820}, timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    p = context.new_page()
    p.goto(f"{server.url}/login")
    p.fill("input[name=username]", "olga")
    p.fill("input[name=password]", PASSWORD)
    p.click("button[type=submit]")
    expect(p.locator("header .who")).to_contain_text("olga")
    try:
        yield p
    finally:
        context.close()


def screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path))
    target = os.environ.get("MGS_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / name)
    return path


def _seq() -> Iterator[int]:
    n = 0
    while True:
        n += 1
        yield n


def publish_facility(server: Server) -> None:
    """A realistic morning: two racks, four animals, one rising after surgery, one rack gone quiet."""
    now = time.time()
    seq = _seq()
    experiment = server.repo_call("create_experiment", "Post-op monitoring")
    for box, name in enumerate(("M01", "M02", "M03", "M04")):
        animal = server.repo_call("create_animal", name, "C57BL/6J", "", experiment)
        server.repo_call("create_assignment", animal, "rack-A", box, now - 3600)
    messages = []
    for i in range(60, 0, -1):  # the last 30 minutes, one window every 30 s
        t = now - i * 30
        messages += [
            score_message(window("rack-A", 0, next(seq), t, round(3.0 + 0.2 * (i % 3), 2))),
            score_message(window("rack-A", 1, next(seq), t, None if i < 8 else 2.6)),
            score_message(window("rack-A", 2, next(seq), t, round(min(9.0, 2.8 + max(0, 40 - i) * 0.11), 2))),
            score_message(window("rack-A", 3, next(seq), t, 2.1)),
        ]
        if i > 40:
            messages += [score_message(window("rack-B", b, next(seq), t, 2.4 + b * 0.3)) for b in range(2)]
    rising = BoxAlert(
        device="rack-A",
        box=2,
        seq=next(seq),
        event="raised",
        time=utc_iso(now - 300),
        threshold=6.0,
        duration_s=300.0,
        score=6.4,
    )
    messages.append((alert_topic("rack-A", 2), rising.to_json()))
    messages.append((status_topic("rack-A"), status(device="rack-A").to_json()))
    publish(server.broker, messages)
    publish(
        server.broker,
        [
            (availability_topic("rack-A"), AVAILABILITY_ONLINE.encode()),
            (availability_topic("rack-B"), AVAILABILITY_OFFLINE.encode()),
        ],
        retain=True,
    )
    wait_for(
        lambda: len(server.repo_call("alerts")) == 1 and len(server.repo_call("boxes")) == 6,
        timeout=20,
        what="the facility's messages to be stored",
    )


def test_overview_updates_without_reload(page: Any, server: Server, tmp_path: Path) -> None:
    publish_facility(server)
    page.goto(server.url + "/")
    tile = page.locator('[data-box="rack-A/0"]')
    expect(tile).to_have_attribute("data-state", "ok")
    expect(page.locator('[data-box="rack-A/1"]')).to_contain_text("no face visible")
    expect(page.locator('[data-box="rack-B/0"]')).to_contain_text("no data for")
    expect(page.locator('[data-box="rack-A/2"]')).to_have_attribute("data-state", "alert")
    page.evaluate("window.__loadedOnce = true")

    latest = window("rack-A", 0, 10_000, time.time() - 1.0, 4.4)
    publish(server.broker, [score_message(latest)])
    expect(tile.locator(".score")).to_contain_text("4.4")
    expect(tile).to_have_attribute("data-state", "high")
    assert page.evaluate("window.__loadedOnce") is True, "the page reloaded instead of updating in place"
    page.set_viewport_size({"width": 1280, "height": 560})
    shot = screenshot(page, tmp_path, "dashboard.png")
    assert shot.stat().st_size < 300_000


def test_no_face_replaces_a_score_live(page: Any, server: Server) -> None:
    publish(server.broker, [score_message(window("rack-A", 0, 1, time.time() - 2.0, 3.3))])
    page.goto(server.url + "/")
    tile = page.locator('[data-box="rack-A/0"]')
    expect(tile.locator(".score")).to_contain_text("3.3")
    publish(server.broker, [score_message(window("rack-A", 0, 2, time.time() - 1.0, None))])
    expect(tile).to_contain_text("no face visible")
    expect(tile.locator(".score")).to_have_count(0)


def test_history_plot_renders_the_published_points(page: Any, server: Server, tmp_path: Path) -> None:
    now = time.time()
    publish(
        server.broker,
        [score_message(window("rack-A", 0, i, now - 600 + i * 10, 2.0 + (i % 20) * 0.25)) for i in range(60)],
    )
    wait_for(
        lambda: len(server.repo_call("box_scores", "rack-A", 0, now - 700, now)["points"]) == 60,
        timeout=20,
        what="60 windows stored",
    )
    page.goto(server.url + "/boxes/rack-A/0")
    page.wait_for_function("document.getElementById('plot').dataset.resolution === 'minute'")  # 6 h by default
    page.get_by_role("button", name="last 1 h").click()
    page.wait_for_function("document.getElementById('plot').dataset.points === '60'")
    assert page.evaluate("document.getElementById('plot').dataset.resolution") == "raw"
    expect(page.locator("#plot .scatterlayer .trace path.js-line").first).to_be_visible()
    assert page.locator("#plot .scatterlayer .point").count() >= 60
    expect(page.locator("#plot .shapelayer path")).to_have_count(1)  # the threshold line
    screenshot(page, tmp_path, "history.png")


def test_alert_is_acknowledged_in_the_browser_with_who_and_when(page: Any, server: Server, tmp_path: Path) -> None:
    raised = BoxAlert(
        device="rack-A",
        box=1,
        seq=7,
        event="raised",
        time=utc_iso(time.time()),
        threshold=6.0,
        duration_s=120.0,
        score=6.8,
    )
    page.goto(server.url + "/alerts")
    publish(server.broker, [(alert_topic("rack-A", 1), raised.to_json())])
    row = page.locator("#episodes-table tr[data-episode]").first
    expect(row).to_contain_text("rack-A / 1")  # arrives through the live table, no reload
    row.get_by_role("button", name="Acknowledge").click()
    expect(page.locator(".flash.info")).to_contain_text("acknowledged by olga")
    page.goto(server.url + "/alerts?show=all")
    ack = page.locator("#episodes-table tr[data-episode] td.ack").first
    expect(ack.locator(".ack-note")).to_contain_text("olga")
    expect(ack.locator(".ack-note")).to_contain_text(" UTC")
    assert server.repo_call("alerts")[0]["acknowledged_by"] == "olga"
    screenshot(page, tmp_path, "alerts.png")
