"""The Flask application factory: dashboard pages, REST API and logins over one SQLite file.

The schema is migrated once, here, before the first request; each request then opens its own
connection (`server.request_db`).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, jsonify, render_template
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.exceptions import NotFound as HTTPNotFound
from werkzeug.routing import BaseConverter

from mgs_core.errors import MgsError
from server import (
    admin,
    api,
    auth,
    dashboard,
    dataset_download,
    exports,
    records,
    review,
    rollout_views,
    samples,
    uploads,
)
from server.config import ServerConfig, secret_key
from server.db import connect
from server.repository import MAX_ID, Conflict, NotFound
from server.request_db import close_db, release_db
from server.timefmt import moment


def create_app(config: ServerConfig | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the web application for `config` (defaults for everything when None).

    `test_config` overrides Flask settings after the config is applied (tests pass TESTING,
    or SECRET_KEY to avoid writing a secret file)."""
    config = config or ServerConfig()
    app = Flask(__name__)
    app.url_map.converters["int"] = IdConverter
    app.config.update(
        MGS_CONFIG=config,
        DATABASE=str(config.database.path),
        PERMANENT_SESSION_LIFETIME=timedelta(hours=config.auth.session_hours),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.http.cookie_secure,
        SESSION_COOKIE_NAME="mgs_session",
        JSON_SORT_KEYS=False,
        # Every form and JSON body here is small: refuse big ones before they are read into memory.
        MAX_CONTENT_LENGTH=config.http.max_request_kb * 1024,
        MAX_FORM_MEMORY_SIZE=config.http.max_request_kb * 1024,
    )
    if test_config:
        app.config.update(test_config)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = secret_key(config)
    connect(app.config["DATABASE"]).conn.close()
    app.extensions["mgs_login_throttle"] = auth.LoginThrottle(
        config.auth.max_failed_logins, config.auth.lockout_minutes * 60
    )

    app.before_request(uploads.allow_large_bodies)  # before auth's CSRF check reads the form
    app.before_request(rollout_views.allow_large_upload)
    app.register_blueprint(auth.bp)
    app.register_blueprint(dashboard.bp)
    app.register_blueprint(records.bp)
    app.register_blueprint(exports.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(review.bp)
    app.register_blueprint(samples.bp)
    app.register_blueprint(dataset_download.bp)
    uploads.register(app)
    rollout_views.register(app)
    app.after_request(release_db)
    app.teardown_appcontext(close_db)
    app.jinja_env.globals.update(
        csrf_token=auth.csrf_token,
        has_role=auth.has_role,
        current_user=auth.current_user,
        dashboard_config=config.dashboard,
    )
    app.jinja_env.filters.update(utc=format_utc, iso=format_iso)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(
        RequestEntityTooLarge,
        lambda exc: _error(
            413,
            f"This request is larger than the {config.http.max_request_kb} KB the server accepts "
            "([http] max_request_kb). Send less at a time.",
        ),
    )
    app.register_error_handler(NotFound, lambda exc: _error(404, str(exc)))
    app.register_error_handler(Conflict, lambda exc: _error(409, str(exc)))
    app.register_error_handler(MgsError, lambda exc: _error(400, str(exc)))
    return app


class IdConverter(BaseConverter):
    """`<int:...>` in every route: ASCII digits up to 2^63-1 (the largest SQLite integer).

    Werkzeug's own converter also takes other scripts' digits ('/animals/٣' is animal 3) and
    numbers SQLite cannot hold (a 500 from OverflowError); both are 404 here. Too large is said
    at once: rejecting the match would let another rule answer 405 for the same path."""

    regex = r"[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_ID:
            raise HTTPNotFound(f"id {value} is larger than any id can be ({MAX_ID}); no such row exists")
        return number

    def to_url(self, value: int) -> str:
        return str(int(value))


def format_utc(ts: float | None) -> str:
    """Unix seconds -> 'YYYY-MM-DD HH:MM:SS UTC' (pages turn it into local time in the browser)."""
    if ts is None:
        return "–"
    dt = moment(ts)
    return f"invalid time {ts!r}" if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S UTC")


def format_iso(ts: float | None) -> str:
    dt = None if ts is None else moment(ts)
    return "" if dt is None else dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _error(status: int, message: str) -> Any:
    if auth.wants_json():
        response = jsonify(error=message)
        response.status_code = status
        return response
    return render_template("error.html", title=_TITLES.get(status, "Error"), message=message), status


def _http_error(exc: HTTPException) -> Any:
    if exc.code is None or exc.code < 400:
        return exc
    return _error(exc.code, exc.description or exc.name)


_TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Too large",
    429: "Too many attempts",
}
