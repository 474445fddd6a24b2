"""Roll-out of registered model versions to devices: assignments, canaries, and the devices' reports.

An admin assigns a version to one device, chosen devices or all known devices; each device gets
an assignment row whose id is the `assignment_id` on the wire, and the ingest worker publishes it
retained on the device's model topic (`server.rollout_publisher`). With a canary, only the canary
device is assigned at first; the others wait in the roll-out until an admin promotes it, which is
allowed once the canary reported the version "active" and has not failed or rolled back since.
Withdrawing assigns version '' (the models shipped on each device).

A device reports each step as a retained `ModelEvent`; `store_model_event` keeps it once whatever
the re-deliveries. A device's state is the last event about its current assignment, in words.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import sqlite_utils

from mgs_core.errors import MessageError, MgsError
from mgs_core.messages import ModelAssignment, ModelEvent, parse_utc_iso, utc_iso, validate_name
from server.db import transaction
from server.model_registry import version as registered_version

STATE_WORDS = {
    "pending": "assigned, not yet sent to the device",
    "assigned": "assigned, waiting for the device",
    "downloading": "downloading",
    "active": "active",
    "failed": "failed",
    "rolled_back": "rolled back",
}
PROBLEMS = ("failed", "rolled_back")


def assign(
    db: sqlite_utils.Database, version: str, devices: Iterable[str], user: str, canary: str | None = None
) -> int:
    """Assign `version` ('' = withdraw) to `devices`; with `canary`, to that one device first.
    Returns the roll-out id."""
    targets = sorted(set(devices))
    if not targets:
        raise MgsError("choose at least one device (or all devices) to assign the version to")
    for name in targets:
        try:
            validate_name(name)
        except MessageError as exc:
            raise MgsError(str(exc)) from None
    sha = registered_version(db, version)["manifest_sha256"] if version else ""
    if canary and canary not in targets:
        raise MgsError(f"the canary {canary} must be one of the chosen devices ({', '.join(targets)})")
    if canary and not version:
        raise MgsError("a withdrawal goes to every chosen device at once; leave the canary empty")
    now = time.time()
    with transaction(db) as conn:
        cur = conn.execute(
            "INSERT INTO model_rollouts (version, canary_device, waiting_json, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [version, canary, json.dumps([d for d in targets if d != canary] if canary else []), user, now],
        )
        rollout = int(cur.lastrowid or 0)
        for name in [canary] if canary else targets:
            _insert(conn, name, version, sha, bool(canary), rollout, user, now)
    return rollout


def _insert(conn: Any, device: str, version: str, sha: str, canary: bool, rollout: int, user: str, now: float) -> None:
    conn.execute(
        "INSERT INTO model_assignments (device, version, manifest_sha256, canary, rollout_id, assigned_by, assigned_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [device, version, sha, int(canary), rollout, user, now],
    )


def promote(db: sqlite_utils.Database, rollout_id: int, user: str) -> list[str]:
    """Assign a canary roll-out's version to the devices waiting for it; returns them."""
    rows = list(db.query("SELECT * FROM model_rollouts WHERE id = ?", [rollout_id]))
    if not rows:
        raise MgsError(f"no roll-out {rollout_id}")
    rollout = rows[0]
    waiting = json.loads(rollout["waiting_json"])
    if rollout["promoted_at"] is not None or not rollout["canary_device"]:
        raise MgsError(f"roll-out {rollout_id} has no canary waiting to be promoted")
    canary = current_assignment(db, rollout["canary_device"])
    if canary is None or canary["rollout_id"] != rollout_id:
        raise MgsError(
            f"{rollout['canary_device']} has been assigned something else since; start a new roll-out instead"
        )
    state = device_state(db, rollout["canary_device"])
    if state["state"] != "active":
        raise MgsError(
            f"the canary {rollout['canary_device']} is {state['words']}, not active: promote it once it runs "
            f"{rollout['version']} without problems"
        )
    sha = registered_version(db, rollout["version"])["manifest_sha256"]
    now = time.time()
    with transaction(db) as conn:
        conn.execute(
            "UPDATE model_rollouts SET promoted_by = ?, promoted_at = ?, waiting_json = '[]' WHERE id = ?",
            [user, now, rollout_id],
        )
        for name in waiting:
            _insert(conn, name, rollout["version"], sha, False, rollout_id, user, now)
    return list(waiting)


def rollouts(db: sqlite_utils.Database, limit: int = 20) -> list[dict[str, Any]]:
    out = list(db.query("SELECT * FROM model_rollouts ORDER BY id DESC LIMIT ?", [limit]))
    for r in out:
        r["waiting"] = json.loads(r.pop("waiting_json"))
        r["canary_state"] = device_state(db, r["canary_device"]) if r["canary_device"] else None
    return out


_CURRENT = (
    "SELECT a.* FROM model_assignments a JOIN (SELECT device, MAX(id) AS id FROM model_assignments GROUP BY device) c "
    "ON c.id = a.id"
)


def current_assignment(db: sqlite_utils.Database, device: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM model_assignments WHERE device = ? ORDER BY id DESC LIMIT 1", [device]))
    return rows[0] if rows else None


def current_assignments(db: sqlite_utils.Database, only_unpublished: bool = False) -> list[dict[str, Any]]:
    """Each device's current assignment (its newest row); `only_unpublished`: those not yet sent."""
    where = " WHERE a.published_at IS NULL" if only_unpublished else ""
    return list(db.query(_CURRENT + where + " ORDER BY a.device"))


def message(row: dict[str, Any]) -> ModelAssignment:
    """The retained message that tells the device its assignment."""
    return ModelAssignment(
        device=row["device"],
        assignment_id=row["id"],
        version=row["version"],
        manifest_sha256=row["manifest_sha256"],
        time=utc_iso(row["assigned_at"]),
        canary=bool(row["canary"]),
    )


def mark_published(db: sqlite_utils.Database, ids: list[int], now: float) -> None:
    if ids:
        with transaction(db) as conn:
            conn.executemany(
                "UPDATE model_assignments SET published_at = ? WHERE id = ? AND published_at IS NULL",
                [(now, i) for i in ids],
            )


def store_model_event(conn: Any, event: ModelEvent, received_at: float) -> int:
    """Keep a device's report once (a retained re-delivery is the same row); returns rows added."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO model_events (device, assignment_id, version, event, time, event_at, active_version, "
        "previous_version, reason, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            event.device,
            event.assignment_id,
            event.version,
            event.event,
            event.time,
            parse_utc_iso(event.time),
            event.active_version,
            event.previous_version,
            event.reason,
            received_at,
        ],
    )
    return int(cur.rowcount)


def _describe(assignment: dict[str, Any] | None, event: dict[str, Any] | None) -> dict[str, Any]:
    if assignment is None:
        return {"state": None, "words": "no version assigned (runs the models shipped with it)", "reason": ""}
    if event is None:
        state = "assigned" if assignment["published_at"] is not None else "pending"
        words = STATE_WORDS[state]
        if not assignment["version"]:
            words = "told to go back to its shipped models" if state == "assigned" else words
        return {"state": state, "words": words, "reason": ""}
    state = event["event"]
    words = STATE_WORDS[state]
    if state in PROBLEMS:
        # What runs now: a failed set never ran, so "failed to v2" would name the wrong version.
        back = event["active_version"] or "the shipped models"
        words = f"{words} to {back}" if state == "rolled_back" else f"{words}, still running {back}"
        words += f": {event['reason']}" if event["reason"] else ""
    return {"state": state, "words": words, "reason": event["reason"], "event": event}


def _last_events(db: sqlite_utils.Database) -> dict[tuple[str, int], dict[str, Any]]:
    """The newest event (by the device's clock) about each device's current assignment."""
    rows = db.query(
        "SELECT e.* FROM model_events e JOIN (" + _CURRENT + ") a ON a.device = e.device AND a.id = e.assignment_id "
        "ORDER BY e.event_at, e.id"
    )
    return {(r["device"], r["assignment_id"]): r for r in rows}


def device_state(db: sqlite_utils.Database, device: str) -> dict[str, Any]:
    return device_states(db, [device])[device]


def device_states(db: sqlite_utils.Database, devices: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """device -> its current assignment, the state of it (state, words, reason) and the version it
    reports running (`active_version`, from its status; None before its first status)."""
    assignments = {a["device"]: a for a in current_assignments(db)}
    running = {r["name"]: r["model_version"] for r in db.query("SELECT name, model_version FROM devices")}
    names = sorted(set(devices) if devices is not None else set(assignments) | set(running))
    events = _last_events(db)
    out = {}
    for name in names:
        a = assignments.get(name)
        event = events.get((name, a["id"])) if a else None
        out[name] = {"device": name, "assignment": a, "active_version": running.get(name), **_describe(a, event)}
    return out


def problem_notices(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Devices whose current assignment failed or was rolled back: a banner until someone reassigns."""
    return [s for s in device_states(db).values() if s["state"] in PROBLEMS]


def running_counts(db: sqlite_utils.Database) -> dict[str, list[str]]:
    """version -> the devices whose status says they run it."""
    out: dict[str, list[str]] = {}
    for row in db.query("SELECT name, model_version FROM devices WHERE model_version IS NOT NULL ORDER BY name"):
        out.setdefault(row["model_version"], []).append(row["name"])
    return out


def known_devices(db: sqlite_utils.Database) -> list[str]:
    return [r["name"] for r in db.query("SELECT name FROM devices ORDER BY name")]
