"""Opening the server's SQLite database: WAL, pragmas and numbered migrations at start-up.

One file holds a facility. WAL lets the dashboard read while the ingest worker writes;
`synchronous=NORMAL` is safe with WAL (a power cut loses at most the last transactions, never
corrupts) and is what makes the ingest rates in docs/api.md possible on an SD-card-class disk.
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

_MIGRATION_RE = re.compile(r"^m(\d{3})_(\w+)$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """All migrations shipped in `server.migrations`, in version order."""
    from server import migrations as package

    found = []
    for info in pkgutil.iter_modules(package.__path__):
        match = _MIGRATION_RE.match(info.name)
        if match:
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            found.append(Migration(int(match.group(1)), match.group(2), module.SQL))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"server migrations must be numbered 1..n without gaps, found {versions}")
    return found


def connect(path: str | os.PathLike[str], *, migrate_schema: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path`, set pragmas and bring the schema up to date.

    The connection may be used from another thread than the one that opened it (the ingest writer
    thread opens its own; Flask opens one per request), but never from two threads at once.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise MgsError(f"database folder {path.parent} does not exist; create it or change [server] database")
    try:
        conn = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    except sqlite3.Error as exc:
        raise MgsError(f"cannot open database {path}: {exc}") from None
    db = sqlite_utils.Database(conn)
    db.enable_wal()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 30000")
    if migrate_schema:
        migrate(db)
    return db


def applied_versions(db: sqlite_utils.Database) -> list[int]:
    if "schema_migrations" not in db.table_names():
        return []
    return [row[0] for row in db.execute("SELECT version FROM schema_migrations ORDER BY version")]


def migrate(db: sqlite_utils.Database) -> list[int]:
    """Apply every migration not yet recorded in `schema_migrations`; return the versions applied.

    Each migration runs in one transaction together with its bookkeeping row, so a failure leaves
    the database at the previous version instead of half-migrated.
    """
    db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    db.conn.commit()
    done = set(applied_versions(db))
    newest_known = max((m.version for m in migrations()), default=0)
    if done and max(done) > newest_known:
        raise MgsError(
            f"the database is at schema version {max(done)} but this server only knows up to "
            f"{newest_known}; upgrade mgs-rack on this machine or point it at another database"
        )
    applied = []
    for m in migrations():
        if m.version in done:
            continue
        script = (
            "BEGIN IMMEDIATE;\n" + m.sql + "\n;"
            f"INSERT INTO schema_migrations (version, name, applied_at) VALUES ({m.version}, '{m.name}', {time.time()});\n"
            "COMMIT;"
        )
        try:
            db.conn.executescript(script)
        except sqlite3.Error as exc:
            if db.conn.in_transaction:
                db.conn.rollback()
            raise MgsError(f"database migration {m.version:03d}_{m.name} failed: {exc}") from None
        log.info("applied database migration %03d_%s", m.version, m.name)
        applied.append(m.version)
    return applied


@contextmanager
def transaction(db: sqlite_utils.Database) -> Iterator[sqlite3.Connection]:
    """One write transaction taken up front (BEGIN IMMEDIATE), so writers queue on the lock
    instead of failing half-way with 'database is locked'."""
    conn = db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
