"""Users & tokens administration pages (admins only).

A new API token is shown exactly once, on the page that created it: only its hash is stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response

from mgs_core.errors import MgsError
from server import auth
from server.request_db import get_db
from server.dashboard import apply_change
from server.repository import ROLES, parse_id

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.route("/users")
@auth.require_role("admin")
def users() -> str:
    db = get_db()
    return render_template("admin.html", title="Users & tokens", users=auth.list_users(db),
                           tokens=auth.list_tokens(db), roles=ROLES, new_token=None)


def _done(action: Callable[[], object], message: str) -> Response:
    return apply_change(action, message, url_for("admin.users"))


@bp.route("/users", methods=["POST"])
@auth.require_role("admin")
def create_user() -> Response:
    name = request.form.get("username", "").strip()
    role = request.form.get("role", "")
    return _done(lambda: auth.create_user(get_db(), name, request.form.get("password", ""), role),
                 f"User {name!r} created as {role}.")


@bp.route("/users/<int:user_id>/role", methods=["POST"])
@auth.require_role("admin")
def set_role(user_id: int) -> Response:
    role = request.form.get("role", "")
    return _done(lambda: auth.set_role(get_db(), user_id, role), f"Role changed to {role}.")


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@auth.require_role("admin")
def set_password(user_id: int) -> Response:
    """Ends the user's sessions (a reset locks out whoever holds the old password); an admin
    changing their own password stays logged in here."""
    def change() -> None:
        db = get_db()
        auth.set_password(db, user_id, request.form.get("password", ""))
        user = auth.get_user(db, user_id)
        if user is not None and user_id == session.get("user_id"):
            session["generation"] = user["session_generation"]
    return _done(change, "Password changed; that user's other sessions are logged out.")


@bp.route("/users/<int:user_id>/delete", methods=["POST"])
@auth.require_role("admin")
def delete_user(user_id: int) -> Response:
    return _done(lambda: auth.delete_user(get_db(), user_id), "User deleted (with their API tokens).")


@bp.route("/tokens", methods=["POST"])
@auth.require_role("admin")
def create_token() -> Any:
    db = get_db()
    try:
        user_id = parse_id(request.form.get("user_id", ""), "the user the token acts for")
        token = auth.create_token(db, user_id, request.form.get("name", ""))
    except MgsError as exc:
        flash(str(exc), "error")
        return redirect(url_for("admin.users"))
    return render_template("admin.html", title="Users & tokens", users=auth.list_users(db),
                           tokens=auth.list_tokens(db), roles=ROLES, new_token=token)


@bp.route("/tokens/<int:token_id>/revoke", methods=["POST"])
@auth.require_role("admin")
def revoke_token(token_id: int) -> Response:
    return _done(lambda: auth.revoke_token(get_db(), token_id), f"Token {token_id} revoked; scripts using it now get 401.")
