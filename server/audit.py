"""The audit log: who changed what, when, and from which value to which.

Ethics committees and the animal welfare body ask "who disabled this rule" or "who moved this
mouse" long after the fact. Every change a person makes through the dashboard or the REST API
(there as the token's user) writes one row: the user, the time, an action name, the thing changed
(`rule:3`, `animal:12`, `user:bob`) and the old and new values as JSON. Rows are only ever added.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlite_utils

from server.db import transaction

LIMIT_MAX = 5000

# What an entry keeps of each kind of thing, so a change made in the dashboard and the same change
# made through the REST API read alike in the log.
RULE_FIELDS = ("animal_name", "experiment_name", "threshold", "duration_s", "enabled")
ASSIGNMENT_FIELDS = ("animal_name", "device", "box", "start_time", "end_time", "note")
ANIMAL_FIELDS = ("name", "strain", "notes", "humane_endpoint", "experiment_name")


def pick(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """The audited fields of a row (names rather than ids, so the entry stays readable)."""
    return {k: row[k] for k in keys}


def record(
    db: sqlite_utils.Database,
    username: str,
    action: str,
    target: str,
    old: Any = None,
    new: Any = None,
    now: float | None = None,
) -> None:
    """Append one entry in its own transaction."""
    with transaction(db) as conn:
        record_in(conn, username, action, target, old, new, now)


def record_in(
    conn: Any, username: str, action: str, target: str, old: Any = None, new: Any = None, now: float | None = None
) -> None:
    """Append one entry inside the caller's transaction (so the change and its entry commit together)."""
    conn.execute(
        "INSERT INTO audit_log (time, username, action, target, old_json, new_json) VALUES (?, ?, ?, ?, ?, ?)",
        [
            time.time() if now is None else now,
            username,
            action,
            target,
            None if old is None else json.dumps(old, default=str, sort_keys=True),
            None if new is None else json.dumps(new, default=str, sort_keys=True),
        ],
    )


def entries(
    db: sqlite_utils.Database,
    target: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int = 500,
) -> list[dict[str, Any]]:
    """Newest first: id, time, username, action, target, old, new, changes [(field, old, new)].

    `target` matches exactly or as a prefix ending in ':' (`animal:` = every animal)."""
    where: list[str] = []
    params: list[Any] = []
    if target:
        where.append("(target = ? OR (? LIKE '%:' AND target LIKE ? || '%'))")
        params += [target, target, target]
    if since is not None:
        where.append("time >= ?")
        params.append(since)
    if until is not None:
        where.append("time < ?")
        params.append(until)
    sql = "SELECT * FROM audit_log" + (" WHERE " + " AND ".join(where) if where else "")
    cursor = db.execute(sql + " ORDER BY time DESC, id DESC LIMIT ?", [*params, max(1, min(limit, LIMIT_MAX))])
    names = [d[0] for d in cursor.description]
    out = []
    for row in cursor.fetchall():
        entry = dict(zip(names, row))
        entry["old"] = json.loads(entry.pop("old_json")) if entry["old_json"] is not None else None
        entry["new"] = json.loads(entry.pop("new_json")) if entry["new_json"] is not None else None
        entry["changes"] = changes(entry["old"], entry["new"])
        out.append(entry)
    return out


def changes(old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """The fields that differ, for an 'old -> new' column; a created or deleted thing lists all."""
    if isinstance(old, dict) or isinstance(new, dict):
        before, after = old or {}, new or {}
        return [
            (k, before.get(k), after.get(k)) for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)
        ]
    return [] if old == new else [("value", old, new)]
