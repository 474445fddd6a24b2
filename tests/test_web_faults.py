"""Web faults and attacks (issue 16, faults 5-9, and the API bugs of issue 15) against the real app
over a temporary SQLite file: oversized bodies, out-of-range times and ids, sessions that outlive
a logout or a password reset, and windows dated ahead of the server's clock."""

from __future__ import annotations

import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask import Flask, url_for

from server import auth
from server.db import connect, transaction
from server.repository import MAX_ID
from tests.conftest import Broker, free_port, wait_for
from tests.ingest_support import T0, window
from tests.test_server_run import CLI, http_status, write_config
from tests.web_support import PASSWORD, add_token, add_user, alert, csrf, logged_in, login, make_app, repo_call, store

TOO_BIG_ID = 2**63
YEAR_2099 = datetime(2099, 6, 1, tzinfo=UTC).timestamp()
# Endpoints that answer without a login. A health check may join them; nothing else may.
PUBLIC = {"auth.login", "static"}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return make_app(tmp_path)


def bearer(app: Flask, role: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + add_token(app, add_user(app, f"{role}-script", role))}


def seed(app: Flask) -> dict[str, int]:
    """One row of each kind, so that id 1 exists everywhere."""
    experiment = repo_call(app, "create_experiment", "pilot")
    animal = repo_call(app, "create_animal", "M-1", experiment_id=experiment)
    assignment = repo_call(app, "create_assignment", animal, "rack1", 0, T0)
    rule = repo_call(app, "create_alert_rule", 6.0, 60.0, animal_id=animal)
    store(app, window(seq=1, t=T0 + 10))
    return {"experiment": experiment, "animal": animal, "assignment": assignment, "rule": rule}


# --- route walk ------------------------------------------------------------------------------------


def test_every_route_and_method_refuses_anonymous_callers(app: Flask) -> None:
    """Walk the URL map: without a login, only the login page, static files (and a health check)
    may answer; everything else redirects to the login page (pages) or answers 401 (API)."""
    assert auth.PUBLIC_ENDPOINTS <= PUBLIC | {e for e in auth.PUBLIC_ENDPOINTS if e.rpartition(".")[2] == "health"}
    client = app.test_client()
    walked = 0
    with app.test_request_context():
        rules = [
            (rule, url_for(rule.endpoint, **{a: 1 if a not in ("device", "filename") else "x" for a in rule.arguments}))
            for rule in app.url_map.iter_rules()
            if rule.endpoint not in auth.PUBLIC_ENDPOINTS
        ]
    for rule, url in rules:
        for method in sorted(rule.methods or ()):
            response = client.open(url, method=method)
            walked += 1
            if response.status_code == 302:
                assert response.headers["Location"].startswith("/login"), (rule.endpoint, method)
            else:
                assert response.status_code in (401, 403), (rule.endpoint, method, response.status_code)
    assert walked > 100


# --- fault 5: oversized bodies -----------------------------------------------------------------------


def test_an_oversized_login_form_is_refused_with_413_before_it_is_parsed(app: Flask) -> None:
    client = app.test_client()
    big = "x" * (app.config["MAX_CONTENT_LENGTH"] + 1)
    response = client.post("/login", data={"username": "a", "password": big, "csrf_token": csrf(client)})
    assert response.status_code == 413
    assert "larger than the 1024 KB the server accepts" in response.get_data(as_text=True)


def test_an_oversized_json_body_is_a_json_413(app: Flask) -> None:
    response = app.test_client().post(
        "/api/v1/animals",
        headers=bearer(app, "officer"),
        data=b'{"name": "' + b"x" * 2_000_000 + b'"}',
        content_type="application/json",
    )
    assert response.status_code == 413
    assert "max_request_kb" in response.get_json()["error"]


# --- fault 6: times far outside the contract ---------------------------------------------------------


@pytest.mark.parametrize("start", [1e18, -1e18, 4102444800, "1e18", "3000-01-01T00:00:00Z", float("1e308")])
def test_an_assignment_outside_1970_2099_is_refused(app: Flask, start: object) -> None:
    animal = repo_call(app, "create_animal", "M-1")
    response = app.test_client().post(
        "/api/v1/assignments",
        headers=bearer(app, "officer"),
        json={"animal_id": animal, "device": "rack1", "box": 0, "start_time": start},
    )
    assert response.status_code == 400
    assert "1970-2099" in response.get_json()["error"] or "ISO-8601" in response.get_json()["error"]
    assert repo_call(app, "assignments") == []


def test_a_form_assignment_starting_in_year_31_million_is_a_message_not_a_500(app: Flask) -> None:
    animal = repo_call(app, "create_animal", "M-1")
    client = logged_in(app, "officer")
    response = client.post(
        "/assignments",
        data={"animal_id": animal, "box": "rack1/0", "start": "1e18", "csrf_token": csrf(client)},
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "outside the years 1970-2099" in response.get_data(as_text=True)


def test_pages_survive_an_out_of_range_time_stored_before_times_were_bounded(app: Flask) -> None:
    ids = seed(app)
    db = connect(app.config["DATABASE"])
    try:
        with transaction(db) as conn:
            conn.execute("UPDATE assignments SET end_time = 1e18 WHERE id = ?", [ids["assignment"]])
    finally:
        db.conn.close()
    client = logged_in(app, "viewer")
    for url in ("/assignments", f"/animals/{ids['animal']}", "/boxes/rack1/0", "/api/v1/assignments"):
        response = client.get(url)
        assert response.status_code == 200, url
    assert "invalid time 1e+18" in client.get("/assignments").get_data(as_text=True)


def test_rule_and_export_times_are_bounded_too(app: Flask) -> None:
    ids = seed(app)
    client, headers = app.test_client(), bearer(app, "officer")
    for url in (
        "/api/v1/export?start=-1e18",
        "/api/v1/alerts?since=1e18",
        "/api/v1/boxes/rack1/0/scores?end=nan",
        f"/api/v1/animals/{ids['animal']}/scores?start=inf",
        "/api/v1/alerts?until=99999-01-01T00:00:00Z",
    ):
        response = client.get(url, headers=headers)
        assert response.status_code == 400, url
        assert response.get_json()["error"].startswith("parameter"), url
    response = client.post(
        "/api/v1/alert-rules", headers=headers, json={"animal_id": ids["animal"], "threshold": 5, "duration_s": 1e18}
    )
    assert response.status_code == 400


# --- fault 7: ids beyond 64 bits, ids of the wrong type -----------------------------------------------


def test_every_id_route_answers_404_for_ids_beyond_64_bits(app: Flask) -> None:
    seed(app)
    client = app.test_client()
    headers = bearer(app, "admin")
    rules = [rule for rule in app.url_map.iter_rules() if "<int:" in rule.rule]
    assert len(rules) >= 15
    for rule in rules:
        path = rule.rule.replace("<device>", "rack1")
        for arg in rule.arguments - {"device"}:
            path = path.replace(f"<int:{arg}>", str(TOO_BIG_ID))
        for method in sorted((rule.methods or set()) - {"OPTIONS"}):
            response = client.open(path, method=method, headers=headers, json={})
            assert response.status_code == 404, (method, path, response.status_code)
    assert client.get(f"/api/v1/animals/{MAX_ID}", headers=headers).status_code == 404


@pytest.mark.parametrize("value", [TOO_BIG_ID, -1, 0, [1], {"id": 1}, "1", 1.5, True, None])
def test_ids_in_json_bodies_must_be_whole_numbers_in_range(app: Flask, value: object) -> None:
    ids = seed(app)
    client, headers = app.test_client(), bearer(app, "officer")
    answers = [
        client.post(
            "/api/v1/assignments",
            headers=headers,
            json={"animal_id": value, "device": "rack2", "box": 1, "start_time": T0},
        ),
        client.post(
            "/api/v1/alert-rules", headers=headers, json={"animal_id": value, "threshold": 5, "duration_s": 60}
        ),
        client.patch(f"/api/v1/assignments/{ids['assignment']}", headers=headers, json={"animal_id": value}),
    ]
    if value is not None:  # no experiment is a valid choice for an animal
        answers.append(client.post("/api/v1/animals", headers=headers, json={"name": "M-2", "experiment_id": value}))
        answers.append(client.patch(f"/api/v1/animals/{ids['animal']}", headers=headers, json={"experiment_id": value}))
    for response in answers:
        if value == "1":  # ASCII digits in a string are read as the number
            assert response.status_code in (200, 201, 409), response.get_json()
        else:
            assert response.status_code in (400, 404), response.get_json()
            assert "error" in response.get_json()


def test_a_body_field_named_like_the_path_id_is_an_unknown_field(app: Flask) -> None:
    ids = seed(app)
    client, headers = app.test_client(), bearer(app, "officer")
    for url, body in (
        (f"/api/v1/animals/{ids['animal']}", {"animal_id": 2}),
        (f"/api/v1/animals/{ids['animal']}", {"self": 2}),
        (f"/api/v1/assignments/{ids['assignment']}", {"assignment_id": 2}),
    ):
        response = client.patch(url, headers=headers, json=body)
        assert response.status_code == 400, (url, body)
        assert "unknown" in response.get_json()["error"]


@pytest.mark.parametrize(
    "query",
    [
        "animal_id=9223372036854775808",
        "animal_id=-1",
        "animal_id=%D9%A3",
        "experiment_id=1_0",
        "box=99999999999999999999",
        "box=16",
        "box=-1",
        "limit=-1",
        "limit=0",
        "limit=10001",
        "limit=1e3",
        "scope=animal:9223372036854775808",
        "scope=box:rack1/99999999999999999999",
        "scope=experiment:%D9%A3",
    ],
)
def test_out_of_range_query_parameters_are_400_with_the_bound(app: Flask, query: str) -> None:
    seed(app)
    client, headers = app.test_client(), bearer(app, "officer")
    paths = [
        "/api/v1/export?start=0&",
        "/api/v1/alerts?",
        "/api/v1/assignments?",
        "/api/v1/animals?",
        "/api/v1/quarantine?",
    ]
    name = query.split("=")[0]
    accepting = {
        "animal_id": paths[:3],
        "experiment_id": [paths[0], paths[3]],
        "box": paths[:3],
        "limit": paths[1::3],
        "scope": paths[:1],
    }[name]
    for path in accepting:
        response = client.get(path + query, headers=headers)
        assert response.status_code == 400, (path + query, response.status_code)
        message = response.get_json()["error"]
        assert "from" in message or "must be" in message, message


def test_form_ids_beyond_64_bits_are_messages_not_500s(app: Flask) -> None:
    seed(app)
    client = logged_in(app, "admin")
    token = csrf(client)
    for url, data in (
        ("/rules", {"target": f"animal:{TOO_BIG_ID}", "threshold": "5", "duration_min": "1"}),
        ("/rules", {"target": "animal:٣", "threshold": "5", "duration_min": "1"}),
        ("/animals", {"name": "M-9", "experiment_id": str(TOO_BIG_ID)}),
        ("/assignments", {"animal_id": str(TOO_BIG_ID), "box": "rack1/0"}),
        ("/assignments", {"animal_id": "1", "box": "rack1/x"}),
        ("/admin/tokens", {"user_id": str(TOO_BIG_ID), "name": "t"}),
    ):
        response = client.post(url, data={**data, "csrf_token": token}, follow_redirects=True)
        assert response.status_code == 200, url
        assert 'class="flash error"' in response.get_data(as_text=True), (url, data)


# --- fault 8: sessions end on logout and on a password change -----------------------------------------


def _copy_session(app: Flask, client: object) -> object:
    """A second browser holding a copy of `client`'s session cookie (a stolen cookie)."""
    thief = app.test_client()
    thief.set_cookie("mgs_session", client.get_cookie("mgs_session").value)  # type: ignore[attr-defined]
    return thief


def test_a_copied_session_cookie_is_dead_after_logout(app: Flask) -> None:
    client = logged_in(app, "viewer")
    thief = _copy_session(app, client)
    assert thief.get("/devices").status_code == 200
    client.post("/logout", data={"csrf_token": csrf(client)})
    response = thief.get("/devices")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")
    assert thief.get("/api/v1/boxes").status_code == 401


def test_a_password_reset_by_an_admin_ends_the_users_sessions(app: Flask) -> None:
    victim = logged_in(app, "officer", name="olga")
    admin = logged_in(app, "admin")
    olga = _user_id(app, "olga")
    response = admin.post(
        f"/admin/users/{olga}/password", data={"password": "a new password 1", "csrf_token": csrf(admin)}
    )
    assert response.status_code == 302
    assert victim.get("/devices").status_code == 302
    assert login(app.test_client(), "olga", "a new password 1").status_code == 302
    assert login(app.test_client(), "olga", PASSWORD).status_code == 401
    assert admin.get("/admin/users").status_code == 200


def test_an_admin_changing_their_own_password_stays_logged_in_but_old_copies_do_not(app: Flask) -> None:
    admin = logged_in(app, "admin")
    thief = _copy_session(app, admin)
    admin.post(
        f"/admin/users/{_user_id(app, 'admin')}/password",
        data={"password": "another password", "csrf_token": csrf(admin)},
    )
    assert admin.get("/admin/users").status_code == 200
    assert thief.get("/admin/users").status_code == 302


def test_logging_out_in_one_browser_keeps_api_tokens_working(app: Flask) -> None:
    headers = bearer(app, "viewer")
    client = app.test_client()
    assert login(client, "viewer-script").status_code == 302
    client.post("/logout", data={"csrf_token": csrf(client)})
    assert app.test_client().get("/api/v1/boxes", headers=headers).status_code == 200


def _user_id(app: Flask, name: str) -> int:
    db = connect(app.config["DATABASE"])
    try:
        return db.execute("SELECT id FROM users WHERE username = ?", [name]).fetchone()[0]
    finally:
        db.conn.close()


# --- fault 9: a window dated 2099 --------------------------------------------------------------------


def test_a_window_from_the_future_shows_clock_ahead_and_is_counted(app: Flask) -> None:
    store(app, window(seq=1, t=YEAR_2099, score=2.0), window(box=1, seq=2, t=time.time() - 2, score=2.0))
    viewer = logged_in(app, "viewer")
    overview = viewer.get("/?fragment=1").get_data(as_text=True)
    assert 'data-box="rack1/0" data-state="future"' in overview
    assert "clock ahead" in overview
    assert 'data-box="rack1/1" data-state="ok"' in overview
    boxes = {b["box"]: b for b in viewer.get("/api/v1/boxes").get_json()["boxes"]}
    assert (boxes[0]["clock_ahead"], boxes[1]["clock_ahead"]) == (True, False)
    assert boxes[0]["ahead_s"] > 365 * 86400
    assert viewer.get("/api/v1/devices").get_json()["devices"][0]["boxes_clock_ahead"] == 1
    assert "clock ahead: 1 box" in viewer.get("/devices?fragment=1").get_data(as_text=True)


def test_a_window_within_the_clock_skew_allowance_is_a_current_score(tmp_path: Path) -> None:
    app = make_app(tmp_path, clock_skew_s=120.0)
    store(app, window(seq=1, t=time.time() + 60, score=2.0))
    viewer = logged_in(app, "viewer")
    assert 'data-state="ok"' in viewer.get("/?fragment=1").get_data(as_text=True)
    assert viewer.get("/api/v1/devices").get_json()["devices"][0]["boxes_clock_ahead"] == 0


# --- issue 15: API bugs -------------------------------------------------------------------------------


def test_limit_must_be_from_1_to_10000(app: Flask) -> None:
    client, headers = app.test_client(), bearer(app, "officer")
    for limit in ("-1", "0", "10001", "abc"):
        response = client.get(f"/api/v1/alerts?limit={limit}", headers=headers)
        assert response.status_code == 400
        assert "from 1 to 10000" in response.get_json()["error"]
    assert client.get("/api/v1/alerts?limit=10000", headers=headers).status_code == 200


def test_an_unknown_box_is_404_and_a_known_one_200(app: Flask) -> None:
    seed(app)
    client, headers = app.test_client(), bearer(app, "viewer")
    assert client.get("/api/v1/boxes/rack1/0/scores", headers=headers).status_code == 200
    for url in ("/api/v1/boxes/rack1/7/scores", "/api/v1/boxes/nosuch/0/scores"):
        response = client.get(url, headers=headers)
        assert response.status_code == 404
        assert "has never reported" in response.get_json()["error"]


def test_a_date_without_a_time_is_midnight_utc(app: Flask) -> None:
    store(app, window(seq=1, t=T0))
    client, headers = app.test_client(), bearer(app, "viewer")
    response = client.get("/api/v1/boxes/rack1/0/scores?start=2026-12-02&end=2026-12-03", headers=headers)
    assert response.status_code == 200
    body = response.get_json()
    assert (body["start"], body["end"]) == (
        datetime(2026, 12, 2, tzinfo=UTC).timestamp(),
        datetime(2026, 12, 3, tzinfo=UTC).timestamp(),
    )
    response = client.get("/api/v1/boxes/rack1/0/scores?start=2026-12-02T10:00:00", headers=headers)
    assert response.status_code == 400
    assert "must be UTC" in response.get_json()["error"] and "2026-03-02" in response.get_json()["error"]


def test_the_csv_content_type_names_the_charset_once(app: Flask) -> None:
    store(app, window(seq=1, t=T0))
    response = app.test_client().get(f"/api/v1/export?start={T0 - 10}&format=csv", headers=bearer(app, "viewer"))
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"


@pytest.mark.parametrize(
    "path",
    [
        "/animals/٣",
        "/api/v1/animals/٣",
        "/api/v1/animals/%EF%BC%91",
        "/api/v1/animals/99999999999999999999",
        "/api/v1/animals/+1",
    ],
)
def test_ids_in_paths_are_ascii_digits_within_64_bits(app: Flask, path: str) -> None:
    seed(app)
    client = logged_in(app, "viewer")
    assert client.get("/animals/1").status_code == 200
    assert client.get(path).status_code == 404


# --- one open-redirect guard ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/x",
        "/\\evil.example",
        "https://evil.example/",
        "/\t/evil.example",
        "/\n/evil.example",
        "javascript:alert(1)",
        "",
        None,
        "evil.example",
    ],
)
def test_redirect_targets_off_this_server_fall_back(target: str | None) -> None:
    assert auth.local_path(target, "/fallback") == "/fallback"


@pytest.mark.parametrize("target", ["/", "/alerts?show=all", "/boxes/rack1/0", "/animals/1?x=%2F%2Fy"])
def test_redirect_targets_on_this_server_pass(target: str) -> None:
    assert auth.local_path(target, "/fallback") == target


def test_the_acknowledge_form_does_not_go_back_to_another_site(app: Flask) -> None:
    store(app, window(seq=1, t=T0), alerts=(alert(),))
    client = logged_in(app, "officer")
    for back in ("/\\evil.example", "//evil.example"):
        response = client.post("/alerts/1/acknowledge", data={"back": back, "csrf_token": csrf(client)})
        assert response.status_code == 302
        assert response.headers["Location"] == "/alerts"


# --- fault 5 against a real `mgs-server run` ----------------------------------------------------------


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _post_announcing(port: int, length: int, sent: int) -> str:
    """POST /login announcing `length` bytes of form, send the first `sent`, return the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            f"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {length}\r\n\r\n".encode()
            + b"password="
            + b"x" * (sent - 9)
        )
        return conn.makefile("rb").readline().decode()


def _post_chunked(port: int, chunks: int, chunk_bytes: int) -> str:
    """POST /login with a chunked body and no Content-Length; return the status line."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(
            b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for _ in range(chunks):
            conn.sendall(f"{chunk_bytes:x}\r\n".encode() + b"x" * chunk_bytes + b"\r\n")
        conn.sendall(b"0\r\n\r\n")
        return conn.makefile("rb").readline().decode()


def test_a_real_server_refuses_200_mb_logins_with_413_and_bounded_memory(tmp_path: Path, broker: Broker) -> None:
    http_port = free_port()
    config = write_config(tmp_path, broker.port, http_port)
    server = subprocess.Popen(
        CLI + ["run", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{http_port}/login") == 200 or server.poll() is not None,
            timeout=30,
            what="the dashboard to answer",
        )
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        before = _rss_kb(server.pid)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _post_announcing(http_port, 200 * 1024 * 1024, 256 * 1024), range(4)))
        answers.append(_post_chunked(http_port, 40, 64 * 1024))  # 2.5 MB without announcing it
        assert all(" 413 " in a for a in answers), answers
        assert _rss_kb(server.pid) - before < 30 * 1024
        assert http_status(f"http://127.0.0.1:{http_port}/login") == 200
    finally:
        server.terminate()
        server.communicate(timeout=30)
