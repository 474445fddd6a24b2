"""Logins, roles, CSRF and API tokens of the web app (real Flask app over a temporary SQLite file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask, url_for

from server import auth
from server.db import connect
from tests.web_support import (
    PASSWORD,
    add_device_token,
    add_token,
    add_user,
    alert,
    csrf,
    logged_in,
    login,
    make_app,
    repo_call,
    store,
)

# Path parameters for building every URL in the app's map.
SAMPLE_ARGS = {
    "device": "rack1",
    "box": 0,
    "animal_id": 1,
    "alert_id": 1,
    "assignment_id": 1,
    "rule_id": 1,
    "user_id": 1,
    "token_id": 1,
    "experiment_id": 1,
    "filename": "style.css",
    "job_id": 1,
    "sample_id": 1,
    "name": "plot.png",
    "rollout_id": 1,
    "version": "v1",
    "kind_name": "video",
    "upload_id": "0" * 32,
}
PUBLIC = {"auth.login", "static"}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


def _routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, url, method) for every route but the public ones; GET where a route has it."""
    out = []
    with app.test_request_context():
        for rule in app.url_map.iter_rules():
            if rule.endpoint in PUBLIC:
                continue
            method = "GET" if "GET" in (rule.methods or ()) else sorted(set(rule.methods or ()) - {"OPTIONS"})[0]
            url = url_for(rule.endpoint, **{a: SAMPLE_ARGS[a] for a in rule.arguments})
            out.append((rule.endpoint, url, method))
    return out


def test_every_page_redirects_to_login_without_a_session(app: Flask) -> None:
    client = app.test_client()
    pages = [(e, u) for e, u, m in _routes(app) if m == "GET" and not u.startswith("/api/")]
    assert len(pages) >= 8
    for endpoint, url in pages:
        response = client.get(url)
        assert response.status_code == 302, endpoint
        assert response.headers["Location"].startswith("/login?next="), endpoint


def test_every_api_endpoint_answers_401_without_credentials(app: Flask) -> None:
    client = app.test_client()
    endpoints = [(e, u, m) for e, u, m in _routes(app) if u.startswith("/api/")]
    assert endpoints, "the API blueprint has routes"
    for endpoint, url, method in endpoints:
        response = client.open(url, method=method)
        assert response.status_code == 401, endpoint
        assert "error" in response.get_json()


def test_every_form_post_without_login_changes_nothing(app: Flask) -> None:
    client = app.test_client()
    for endpoint, url, method in _routes(app):
        if method != "POST" or url.startswith("/api/"):
            continue
        response = client.post(url, data={"name": "x"})
        assert response.status_code == 302, endpoint
        assert response.headers["Location"].startswith("/login"), endpoint
    assert repo_call(app, "experiments") == []


def test_login_page_is_public_and_carries_a_csrf_token(app: Flask) -> None:
    page = app.test_client().get("/login")
    assert page.status_code == 200
    assert re.search(r'name="csrf_token" value="[^"]{20,}"', page.get_data(as_text=True))


def test_right_password_logs_in_and_returns_to_the_requested_page(app: Flask) -> None:
    add_user(app, "alice", "viewer")
    client = app.test_client()
    token = csrf(client)
    response = client.post(
        "/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token, "next": "/devices"}
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/devices"
    assert client.get("/devices").status_code == 200


def test_wrong_password_shows_a_clear_message_and_opens_no_session(app: Flask) -> None:
    add_user(app, "alice", "viewer")
    client = app.test_client()
    response = login(client, "alice", "wrong password")
    assert response.status_code == 401
    assert "Wrong user name or password." in response.get_data(as_text=True)
    with client.session_transaction() as session:
        assert "user_id" not in session
    assert client.get("/").status_code == 302


def test_unknown_user_gets_the_same_message_as_a_wrong_password(app: Flask) -> None:
    response = login(app.test_client(), "nobody", "whatever1")
    assert response.status_code == 401
    assert "Wrong user name or password." in response.get_data(as_text=True)


def test_repeated_failures_lock_the_user_name_out_even_with_the_right_password(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    add_user(app, "alice", "viewer")
    client = app.test_client()
    for _ in range(app.config["MGS_CONFIG"].auth.max_failed_logins):
        assert login(client, "alice", "guess-guess").status_code == 401
    response = login(client, "alice")
    assert response.status_code == 429
    assert "Too many failed logins" in response.get_data(as_text=True)


def test_failed_logins_are_logged_with_name_and_address(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="server.auth"):
        login(app.test_client(), "mallory", "guess-guess")
    assert any("failed login for 'mallory' from 127.0.0.1" in r.getMessage() for r in caplog.records)


def test_login_does_not_redirect_to_another_site(app: Flask) -> None:
    add_user(app, "alice", "viewer")
    client = app.test_client()
    response = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "csrf_token": csrf(client), "next": "//evil.example/phish"},
    )
    assert response.headers["Location"] == "/"


def test_logout_ends_the_session(app: Flask) -> None:
    client = logged_in(app, "viewer")
    client.post("/logout", data={"csrf_token": csrf(client)})
    assert client.get("/").status_code == 302


def test_post_without_csrf_token_is_refused_with_400(app: Flask) -> None:
    store(app, alerts=(alert(),))
    client = logged_in(app, "officer")
    response = client.post("/alerts/1/acknowledge")
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)
    assert repo_call(app, "alert", 1)["acknowledged_by"] is None


def test_post_with_a_wrong_csrf_token_is_refused_with_400(app: Flask) -> None:
    store(app, alerts=(alert(),))
    client = logged_in(app, "officer")
    assert client.post("/alerts/1/acknowledge", data={"csrf_token": "forged"}).status_code == 400


def test_login_form_without_csrf_token_is_refused(app: Flask) -> None:
    add_user(app, "alice", "viewer")
    response = app.test_client().post("/login", data={"username": "alice", "password": PASSWORD})
    assert response.status_code == 400


def test_viewer_cannot_acknowledge_an_alert(app: Flask) -> None:
    store(app, alerts=(alert(),))
    client = logged_in(app, "viewer")
    response = client.post("/alerts/1/acknowledge", data={"csrf_token": csrf(client)})
    assert response.status_code == 403
    assert "officer" in response.get_data(as_text=True)
    assert repo_call(app, "alert", 1)["acknowledged_by"] is None


def test_viewer_sees_no_acknowledge_button(app: Flask) -> None:
    store(app, alerts=(alert(),))
    page = logged_in(app, "viewer").get("/alerts").get_data(as_text=True)
    assert "Acknowledge</button>" not in page


def test_officer_acknowledges_and_the_alert_records_who(app: Flask) -> None:
    store(app, alerts=(alert(),))
    client = logged_in(app, "officer", name="olga")
    response = client.post("/alerts/1/acknowledge", data={"csrf_token": csrf(client)})
    assert response.status_code == 302
    assert repo_call(app, "alert", 1)["acknowledged_by"] == "olga"
    assert "by olga" in client.get("/alerts?show=all").get_data(as_text=True)


def test_viewer_cannot_edit_assignments(app: Flask) -> None:
    client = logged_in(app, "viewer")
    response = client.post("/animals", data={"name": "M01", "csrf_token": csrf(client)})
    assert response.status_code == 403
    assert repo_call(app, "animals") == []


def test_officer_can_add_an_animal(app: Flask) -> None:
    client = logged_in(app, "officer")
    client.post("/animals", data={"name": "M01", "strain": "C57BL/6J", "csrf_token": csrf(client)})
    assert [a["name"] for a in repo_call(app, "animals")] == ["M01"]


def test_officer_cannot_open_user_administration(app: Flask) -> None:
    assert logged_in(app, "officer").get("/admin/users").status_code == 403


def test_admin_creates_a_user_who_can_then_log_in(app: Flask) -> None:
    client = logged_in(app, "admin")
    client.post(
        "/admin/users",
        data={"username": "vera", "password": "long enough", "role": "viewer", "csrf_token": csrf(client)},
    )
    assert login(app.test_client(), "vera", "long enough").status_code == 302


def test_the_last_admin_cannot_be_demoted(app: Flask) -> None:
    client = logged_in(app, "admin")
    admin_id = [u for u in auth.list_users(connect(app.config["DATABASE"])) if u["username"] == "admin"][0]["id"]
    response = client.post(
        f"/admin/users/{admin_id}/role", data={"role": "viewer", "csrf_token": csrf(client)}, follow_redirects=True
    )
    assert "last admin" in response.get_data(as_text=True)
    assert logged_in(app, "officer", name="o2").get("/").status_code == 200
    assert client.get("/admin/users").status_code == 200


def test_short_passwords_are_refused(app: Flask) -> None:
    with pytest.raises(auth.MgsError, match="at least 8"):
        add_user(app, "bob", "viewer", password="short")


def test_api_token_opens_the_api(app: Flask) -> None:
    token = add_token(app, add_user(app, "script", "viewer"))
    response = app.test_client().get("/api/v1/boxes", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_unknown_api_token_gets_401(app: Flask) -> None:
    response = app.test_client().get("/api/v1/boxes", headers={"Authorization": "Bearer mgs_not-a-token"})
    assert response.status_code == 401
    assert "unknown or revoked" in response.get_json()["error"]


def test_revoked_api_token_gets_401(app: Flask) -> None:
    token = add_token(app, add_user(app, "script", "viewer"))
    db = connect(app.config["DATABASE"])
    auth.revoke_token(db, auth.list_tokens(db)[0]["id"])
    response = app.test_client().get("/api/v1/boxes", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_only_a_hash_of_the_token_is_stored(app: Flask) -> None:
    token = add_token(app, add_user(app, "script", "viewer"))
    dump = "\n".join(connect(app.config["DATABASE"]).conn.iterdump())
    assert token not in dump
    assert token[len(auth.TOKEN_PREFIX) :] not in dump


def test_viewer_token_cannot_do_what_a_viewer_cannot(app: Flask) -> None:
    store(app, alerts=(alert(),))
    token = add_token(app, add_user(app, "script", "viewer"))
    response = app.test_client().post("/alerts/1/acknowledge", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert repo_call(app, "alert", 1)["acknowledged_by"] is None


def test_officer_token_needs_no_csrf_token(app: Flask) -> None:
    store(app, alerts=(alert(),))
    token = add_token(app, add_user(app, "pager", "officer"))
    response = app.test_client().post("/alerts/1/acknowledge", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 302
    assert repo_call(app, "alert", 1)["acknowledged_by"] == "pager"


def test_a_device_token_opens_only_device_views_and_always_as_its_own_device(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    app.add_url_rule(
        "/api/v1/device/whoami",
        "device_whoami",
        auth.require_device(lambda: {"device": auth.current_device()}),
        methods=["GET", "POST"],
    )
    token = add_device_token(app, "rack-a")
    client = app.test_client()
    answer = client.post(
        "/api/v1/device/whoami", json={"device": "rack-b"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200 and answer.get_json() == {"device": "rack-a"}
    assert client.get("/api/v1/boxes", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    assert client.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 403
    unknown = client.get("/api/v1/device/whoami", headers={"Authorization": "Bearer mgsdev_forged"})
    assert unknown.status_code == 401 and "device token" in unknown.get_json()["error"]
    person = add_token(app, add_user(app, "ada", "admin"))
    assert client.get("/api/v1/device/whoami", headers={"Authorization": f"Bearer {person}"}).status_code == 403
    assert client.get("/api/v1/device/whoami").status_code == 401
