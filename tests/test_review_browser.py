"""Two officers review samples in a real headless Chromium with the keyboard alone, then read their ICC.

Drives the real `mgs-server run` process with the fixtures of tests/test_browser.py. Samples are
inserted as an upload stores them (tests/sample_support.py). Every action on the review pages is
a key press (`page.keyboard`); the only other calls are navigations and assertions.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from server import auth
from server.db import connect
from tests.sample_support import EYES, add_sample
from tests.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, browser, expect, screenshot, server  # noqa: F401  (fixtures)
from tests.web_support import PASSWORD

pytestmark = pytest.mark.browser

# (OT 0-9, MGS key) per sample, per rater: close but not equal, so the ICC is high and below 1.
SCORES = {
    "olga": [("2", "z"), ("5", "x"), ("8", "c"), ("3", "x"), ("6", "x")],
    "rita": [("3", "z"), ("5", "x"), ("7", "c"), ("3", "z"), ("7", "c")],
}


def keyboard_login(browser: Any, url: str, name: str) -> Any:  # noqa: F811
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="UTC")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{url}/login")
    expect(page.locator("input[name=username]")).to_be_focused()
    page.keyboard.type(name)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.locator("header .who")).to_contain_text(name)
    return page


def review_by_keyboard(page: Any, url: str, name: str, tmp_path: Path) -> None:
    page.goto(f"{url}/review")
    for i, (ot, mgs) in enumerate(SCORES[name]):
        form = page.locator("#review-form")
        action = form.get_attribute("action")
        # review.js fills #eye-state last, after binding its keys: keys pressed before that are lost.
        expect(page.locator("#eye-state")).not_to_have_text("")
        if i == 0:
            page.keyboard.press("Enter")
            expect(page.locator("#review-message")).to_contain_text("Give an orbital tightening score")
            page.keyboard.press("e")  # eye 2
            for _ in range(3):
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Shift+ArrowDown")
            expect(page.locator("#eye-state")).to_contain_text(
                f"eye 2 (picked): {EYES[1]['x'] + 3:.0f}, {EYES[1]['y'] + 10:.0f}"
            )
            page.keyboard.press("e")
            page.keyboard.press("Delete")  # eye 1 removed: the rater sees only one eye
            expect(page.locator("#eye-state")).to_contain_text("eye 1 (picked): not marked")
            if name == "olga":
                screenshot(page, tmp_path, "review.png")
        page.keyboard.press(ot)
        page.keyboard.press(mgs)
        expect(page.locator(f"input[name=ot_score][value='{ot}']")).to_be_checked()
        page.keyboard.press("Enter")
        sample_id = re.search(r"/samples/(\d+)/", action or "").group(1)  # type: ignore[union-attr]
        expect(page.locator(".flash.info")).to_have_text(f"Sample {sample_id} rated.")
    expect(page.locator("#review-empty")).to_contain_text("Nothing waiting for you")


def test_two_officers_review_by_keyboard_and_see_their_icc(browser: Any, server: Any, tmp_path: Path) -> None:  # noqa: F811
    db = connect(server.db_path)
    try:
        auth.create_user(db, "rita", PASSWORD, "officer")
    finally:
        db.conn.close()
    ids = [add_sample(server.db_path, f"s{i}", taken_at=1_790_000_000.0 + i, model_score=3.0 + i) for i in range(5)]

    olga = keyboard_login(browser, server.url, "olga")
    review_by_keyboard(olga, server.url, "olga", tmp_path)
    olga.goto(f"{server.url}/review/agreement")
    expect(olga.locator("#agreement-empty")).to_contain_text("No finished samples")

    rita = keyboard_login(browser, server.url, "rita")
    review_by_keyboard(rita, server.url, "rita", tmp_path)

    olga.goto(f"{server.url}/review/agreement")
    icc = olga.locator("#icc-ot .value")
    expect(icc).to_have_text(re.compile(r"^0\.[0-9]{2}$"))
    assert 0.8 < float(icc.inner_text()) < 1.0
    expect(olga.locator("#icc-ot")).to_contain_text("n = 5")
    expect(olga.locator("#pairs-ot")).to_contain_text("olga · rita")
    expect(olga.locator("#bland-altman circle.point")).to_have_count(5)
    screenshot(olga, tmp_path, "review-agreement.png")

    db = connect(server.db_path)
    try:
        rows = list(db.query("SELECT sample_id, username, ot_score, eyes_json FROM sample_ratings ORDER BY id"))
    finally:
        db.conn.close()
    assert len(rows) == 10 and len({(r["sample_id"], r["username"]) for r in rows}) == 10
    first = [r for r in rows if r["sample_id"] == ids[0]]
    assert [json.loads(r["eyes_json"]) for r in first] == [[{"x": EYES[1]["x"] + 3, "y": EYES[1]["y"] + 10}]] * 2
    assert {r["ot_score"] for r in rows if r["username"] == "rita"} == {3.0, 5.0, 7.0}
    for page in (olga, rita):
        page.context.close()
