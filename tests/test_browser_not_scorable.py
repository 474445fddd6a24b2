""" "Not scorable" in a real headless Chromium: the tile and the history chart tell it from "no face".

Windows are published over MQTT to the real server process (fixtures of tests/test_browser.py), as
a device that abstained on every eye of a box publishes them.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mgs_core.messages import ScoreWindow
from server.dashboard import NOT_SCORABLE_HELP
from tests.conftest import wait_for
from tests.ingest_support import publish, score_message, window
from tests.test_browser import browser, expect, page, screenshot, server  # noqa: F401  (fixtures)


def unsure(w: ScoreWindow, eyes: int = 3) -> ScoreWindow:
    return replace(w, valid_eyes=0, score=None, median=None, p90=None, face_visible_fraction=0.0, abstained_eyes=eyes)


def test_a_tile_turns_from_no_face_to_not_scorable_live(page: Any, server: Any, tmp_path: Path) -> None:  # noqa: F811
    now = time.time()
    publish(
        server.broker,
        [
            score_message(window("rack-A", 0, 1, now - 2.0, None)),
            score_message(window("rack-A", 1, 2, now - 2.0, None)),
        ],
    )
    page.goto(server.url + "/")
    tile, other = page.locator('[data-box="rack-A/0"]'), page.locator('[data-box="rack-A/1"]')
    expect(tile).to_contain_text("no face visible")
    expect(other).to_contain_text("no face visible")

    publish(server.broker, [score_message(unsure(window("rack-A", 0, 3, time.time() - 1.0, None)))])
    expect(tile).to_have_attribute("data-state", "notscorable")  # arrives through the live update, no reload
    expect(tile.locator(".state-text")).to_contain_text("not scorable")
    expect(tile.locator(".state-text")).to_have_attribute("title", NOT_SCORABLE_HELP)
    expect(tile).not_to_contain_text("no face visible")
    expect(tile.locator(".score")).to_have_count(0)
    expect(other).to_contain_text("no face visible")
    expect(other).not_to_contain_text("not scorable")
    expect(page.locator("#legend")).to_contain_text("not scorable")
    screenshot(page, tmp_path, "not-scorable-tile.png")


def test_the_history_chart_marks_not_scorable_apart_from_no_face(page: Any, server: Any, tmp_path: Path) -> None:  # noqa: F811
    now = time.time()
    kinds = ["score"] * 20 + ["unsure"] * 15 + ["noface"] * 10 + ["score"] * 5
    windows = [
        window("rack-A", 0, i, now - 600 + i * 10, 3.0)
        if kind == "score"
        else unsure(window("rack-A", 0, i, now - 600 + i * 10, None))
        if kind == "unsure"
        else window("rack-A", 0, i, now - 600 + i * 10, None)
        for i, kind in enumerate(kinds)
    ]
    publish(server.broker, [score_message(w) for w in windows])
    wait_for(
        lambda: len(server.repo_call("box_scores", "rack-A", 0, now - 700, now)["points"]) == len(kinds),
        timeout=20,
        what="the windows to be stored",
    )
    page.goto(server.url + "/boxes/rack-A/0")
    page.get_by_role("button", name="last 1 h").click()
    page.wait_for_function(f"document.getElementById('plot').dataset.points === '{len(kinds)}'")

    def trace(prefix: str) -> dict[str, Any]:
        return page.evaluate(
            "(prefix) => { const t = document.getElementById('plot').data.find((d) => d.name.startsWith(prefix));"
            " return { n: t.x.length, y: [...new Set(t.y)], hover: t.hovertemplate, text: t.text }; }",
            prefix,
        )

    unscorable, hidden, score = trace("not scorable"), trace("no face visible"), trace("score (mean)")
    assert (unscorable["n"], hidden["n"]) == (15, 10)
    assert unscorable["y"] == hidden["y"] == [-0.4], "drawn below the scale, never as a score"
    assert NOT_SCORABLE_HELP in unscorable["hover"] and unscorable["text"][0] == "3 eye(s) abstained on"
    assert sorted(set(score["y"]) - {None}) == [3.0]
    expect(page.locator("#plot .legendtext", has_text="not scorable")).to_be_visible()
    expect(page.locator("#plot .legendtext", has_text="no face visible")).to_be_visible()
    screenshot(page, tmp_path, "not-scorable-history.png")
