"""Numbered migrations: applied once at start-up, recorded, atomic, and a newer database is refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from mgs_core.errors import MgsError
from server import db as server_db
from server.db import Migration, applied_versions, connect, migrations


def test_a_new_database_gets_every_table_and_its_version(tmp_path: Path) -> None:
    db = connect(tmp_path / "s.db")
    assert applied_versions(db) == [m.version for m in migrations()]
    assert {
        "devices",
        "boxes",
        "animals",
        "experiments",
        "assignments",
        "score_windows",
        "rollup_minute",
        "rollup_hour",
        "alerts",
        "alert_rules",
        "rule_state",
        "users",
        "api_tokens",
        "quarantine",
        "counters",
        "models",
    } <= set(db.table_names())
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_nothing_and_keeps_data(tmp_path: Path) -> None:
    db = connect(tmp_path / "s.db")
    db.execute("INSERT INTO experiments (name, created) VALUES ('pilot', 0)")
    db.conn.commit()
    db.conn.close()
    again = connect(tmp_path / "s.db")
    assert server_db.migrate(again) == []
    assert again.execute("SELECT name FROM experiments").fetchall() == [("pilot",)]


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [m.version for m in migrations()]
    assert versions == list(range(1, len(versions) + 1))


def test_a_failing_migration_leaves_the_previous_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = connect(tmp_path / "s.db")
    broken = Migration(
        len(migrations()) + 1, "broken", "CREATE TABLE half_done (x); INSERT INTO no_such_table VALUES (1);"
    )
    shipped = migrations()
    monkeypatch.setattr(server_db, "migrations", lambda: [*shipped, broken])
    with pytest.raises(MgsError, match="broken failed"):
        server_db.migrate(db)
    assert "half_done" not in db.table_names()
    assert max(applied_versions(db)) == broken.version - 1


def test_a_database_from_a_newer_server_is_refused(tmp_path: Path) -> None:
    db = connect(tmp_path / "s.db")
    db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)")
    db.conn.commit()
    db.conn.close()
    with pytest.raises(MgsError, match="schema version 999"):
        connect(tmp_path / "s.db")


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MgsError, match="does not exist"):
        connect(tmp_path / "nope" / "s.db")


def test_the_schema_rejects_contradicting_rows(tmp_path: Path) -> None:
    db = connect(tmp_path / "s.db")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO users (username, password_hash, role, created) VALUES ('x', 'h', 'root', 0)")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO alert_rules (threshold, duration_s, created) VALUES (4, 60, 0)")


def test_002_keys_messages_by_epoch_and_acknowledges_what_an_older_server_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = migrations()
    monkeypatch.setattr(server_db, "migrations", lambda: shipped[:1])
    db = connect(tmp_path / "s.db")
    db.execute("INSERT INTO models (id, sha256) VALUES (1, 'ab')")
    for seq in (1, 2, 5):
        db.execute(
            "INSERT INTO score_windows (device, box, seq, window_start, window_end, frames, valid_eyes, "
            "face_visible_fraction, model_id, received_at) VALUES ('rack1', 0, ?, ?, ?, 5, 0, 0, 1, 10)",
            [seq, seq, seq + 1],
        )
    db.execute(
        "INSERT INTO alerts (source, event, device, box, seq, time, threshold, duration_s, received_at) "
        "VALUES ('device', 'raised', 'rack1', 0, 7, 0, 6, 30, 11)"
    )
    db.conn.commit()
    monkeypatch.setattr(server_db, "migrations", lambda: shipped[:2])
    assert server_db.migrate(db) == [2]
    assert db.execute("SELECT epoch, seq FROM score_windows ORDER BY id").fetchall() == [("", 1), ("", 2), ("", 5)]
    assert db.execute("SELECT device, epoch, stored_through, highest_seq FROM delivery").fetchall() == [
        ("rack1", "", 7, 7)
    ]
    db.execute(
        "INSERT INTO score_windows (device, box, epoch, seq, window_start, window_end, frames, valid_eyes, "
        "face_visible_fraction, model_id, received_at) VALUES ('rack1', 0, 'ab12cd34', 1, 1, 2, 5, 0, 0, 1, 12)"
    )
    with pytest.raises(sqlite3.IntegrityError):
        db.execute(
            "INSERT INTO score_windows (device, box, epoch, seq, window_start, window_end, frames, valid_eyes, "
            "face_visible_fraction, model_id, received_at) VALUES ('rack1', 0, '', 1, 1, 2, 5, 0, 0, 1, 12)"
        )
