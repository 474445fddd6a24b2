"""The facility-size dashboard in a real headless Chromium: 200 boxes published through a real broker
into the real server process, at desktop and phone size.

One server and one browser serve the whole module (the data takes a while to publish); each test
publishes the alerts it needs for its own animals.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mgs_core.messages import (
    AVAILABILITY_ONLINE,
    BoxAlert,
    alert_topic,
    availability_topic,
    utc_iso,
)
from server import auth
from server.db import connect
from server.repository import Repository
from tests.conftest import MOSQUITTO, Broker, wait_for
from tests.ingest_support import publish, score_message, window
from tests.test_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    Server,
    expect,
    screenshot,
    sync_api,
)
from tests.web_support import PASSWORD

pytestmark = pytest.mark.browser

RACKS = 50
BOXES = 4
TOP = {("rack-17", 2): 8.6, ("rack-03", 1): 8.2, ("rack-41", 0): 7.9}
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 820}


def _animal(device: str, box: int) -> str:
    return f"M{device[-2:]}-{box}"


@pytest.fixture(scope="module")
def facility(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed")
    tmp = tmp_path_factory.mktemp("facility")
    broker = Broker(tmp)
    broker.start()
    server = Server(tmp, broker)
    try:
        db = connect(server.db_path)
        try:
            auth.create_user(db, "ada", PASSWORD, "admin")
            repo = Repository(db)
            experiment = repo.create_experiment("Post-op monitoring")
            for r in range(RACKS):
                for b in range(BOXES):
                    device = f"rack-{r:02d}"
                    animal = repo.create_animal(_animal(device, b), "C57BL/6J", "", experiment)
                    repo.create_assignment(animal, device, b, time.time() - 3600)
            repo.update_animal(1, notes="post-op day 1", humane_endpoint="score ≥ 7 for 2 h: call the vet")
        finally:
            db.conn.close()
        rng = random.Random(7)
        now = time.time()
        messages = []
        seq = 0
        for r in range(RACKS):
            device = f"rack-{r:02d}"
            for b in range(BOXES):
                score = TOP.get((device, b), round(rng.uniform(0.5, 6.5), 1))
                for i in range(3):
                    seq += 1
                    messages.append(score_message(window(device, b, seq, now - 90 + i * 30, score)))
        publish(broker, messages)
        publish(
            broker,
            [(availability_topic(f"rack-{r:02d}"), AVAILABILITY_ONLINE.encode()) for r in range(RACKS)],
            retain=True,
        )
        wait_for(
            lambda: sum(1 for b in server.repo_call("boxes") if b["last_seq"] is not None) == RACKS * BOXES,
            timeout=60,
            what="200 boxes stored by the real ingest",
        )
        yield server
    finally:
        server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("chromium is missing")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _page(browser: Any, server: Server, viewport: dict[str, int], user: str = "olga") -> Any:
    context = browser.new_context(viewport=viewport, timezone_id="America/New_York")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server.url}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("header .who")).to_contain_text(user)
    return page


def _no_horizontal_scroll(page: Any, what: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= page.viewport_size["width"], (
        f"{what} is {width} px wide on a {page.viewport_size['width']} px phone"
    )


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_the_three_highest_scores_come_first(
    browser: Any, facility: Server, viewport: dict[str, int], tmp_path: Path
) -> None:
    page = _page(browser, facility, viewport)
    try:
        page.goto(facility.url + "/")
        tiles = page.locator("#tiles [data-box]")
        expect(tiles).to_have_count(RACKS * BOXES)
        first = [tiles.nth(i).get_attribute("data-box") for i in range(3)]
        assert first == ["rack-17/2", "rack-03/1", "rack-41/0"]
        expect(tiles.first).to_contain_text(_animal("rack-17", 2))
        expect(tiles.first).to_have_class(re.compile(r"\blv4\b"))
        assert tiles.first.bounding_box()["y"] < viewport["height"], "the worst animal is on the first screen"
        page.fill("#search", "m41-0")
        expect(page.locator("#tiles [data-box]:visible")).to_have_count(1)
        expect(page.locator("#shown")).to_contain_text("1 of 200")
        _no_horizontal_scroll(page, "the overview")
        screenshot(page, tmp_path, f"overview-{viewport['width']}.png")
    finally:
        page.context.close()


def test_an_episode_shows_its_duration_and_updates_the_open_page(browser: Any, facility: Server) -> None:
    page = _page(browser, facility, DESKTOP)
    try:
        page.goto(facility.url + "/")
        version = page.locator("#tiles").get_attribute("data-version")
        now = time.time()
        raised = BoxAlert(
            device="rack-08",
            box=3,
            seq=900_001,
            event="raised",
            time=utc_iso(now - 725),
            threshold=6.0,
            duration_s=300.0,
            score=6.9,
        )
        cleared = BoxAlert(
            device="rack-08",
            box=3,
            seq=900_002,
            event="cleared",
            time=utc_iso(now - 5),
            threshold=6.0,
            duration_s=300.0,
            score=3.1,
        )
        again = BoxAlert(
            device="rack-22",
            box=1,
            seq=900_003,
            event="raised",
            time=utc_iso(now - 400),
            threshold=6.0,
            duration_s=300.0,
            score=7.1,
        )
        publish(
            facility.broker,
            [
                (alert_topic("rack-08", 3), raised.to_json()),
                (alert_topic("rack-08", 3), cleared.to_json()),
                (alert_topic("rack-22", 1), again.to_json()),
            ],
        )
        first = page.locator("#tiles [data-box]").first
        expect(first).to_have_attribute("data-box", "rack-22/1")  # patched in place: attention first
        expect(first.locator(".episode")).to_contain_text("since")
        expect(first.locator(".episode")).to_contain_text("(6 min)")
        assert page.locator("#tiles").get_attribute("data-version") != version
        page.goto(facility.url + "/alerts?show=all")
        row = page.locator("#episodes-table tr[data-episode]", has_text="M08-3")
        expect(row.locator(".duration")).to_have_text("12 min")
        expect(row).to_contain_text("ended")
        expect(page.locator("header .tz")).to_have_text("UTC")
    finally:
        page.context.close()


def test_acknowledging_with_a_note_shows_note_and_user_in_the_episode_and_the_audit_log(
    browser: Any, facility: Server, tmp_path: Path
) -> None:
    raised = BoxAlert(
        device="rack-30",
        box=2,
        seq=900_010,
        event="raised",
        time=utc_iso(time.time() - 60),
        threshold=6.0,
        duration_s=60.0,
        score=6.6,
    )
    publish(facility.broker, [(alert_topic("rack-30", 2), raised.to_json())])
    wait_for(
        lambda: any(a["seq"] == 900_010 for a in facility.repo_call("alerts")), timeout=20, what="the alert stored"
    )
    page = _page(browser, facility, PHONE)
    try:
        page.goto(facility.url + "/alerts")
        row = page.locator("#episodes-table tr[data-episode]", has_text="M30-2")
        row.locator("input[name=note]").fill("analgesia given, vet informed")
        row.get_by_role("button", name="Acknowledge").click()
        expect(page.locator(".flash.info")).to_contain_text("acknowledged by olga")
        row = page.locator("#episodes-table tr[data-episode]", has_text="M30-2")
        expect(row.locator(".ack-note")).to_contain_text("olga")
        expect(row.locator(".ack-note")).to_contain_text("analgesia given, vet informed")
        _no_horizontal_scroll(page, "the alerts page")
        screenshot(page, tmp_path, "alerts-phone.png")
        page.goto(facility.url + "/audit")
        entry = page.locator("#audit-table tr[data-audit]").first
        expect(entry).to_contain_text("olga")
        expect(entry).to_contain_text("acknowledge episode")
        expect(entry).to_contain_text("analgesia given, vet informed")
    finally:
        page.context.close()


@pytest.mark.parametrize("width", [360, 390, 430])
def test_no_page_scrolls_sideways_on_a_phone(browser: Any, facility: Server, width: int) -> None:
    page = _page(browser, facility, {"width": width, "height": 800}, user="ada")
    try:
        for path in (
            "/",
            "/alerts",
            "/alerts?show=all",
            "/devices",
            "/assignments",
            "/export",
            "/audit",
            "/admin/users",
            "/boxes/rack-17/2",
            "/animals/1",
            "/animals/1/report",
        ):
            page.goto(facility.url + path)
            page.wait_for_load_state("load")
            _no_horizontal_scroll(page, path)
        expect(page.locator("#report")).to_contain_text("score ≥ 7 for 2 h: call the vet")
        page.goto(facility.url + "/boxes/rack-17/2")
        page.wait_for_function("document.getElementById('plot').dataset.resolution !== undefined")
        page.get_by_role("button", name="last 1 h").click()
        expect(page.get_by_role("button", name="last 1 h")).to_have_attribute("aria-pressed", "true")
        expect(page.get_by_role("button", name="last 6 h")).to_have_attribute("aria-pressed", "false")
        _no_horizontal_scroll(page, "a history page with its plot")
    finally:
        page.context.close()
