"""Users & tokens administration pages (admins only).

A new API token is shown exactly once, on the page that created it: only its hash is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from mgs_core.errors import MgsError
from server import audit, auth
from server.dashboard import apply_change
from server.repository import ROLES, parse_id
from server.request_db import get_db

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/users")
@auth.require_role("admin")
def users() -> str:
    return _users_page(new_token=None)


def _users_page(new_token: str | None) -> str:
    """The users and tokens page; `new_token` is a just-created token, shown this once and never again."""
    db = get_db()
    return render_template(
        "admin.html",
        title="Users & tokens",
        users=auth.list_users(db),
        tokens=auth.list_tokens(db),
        roles=ROLES,
        new_token=new_token,
    )


def _done(action: Callable[[], object], message: str) -> Response:
    return apply_change(action, message, url_for("admin.users"))


def _audited(
    action: Callable[[], object], what: str, target: Callable[[], str], old: Any = None, new: Any = None
) -> Callable[[], None]:
    """`action`, then one audit entry for it (only when it succeeded)."""

    def run() -> None:
        action()
        user = auth.current_user()
        audit.record(get_db(), user["username"] if user else "", what, target(), old, new)

    return run


def _user(user_id: int) -> dict[str, Any]:
    return auth.get_user(get_db(), user_id) or {"id": user_id}


@bp.route("/users", methods=["POST"])
@auth.require_role("admin")
def create_user() -> Response:
    name = request.form.get("username", "").strip()
    role = request.form.get("role", "")
    return _done(
        _audited(
            lambda: auth.create_user(get_db(), name, request.form.get("password", ""), role),
            "create user",
            lambda: f"user:{name}",
            None,
            {"username": name, "role": role},
        ),
        f"User {name!r} created as {role}.",
    )


@bp.route("/users/<int:user_id>/role", methods=["POST"])
@auth.require_role("admin")
def set_role(user_id: int) -> Response:
    role = request.form.get("role", "")
    old = _user(user_id)
    return _done(
        _audited(
            lambda: auth.set_role(get_db(), user_id, role),
            "set role",
            lambda: f"user:{old.get('username', user_id)}",
            {"role": old.get("role")},
            {"role": role},
        ),
        f"Role changed to {role}.",
    )


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@auth.require_role("admin")
def set_password(user_id: int) -> Response:
    old = _user(user_id)

    def change() -> None:
        db = get_db()
        auth.set_password(db, user_id, request.form.get("password", ""))
        user = auth.get_user(db, user_id)
        if user is not None and user_id == session.get("user_id"):
            session["generation"] = user["session_generation"]

    return _done(
        _audited(change, "set password", lambda: f"user:{old.get('username', user_id)}"),
        "Password changed; that user's other sessions are logged out.",
    )


@bp.route("/users/<int:user_id>/delete", methods=["POST"])
@auth.require_role("admin")
def delete_user(user_id: int) -> Response:
    old = _user(user_id)
    return _done(
        _audited(
            lambda: auth.delete_user(get_db(), user_id),
            "delete user",
            lambda: f"user:{old.get('username', user_id)}",
            old,
            None,
        ),
        "User deleted (with their API tokens).",
    )


@bp.route("/tokens", methods=["POST"])
@auth.require_role("admin")
def create_token() -> Any:
    db = get_db()
    try:
        user_id = parse_id(request.form.get("user_id", ""), "the user the token acts for")
        token = auth.create_token(db, user_id, request.form.get("name", ""))
        _audited(
            lambda: None,
            "create token",
            lambda: f"user:{_user(user_id).get('username', user_id)}",
            None,
            {"token name": request.form.get("name", "")},
        )()
    except MgsError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.users"))
    return _users_page(new_token=token)


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@auth.require_role("admin")
def revoke_token(token_id: int) -> Response:
    old = next(
        ({"token name": t["name"], "user": t["username"]} for t in auth.list_tokens(get_db()) if t["id"] == token_id),
        None,
    )
    return _done(
        _audited(lambda: auth.revoke_token(get_db(), token_id), "revoke token", lambda: f"token:{token_id}", old, None),
        f"Token {token_id} revoked; scripts using it now get 401.",
    )
