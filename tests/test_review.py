"""The review queue and pages: queue rules, blindness, roles, CSRF, bad input, agreement figures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import sqlite_utils
from flask import Flask

from mgs_core.errors import ConfigError, MgsError
from mgs_core.tomlconfig import load_config
from server import audit, review_store
from server.app import create_app
from server.config import DatabaseConfig, ReviewConfig, ServerConfig
from server.db import connect
from server.review_store import AlreadyRated, Rating
from tests.sample_support import FACE_H, FACE_W, add_rating, add_sample
from tests.web_support import csrf, logged_in

T0 = 1_790_000_000.0


def review_app(tmp_path: Path, **review: object) -> Flask:
    config = ServerConfig(database=DatabaseConfig(path=tmp_path / "server.sqlite"), review=ReviewConfig(**review))  # type: ignore[arg-type]
    return create_app(config, {"TESTING": True, "SECRET_KEY": "test-secret-" + "x" * 32})


def db_of(app: Flask) -> sqlite_utils.Database:
    return connect(app.config["DATABASE"])


def test_queue_is_oldest_first_never_twice_to_a_rater_and_ends_at_the_target(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    path = app.config["DATABASE"]
    newer = add_sample(path, "b", taken_at=T0 + 60)
    older = add_sample(path, "a", taken_at=T0)
    db = db_of(app)
    try:
        assert review_store.next_sample(db, "ann", 2)["id"] == older
        add_rating(path, older, "ann", 3.0)
        assert review_store.next_sample(db, "ann", 2)["id"] == newer, "a sample is never shown to its rater again"
        assert review_store.next_sample(db, "bob", 2)["id"] == older
        add_rating(path, older, "bob", 4.0)
        assert review_store.next_sample(db, "cy", 2)["id"] == newer, "a sample with enough raters leaves the queue"
        assert review_store.next_sample(db, "cy", 3)["id"] == older, "the target count comes from the config"
        assert review_store.next_sample(db, "bob", 2, skipped=[newer]) is None
        assert review_store.progress(db, "bob", 2) == review_store.Progress(
            total=2, need_more=1, for_you=1, rated_by_you=1
        )
        with pytest.raises(AlreadyRated, match="already rated sample"):
            review_store.save_rating(db, older, "ann", Rating(False))
    finally:
        db.conn.close()


def test_queue_puts_alert_then_uncertain_then_borderline_samples_before_random_ones(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    path = app.config["DATABASE"]
    order = [
        add_sample(path, "alert", taken_at=T0 + 40, reason="alert"),
        add_sample(path, "uncertain-old", taken_at=T0 + 10, reason="low_confidence"),
        add_sample(path, "uncertain", taken_at=T0 + 30, reason="low_confidence"),
        add_sample(path, "borderline", taken_at=T0 + 20, reason="borderline"),
        add_sample(path, "random", taken_at=T0, reason="random"),
    ]
    db = db_of(app)
    try:
        offered = []
        while (current := review_store.next_sample(db, "ann", 2)) is not None:
            offered.append(current["id"])
            review_store.save_rating(db, current["id"], "ann", Rating(False))
    finally:
        db.conn.close()
    assert offered == order


def test_a_rating_is_audited_without_its_score(tmp_path: Path) -> None:
    """Officers read the audit log, so it must not hand them another rater's score."""
    app = review_app(tmp_path)
    sample_id = add_sample(app.config["DATABASE"], "a")
    db = db_of(app)
    try:
        review_store.save_rating(db, sample_id, "ann", Rating(True, 7.0, 2, [{"x": 1.0, "y": 2.0}]))
        (entry,) = audit.entries(db, target=f"sample:{sample_id}")
        assert (entry["username"], entry["action"], entry["old"], entry["new"]) == ("ann", "rate sample", None, None)
    finally:
        db.conn.close()


@pytest.mark.parametrize(
    ("form", "problem"),
    [
        ({"ot_score": "", "mgs_score": "1"}, "give an orbital tightening score"),
        ({"ot_score": "9.5", "mgs_score": "1"}, "must be from 0 to 9"),
        ({"ot_score": "nan", "mgs_score": "1"}, "must be from 0 to 9"),
        ({"ot_score": "four", "mgs_score": "1"}, "must be a number"),
        ({"ot_score": "4", "mgs_score": "3"}, "MGS orbital tightening score of 0, 1 or 2"),
        ({"ot_score": "4", "mgs_score": "1", "eyes": "{"}, "could not be read"),
        ({"ot_score": "4", "mgs_score": "1", "eyes": '[{"x": 500, "y": 2}]'}, "must lie on the image"),
        (
            {"ot_score": "4", "mgs_score": "1", "eyes": '[{"x": 1, "y": 2}, {"x": 1, "y": 2}, {"x": 1, "y": 2}]'},
            "at most 2",
        ),
    ],
)
def test_bad_ratings_say_what_to_fix(form: dict[str, str], problem: str) -> None:
    with pytest.raises(MgsError, match=problem):
        review_store.parse_rating(form, FACE_W, FACE_H)


def test_not_scorable_needs_no_scores_and_eyes_are_kept_in_crop_pixels() -> None:
    assert review_store.parse_rating({"scorable": "0", "ot_score": "4"}, FACE_W, FACE_H) == Rating(False)
    rating = review_store.parse_rating({"ot_score": "4", "mgs_score": "2", "eyes": '[{"x": 10.04, "y": 5}]'}, 160, 120)
    assert rating == Rating(True, 4.0, 2, [{"x": 10.0, "y": 5.0}])


def test_device_eyes_ignore_entries_without_a_position_on_the_crop() -> None:
    meta = {
        "eyes": [{"x": 3, "y": 4, "score": 2.5}, {"x": None, "y": 1}, "junk", {"x": True, "y": 1}, {"x": 170, "y": 1}],
        "new_key": 1,
    }
    assert review_store.device_eyes(meta, FACE_W, FACE_H) == [{"x": 3.0, "y": 4.0, "score": 2.5}]
    assert review_store.device_eyes({"eyes": "no list"}, FACE_W, FACE_H) == []


def test_review_pages_need_the_officer_role(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    sample_id = add_sample(app.config["DATABASE"], "a")
    viewer = logged_in(app, "viewer")
    for url in ("/review", "/review/agreement", f"/review/samples/{sample_id}/image"):
        assert viewer.get(url).status_code == 403, url
    response = viewer.post(f"/review/samples/{sample_id}/rating", data={"csrf_token": csrf(viewer), "ot_score": "3"})
    assert response.status_code == 403
    assert "Review" not in re.sub(r"<main>.*", "", viewer.get("/").get_data(as_text=True), flags=re.S)
    admin = logged_in(app, "admin")
    assert admin.get("/review").status_code == 200
    assert app.test_client().get("/review").status_code == 302  # to the login page


def test_the_empty_state_says_where_samples_come_from(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    officer = logged_in(app, "officer")
    page = officer.get("/review").get_data(as_text=True)
    assert "No samples waiting" in page and "docs/review.md" in page and "review-form" not in page
    assert 'href="/review"' in page, "the nav links to the review page"
    sample_id = add_sample(app.config["DATABASE"], "a")
    add_rating(app.config["DATABASE"], sample_id, "officer", 2.0)
    page = officer.get("/review").get_data(as_text=True)
    assert "Nothing waiting for you" in page and "1 sample still waits for other raters" in page


def test_the_sample_page_is_blind_to_the_model_and_to_other_raters(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    path = app.config["DATABASE"]
    sample_id = add_sample(path, "a", model_score=7.3)
    db = db_of(app)
    try:
        review_store.save_rating(db, sample_id, "bob", Rating(True, 8.0, 2, [{"x": 33.3, "y": 44.4}]))
    finally:
        db.conn.close()
    officer = logged_in(app, "officer")
    page = officer.get("/review").get_data(as_text=True)
    assert f"/review/samples/{sample_id}/image" in page
    eyes = json.loads(re.search(r"name=\"eyes\" value='([^']*)'", page).group(1))  # type: ignore[union-attr]
    assert eyes == [{"x": 52.0, "y": 48.0}, {"x": 110.0, "y": 50.0}], "the device's eyes are the starting markers"
    assert "7.3" not in page and "model-score" not in page
    assert "33.3" not in page and "bob" not in page
    assert "1 of 1 samples still need" in page


def test_show_model_score_shows_it(tmp_path: Path) -> None:
    app = review_app(tmp_path, show_model_score=True)
    add_sample(app.config["DATABASE"], "a", model_score=7.3)
    page = logged_in(app, "officer").get("/review").get_data(as_text=True)
    assert re.search(r'id="model-score">Model: 7\.3', page)


def test_the_image_route_serves_the_face_crop(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    sample_id = add_sample(app.config["DATABASE"], "a")
    bare = add_sample(app.config["DATABASE"], "b", image=False)
    officer = logged_in(app, "officer")
    response = officer.get(f"/review/samples/{sample_id}/image")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert response.data[:2] == b"\xff\xd8"
    assert officer.get(f"/review/samples/{bare}/image").status_code == 404
    assert officer.get("/review/samples/999/image").status_code == 404


def test_rating_by_form_checks_csrf_input_and_double_submits(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    path = app.config["DATABASE"]
    sample_id = add_sample(path, "a")
    officer = logged_in(app, "officer")
    url = f"/review/samples/{sample_id}/rating"
    form = {"ot_score": "4", "mgs_score": "1", "eyes": '[{"x": 50, "y": 47.5}]'}
    assert officer.post(url, data=form).status_code == 400, "no CSRF token"
    token = csrf(officer)
    page = officer.post(url, data={**form, "ot_score": "12", "csrf_token": token}, follow_redirects=True)
    assert "must be from 0 to 9" in page.get_data(as_text=True)
    assert review_store.progress(db_of(app), "officer", 2).rated_by_you == 0
    page = officer.post(url, data={**form, "csrf_token": token}, follow_redirects=True)
    assert f"Sample {sample_id} rated." in page.get_data(as_text=True)
    second = officer.post(url, data={**form, "ot_score": "6", "csrf_token": token})
    assert second.status_code == 302
    text = officer.get("/review").get_data(as_text=True)
    assert "you already rated sample" in text and "your first rating stands" in text
    db = db_of(app)
    try:
        rows = list(db.query("SELECT username, scorable, ot_score, mgs_score, eyes_json FROM sample_ratings"))
    finally:
        db.conn.close()
    assert rows == [
        {"username": "officer", "scorable": 1, "ot_score": 4.0, "mgs_score": 1, "eyes_json": '[{"x": 50.0, "y": 47.5}]'}
    ]
    assert officer.post("/review/samples/999/rating", data={**form, "csrf_token": token}).status_code == 404


def test_skip_keeps_the_sample_for_later(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    first = add_sample(app.config["DATABASE"], "a", taken_at=T0)
    second = add_sample(app.config["DATABASE"], "b", taken_at=T0 + 1)
    officer = logged_in(app, "officer")
    token = csrf(officer)
    assert f"/review/samples/{first}/rating" in officer.get("/review").get_data(as_text=True)
    officer.post(f"/review/samples/{first}/skip", data={"csrf_token": token})
    assert f"/review/samples/{second}/rating" in officer.get("/review").get_data(as_text=True)
    officer.post(f"/review/samples/{second}/skip", data={"csrf_token": token})
    page = officer.get("/review").get_data(as_text=True)
    assert "You skipped every sample waiting for you" in page
    officer.post("/review/skipped/clear", data={"csrf_token": token})
    assert f"/review/samples/{first}/rating" in officer.get("/review").get_data(as_text=True)


def rate_pairs(path: str, scores: list[tuple[float, float]], version: str = "", model: float = 4.0) -> None:
    for i, (a, b) in enumerate(scores):
        sample_id = add_sample(path, f"{version}-{i}", model_version=version, model_score=model + (i % 3))
        add_rating(path, sample_id, "ann", a)
        add_rating(path, sample_id, "bob", b)


def test_the_agreement_page_shows_icc_only_with_enough_finished_samples(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    path = app.config["DATABASE"]
    officer = logged_in(app, "officer")
    page = officer.get("/review/agreement").get_data(as_text=True)
    assert "No finished samples" in page
    rate_pairs(path, [(1, 2), (4, 4), (6, 7)], version="v2")
    waiting = add_sample(path, "waiting", model_score=9.0)
    add_rating(path, waiting, "ann", 9.0)
    page = officer.get("/review/agreement").get_data(as_text=True)
    assert "3 finished samples" in page, "a sample still waiting for a rater is left out"
    assert "not enough ratings (n = 3, need 5)" in page
    rate_pairs(path, [(2, 2), (8, 9), (3, 3)])
    page = officer.get("/review/agreement").get_data(as_text=True)
    icc = re.search(r'id="icc-ot"><span class="value">([0-9.]+)</span> <span class="muted">\(n = 6\)', page)
    assert icc and 0.9 < float(icc.group(1)) <= 1.0
    assert 'id="bland-altman"' in page and page.count('class="point"') == 6
    assert "shipped models" in page and "ann · bob" in page
    versions = re.search(r'<table class="list" id="model-versions">.*?</table>', page, re.S)
    assert versions and 'data-version="v2"' in versions.group(0)
    assert "not enough ratings (n = 3, need 5)" in versions.group(0)
    only_v2 = officer.get("/review/agreement?version=v:v2").get_data(as_text=True)
    assert "3 finished samples" in only_v2 and 'id="bland-altman"' not in only_v2
    only_ann = officer.get("/review/agreement?rater=ann").get_data(as_text=True)
    assert "ann · bob" not in only_ann and 'data-rater="bob"' not in only_ann


def test_review_config_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[review]\nraters_per_sample = 0\n")
    with pytest.raises(ConfigError, match="raters_per_sample"):
        load_config(ServerConfig, config)
    config.write_text("[review]\nraters_per_sample = 3\nshow_model_score = true\n")
    assert load_config(ServerConfig, config).review == ReviewConfig(3, True)


def test_a_sample_with_unreadable_meta_is_still_shown_without_markers(tmp_path: Path) -> None:
    app = review_app(tmp_path)
    sample_id = add_sample(app.config["DATABASE"], "a", meta_json="{not json")
    page = logged_in(app, "officer").get("/review").get_data(as_text=True)
    assert f"/review/samples/{sample_id}/image" in page
    assert "name=\"eyes\" value='[]'" in page
