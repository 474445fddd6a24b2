"""The database connection of the current web request (opened on first use, closed at the end).

Each request gets its own connection: SQLite in WAL mode lets many readers work while the ingest
worker writes, and a per-request connection is never shared between waitress threads.

The connection is closed when the response has been sent (`release_db`, via Werkzeug's
`call_on_close`), not when the view returns: a streamed response (the CSV/JSON export) keeps
reading rows after the view has returned. `close_db` at teardown covers requests that end in an
unhandled error, where no response hook runs.
"""

from __future__ import annotations

import sqlite_utils
from flask import Response, current_app, g

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


def release_db(response: Response) -> Response:
    """after_request hook: hand the connection to the response, which closes it once sent."""
    db = g.pop("db", None)
    g.pop("repo", None)
    if db is not None:
        response.call_on_close(db.conn.close)
    return response


def close_db(exc: BaseException | None = None) -> None:
    db = g.pop("db", None)
    g.pop("repo", None)
    if db is not None:
        db.conn.close()
