"""Who is asking: logins, roles, API tokens and CSRF protection for every page and API call.

Nothing the server shows answers without an identity: `identify` runs before every request and
turns away anonymous callers (a 401 for the API, a redirect to the login page for pages), so a
new page or endpoint is protected even if its author forgets a decorator. `require_role` then
narrows a view to officers or admins. Scripts authenticate with `Authorization: Bearer <token>`;
only a SHA-256 of each token is stored, so a stolen database does not hand out API access.

Form posts from a browser carry a per-session CSRF token (hidden field `csrf_token` or header
`X-CSRF-Token`); requests authenticated by a bearer token need none, because a browser never
sends that header on its own. Logging out, or a password change or reset, ends every session of
that user, also copies of its cookie (`end_sessions`). Failed logins are logged and, after a
few in a row for one user name from one address, refused for a while.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlite_utils
from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.security import check_password_hash, generate_password_hash

from mgs_core.errors import MessageError, MgsError
from mgs_core.messages import validate_name
from server.db import transaction
from server.repository import ROLES
from server.request_db import get_db

log = logging.getLogger(__name__)

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_PREFIX = "mgs_"
DEVICE_TOKEN_PREFIX = "mgsdev_"
MIN_PASSWORD_CHARS = 8
TOKEN_LAST_USED_RESOLUTION_S = 60.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Endpoints that answer without a login: the login form itself and the CSS it needs.
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static"})


# --- users and tokens in the database -------------------------------------------------------------


def role_rank(role: str) -> int:
    """viewer < officer < admin."""
    if role not in ROLES:
        raise MgsError(f"role {role!r} must be one of {', '.join(ROLES)}")
    return ROLES.index(role)


def _check_username(username: str) -> str:
    try:
        return validate_name(username, "user name")
    except MessageError as exc:
        raise MgsError(str(exc)) from None


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise MgsError(f"the password must have at least {MIN_PASSWORD_CHARS} characters")


def create_user(db: sqlite_utils.Database, username: str, password: str, role: str) -> int:
    """Add a login; a taken name is an error (the name appears in the audit trail)."""
    _check_username(username)
    role_rank(role)
    _check_password(password)
    with transaction(db) as conn:
        if conn.execute("SELECT 1 FROM users WHERE username = ?", [username]).fetchone():
            raise MgsError(f"user {username!r} already exists; choose another name or change that user's role")
        cursor = conn.execute(
            "INSERT INTO users (username, password_hash, role, created) VALUES (?, ?, ?, ?)",
            [username, generate_password_hash(password), role, time.time()],
        )
    return int(cursor.lastrowid or 0)


def list_users(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """id, username, role, created, tokens (count of API tokens)."""
    return list(
        db.query(
            "SELECT u.id, u.username, u.role, u.created, "
            "(SELECT COUNT(*) FROM api_tokens t WHERE t.user_id = u.id) AS tokens FROM users u ORDER BY u.username"
        )
    )


def get_user(db: sqlite_utils.Database, user_id: int) -> dict[str, Any] | None:
    """id, username, role, session_generation (see `end_sessions`)."""
    row = db.execute("SELECT id, username, role, session_generation FROM users WHERE id = ?", [user_id]).fetchone()
    return None if row is None else {"id": row[0], "username": row[1], "role": row[2], "session_generation": row[3]}


def set_role(db: sqlite_utils.Database, user_id: int, role: str) -> None:
    role_rank(role)
    with transaction(db) as conn:
        if role != "admin" and _is_last_admin(conn, user_id):
            raise MgsError("this is the last admin; make another user admin first")
        conn.execute("UPDATE users SET role = ? WHERE id = ?", [role, user_id])


def set_password(db: sqlite_utils.Database, user_id: int, password: str) -> None:
    _check_password(password)
    with transaction(db) as conn:
        conn.execute(
            "UPDATE users SET password_hash = ?, session_generation = session_generation + 1 WHERE id = ?",
            [generate_password_hash(password), user_id],
        )


def end_sessions(db: sqlite_utils.Database, user_id: int) -> None:
    """Make every login session of this user invalid, including copies of its cookie.

    Sessions are signed cookies that the server cannot delete, so each one carries the user's
    session generation from the time of login, and a session with an older one is refused."""
    with transaction(db) as conn:
        conn.execute("UPDATE users SET session_generation = session_generation + 1 WHERE id = ?", [user_id])


def delete_user(db: sqlite_utils.Database, user_id: int) -> None:
    """Remove a login and (by cascade) its API tokens."""
    with transaction(db) as conn:
        if _is_last_admin(conn, user_id):
            raise MgsError("this is the last admin; make another user admin first")
        conn.execute("DELETE FROM users WHERE id = ?", [user_id])


def has_admin(db: sqlite_utils.Database) -> bool:
    return db.execute("SELECT 1 FROM users WHERE role = 'admin' LIMIT 1").fetchone() is not None


def _is_last_admin(conn: Any, user_id: int) -> bool:
    admins = [row[0] for row in conn.execute("SELECT id FROM users WHERE role = 'admin'")]
    return admins == [user_id]


def check_login(db: sqlite_utils.Database, username: str, password: str) -> dict[str, Any] | None:
    """The user if the password matches, else None (same answer for an unknown name)."""
    row = db.execute(
        "SELECT id, username, role, password_hash, session_generation FROM users WHERE username = ?", [username]
    ).fetchone()
    if row is None:
        # Hash anyway so a wrong name and a wrong password take the same time.
        check_password_hash(_DUMMY_HASH, password)
        return None
    if not check_password_hash(row[3], password):
        return None
    return {"id": row[0], "username": row[1], "role": row[2], "session_generation": row[4]}


def _token_hash(token: str) -> str:
    """Tokens are 256 random bits, so a plain SHA-256 is enough (no slow hash needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(db: sqlite_utils.Database, user_id: int, name: str) -> str:
    """Create an API token acting as `user_id` (with that user's role); return it once, in clear."""
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise MgsError("a token needs a name of 1-100 characters saying what uses it (e.g. 'alerting script')")
    if get_user(db, user_id) is None:
        raise MgsError(f"user {user_id} does not exist")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO api_tokens (token_hash, user_id, name, created) VALUES (?, ?, ?, ?)",
            [_token_hash(token), user_id, name.strip(), time.time()],
        )
    return token


def list_tokens(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """id, name, user_id, username, role, created, last_used."""
    return list(
        db.query(
            "SELECT t.id, t.name, t.user_id, u.username, u.role, t.created, t.last_used "
            "FROM api_tokens t JOIN users u ON u.id = t.user_id ORDER BY u.username, t.id"
        )
    )


def revoke_token(db: sqlite_utils.Database, token_id: int) -> None:
    with transaction(db) as conn:
        if conn.execute("DELETE FROM api_tokens WHERE id = ?", [token_id]).rowcount == 0:
            raise MgsError(f"token {token_id} does not exist (already revoked?)")


def user_for_token(db: sqlite_utils.Database, token: str) -> dict[str, Any] | None:
    """The token's user, or None for an unknown or revoked token. `last_used` is refreshed at most
    once a minute, so a script polling every second does not add a write per request."""
    row = db.execute(
        "SELECT u.id, u.username, u.role, t.id, t.last_used FROM api_tokens t JOIN users u ON u.id = t.user_id "
        "WHERE t.token_hash = ?",
        [_token_hash(token)],
    ).fetchone()
    if row is None:
        return None
    now = time.time()
    if row[4] is None or now - row[4] > TOKEN_LAST_USED_RESOLUTION_S:
        with transaction(db) as conn:
            conn.execute("UPDATE api_tokens SET last_used = ? WHERE id = ?", [now, row[3]])
    return {"id": row[0], "username": row[1], "role": row[2], "token_id": row[3]}


def create_device_token(db: sqlite_utils.Database, device: str) -> str:
    """Create the HTTP credential of edge box `device`; return it once, in clear.

    A device token opens only views marked with `require_device`, and always as `device`: an edge
    box can upload samples and download models as itself and as nobody else."""
    validate_name(device)
    token = DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction(db) as conn:
        conn.execute(
            "INSERT INTO device_tokens (device, token_hash, created) VALUES (?, ?, ?)",
            [device, _token_hash(token), time.time()],
        )
    return token


def revoke_device_tokens(db: sqlite_utils.Database, device: str) -> int:
    """Revoke every HTTP credential of `device` (a stolen or replaced edge box); returns how many."""
    with transaction(db) as conn:
        return int(conn.execute("DELETE FROM device_tokens WHERE device = ?", [device]).rowcount)


def device_for_token(db: sqlite_utils.Database, token: str) -> str | None:
    """The device a device token belongs to, or None for an unknown or revoked token."""
    row = db.execute(
        "SELECT id, device, last_used FROM device_tokens WHERE token_hash = ?", [_token_hash(token)]
    ).fetchone()
    if row is None:
        return None
    now = time.time()
    if row[2] is None or now - row[2] > TOKEN_LAST_USED_RESOLUTION_S:
        with transaction(db) as conn:
            conn.execute("UPDATE device_tokens SET last_used = ? WHERE id = ?", [now, row[0]])
    return str(row[1])


_DUMMY_HASH = generate_password_hash("not a real password")


# --- failed-login throttle ------------------------------------------------------------------------


class LoginThrottle:
    """Counts recent failed logins per (user name, address); refuses after `limit` within `window_s`.

    In memory on purpose: one server process holds a facility, and a restart clearing the counts
    is harmless (an attacker gains `limit` guesses per restart)."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now - t < self.window_s]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def locked_for(self, username: str, address: str, now: float | None = None) -> float:
        """Seconds until this pair may try again (0 = may try now)."""
        now = time.time() if now is None else now
        with self._lock:
            times = self._recent((username.lower(), address), now)
            if len(times) < self.limit:
                return 0.0
            return max(0.0, times[-self.limit] + self.window_s - now)

    def failed(self, username: str, address: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            key = (username.lower(), address)
            self._failures[key] = self._recent(key, now) + [now]

    def succeeded(self, username: str, address: str) -> None:
        with self._lock:
            self._failures.pop((username.lower(), address), None)


# --- per-request identity, CSRF and decorators ----------------------------------------------------


def wants_json() -> bool:
    """API callers get JSON errors; people in a browser get pages and redirects."""
    return request.blueprint == "api" or request.path.startswith("/api/") or "Authorization" in request.headers


def current_user() -> dict[str, Any] | None:
    return g.get("user")


def current_device() -> str | None:
    """The edge box behind this request's device token (None for people and scripts)."""
    return g.get("device")


def csrf_token() -> str:
    """The session's CSRF token (created on first use); templates put it in every form."""
    token = session.get("csrf")
    if not token:
        token = secrets.token_urlsafe(32)
        session["csrf"] = token
    return token


def _csrf_ok() -> bool:
    expected = session.get("csrf")
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    return bool(expected) and hmac.compare_digest(str(expected), sent)


def _unauthenticated(reason: str) -> Response:
    if wants_json():
        response = jsonify(error=reason)
        response.status_code = 401
        response.headers["WWW-Authenticate"] = 'Bearer realm="mgs-rack"'
        return response
    target = request.full_path if request.query_string else request.path
    return redirect(url_for("auth.login", next=target))


def _forbidden(needed: str) -> Response:
    user = current_user() or {}
    message = (
        f"this needs the {needed} role; you are logged in as {user.get('username')} "
        f"({user.get('role')}). Ask an administrator if you need it."
    )
    if wants_json():
        response = jsonify(error=message)
    else:
        response = Response(render_template("error.html", title="Not allowed", message=message))
    response.status_code = 403
    return response


@bp.before_app_request
def identify() -> Response | None:
    """Attach the caller to `g.user` and refuse anonymous requests (see the module docstring)."""
    g.user = None
    g.device = None
    g.via_token = False
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip().startswith(DEVICE_TOKEN_PREFIX):
            return _identify_device(token.strip())
        user = user_for_token(get_db(), token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if user is None:
            log.warning("rejected API token from %s for %s", request.remote_addr, request.path)
            return _unauthenticated("unknown or revoked API token")
        g.user, g.via_token = user, True
        return None
    user_id = session.get("user_id")
    if user_id is not None:
        g.user = get_user(get_db(), user_id)
        if g.user is None or g.user["session_generation"] != session.get("generation"):
            # deleted, logged out elsewhere or password changed since this session began
            g.user = None
            session.clear()
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        return _unauthenticated("log in or send 'Authorization: Bearer <token>'")
    if request.method not in SAFE_METHODS and not _csrf_ok():
        log.warning(
            "refused %s %s from %s: missing or wrong CSRF token", request.method, request.path, request.remote_addr
        )
        abort(400, description="This form has expired or lacks its security token. Reload the page and try again.")
    return None


def _identify_device(token: str) -> Response | None:
    device = device_for_token(get_db(), token)
    if device is None:
        log.warning("rejected device token from %s for %s", request.remote_addr, request.path)
        return _unauthenticated("unknown or revoked device token; provision the device again")
    view = current_app.view_functions.get(request.endpoint or "")
    if not getattr(view, "device_view", False):
        response = jsonify(error="a device token opens only the device endpoints (/api/v1/device/...)")
        response.status_code = 403
        return response
    g.device, g.via_token = device, True
    return None


def require_device(view: F) -> F:
    """Open the view to edge boxes (device tokens) only; `current_device()` names the caller."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_device() is None:
            response = jsonify(error="this endpoint is for edge boxes: send the device token of `provision-device`")
            response.status_code = 403
            return response
        return view(*args, **kwargs)

    wrapped.device_view = True  # type: ignore[attr-defined]
    return wrapped  # type: ignore[return-value]


def require_role(role: str) -> Callable[[F], F]:
    """Allow the view to users of `role` or higher (viewer < officer < admin)."""
    needed = role_rank(role)

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                return _unauthenticated("log in or send 'Authorization: Bearer <token>'")
            if role_rank(user["role"]) < needed:
                return _forbidden(role)
            return view(*args, **kwargs)

        return wrapped  # type: ignore[return-value]

    return decorate


def has_role(role: str) -> bool:
    """For templates: show a control only to users who may use it."""
    user = current_user()
    return user is not None and role_rank(user["role"]) >= role_rank(role)


# --- login and logout pages -----------------------------------------------------------------------


def local_path(target: str | None, default: str) -> str:
    """`target` if it is a path on this server, else `default`: the one guard against open redirects
    (after login, and back to the page a form came from).

    Browsers read '//host' and '/\\host' as another site, and drop tabs and newlines first, so '/<tab>/host'
    is one too: paths with a backslash or a control character are refused as well."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()
        and not urlsplit(target).netloc
    ):
        return target
    return default


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    address = request.remote_addr or "?"
    throttle: LoginThrottle = current_app.extensions["mgs_login_throttle"]
    wait = throttle.locked_for(username, address)
    if wait > 0:
        log.warning("login for %r from %s refused: locked out for %.0f s more", username, address, wait)
        flash(f"Too many failed logins for {username!r}. Try again in {max(1, round(wait / 60))} min.", "error")
        return render_template("login.html", next=request.form.get("next", ""), username=username), 429
    user = check_login(get_db(), username, password)
    if user is None:
        throttle.failed(username, address)
        log.warning("failed login for %r from %s", username, address)
        flash("Wrong user name or password.", "error")
        return render_template("login.html", next=request.form.get("next", ""), username=username), 401
    throttle.succeeded(username, address)
    session.clear()  # a fresh session on login: no fixation of a pre-login session
    session.permanent = True
    session["user_id"] = user["id"]
    session["generation"] = user["session_generation"]
    log.info("user %r logged in from %s", user["username"], address)
    return redirect(local_path(request.form.get("next"), url_for("dashboard.overview")))


@bp.route("/logout", methods=["POST"])
def logout() -> Any:
    user = current_user()
    session.clear()
    if user:
        if not g.via_token:
            end_sessions(get_db(), user["id"])
        log.info("user %r logged out", user["username"])
    flash("You are logged out.", "info")
    return redirect(url_for("auth.login"))
