"""The database connection of the current web request (opened on first use, closed at teardown).

Each request gets its own connection: SQLite in WAL mode lets many readers work while the ingest
worker writes, and a per-request connection is never shared between waitress threads.
"""

from __future__ import annotations

import sqlite_utils
from flask import current_app, g

from server.db import connect
from server.repository import Repository


def get_db() -> sqlite_utils.Database:
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"], migrate_schema=False)
    return g.db


def get_repo() -> Repository:
    if "repo" not in g:
        g.repo = Repository(get_db())
    return g.repo


def close_db(exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    g.pop("repo", None)
    if db is not None:
        db.conn.close()
