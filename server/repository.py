"""Every query the server runs against its SQLite file, behind one class.

The dashboard, the REST API, the exporter and the alert rules go through `Repository`, so the
SQL lives in one place and a later PostgreSQL/TimescaleDB back end replaces one module. The
ingest's writes, which run inside its one-transaction-per-batch, are `server.store.IngestStore`.
Users and API tokens are the exception: `server.auth` owns that logic against the `users` and
`api_tokens` tables.

Conventions: times are Unix seconds (float, UTC) in and out; rows come back as plain dicts whose
keys are the column names documented on each method. Methods that change data commit their own
transaction, except `record_rule_states`/`record_server_alert`, which the alert rules call inside
the ingest writer's transaction.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlite_utils

from mgs_core.errors import MgsError
from mgs_core.messages import (
    EARLIEST_TIME,
    LATEST_TIME,
    MAX_BOXES,
    parse_utc_iso,
    utc_iso,
    validate_name,
)
from server.db import transaction

Resolution = Literal["raw", "minute", "hour"]
RESOLUTIONS: tuple[str, ...] = ("raw", "minute", "hour")
BUCKET_SECONDS = {"minute": 60, "hour": 3600}
# Auto resolution keeps a plot at a few thousand points at most: raw up to 2 h (7,200 windows at
# 1/s), minute rollups up to 3 days (4,320 points), hour rollups beyond (720 points for 30 days).
AUTO_RAW_MAX_S = 2 * 3600
AUTO_MINUTE_MAX_S = 3 * 86400
ROLES = ("viewer", "officer", "admin")


class NotFound(MgsError):
    """The requested row does not exist (the API answers 404)."""


class Conflict(MgsError):
    """The change contradicts stored data, e.g. overlapping assignments (the API answers 409)."""


def pick_resolution(start: float, end: float) -> Resolution:
    span = end - start
    if span <= AUTO_RAW_MAX_S:
        return "raw"
    if span <= AUTO_MINUTE_MAX_S:
        return "minute"
    return "hour"


@dataclass(frozen=True)
class StoredWindow:
    """A score window that was new to the database (not a redelivery), for the alert rules."""

    device: str
    box: int
    seq: int
    window_start: float
    window_end: float
    score: float | None


@dataclass(frozen=True)
class Quarantined:
    """A message the ingest refused, kept for a person; device, epoch and seq are what it claimed
    (None when unreadable), so a refused message of a device's outbox still counts as handled."""

    received_at: float
    topic: str
    payload: bytes
    reason: str
    device: str | None = None
    epoch: str | None = None
    seq: int | None = None


@dataclass(frozen=True)
class StoredBatch:
    """What one `store_windows` call added: `count` new rows, all with ids above `after_id`."""

    count: int
    after_id: int


def _rows(cursor: Any) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _one(cursor: Any, what: str) -> dict[str, Any]:
    rows = _rows(cursor)
    if not rows:
        raise NotFound(f"{what} does not exist")
    return rows[0]


def _text(value: Any, what: str, max_len: int = 200, allow_empty: bool = True) -> str:
    """Free text from people (names, notes) is stored verbatim, only bounded in length."""
    if not isinstance(value, str):
        raise MgsError(f"{what} must be text, got {value!r}")
    if not allow_empty and not value.strip():
        raise MgsError(f"{what} must not be empty")
    if len(value) > max_len:
        raise MgsError(f"{what} is {len(value)} characters; at most {max_len} are allowed")
    return value


def _box(box: Any) -> int:
    if isinstance(box, bool) or not isinstance(box, int) or not 0 <= box < MAX_BOXES:
        raise MgsError(f"box {box!r} must be an integer from 0 to {MAX_BOXES - 1}")
    return box


# SQLite stores integers in 64 bits: a larger id cannot exist, and Python would raise OverflowError.
MAX_ID = 2**63 - 1
_ASCII_DIGITS = re.compile(r"^[0-9]{1,19}$")
_DATE_ONLY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def parse_id(value: Any, what: str) -> int:
    """A row id from people or scripts: a whole number from 1 to 2^63-1, as an int or as ASCII digits.

    Text is held to ASCII digits because Python's int() also reads '٣', ' 3' and '1_0'."""
    if isinstance(value, str) and _ASCII_DIGITS.match(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise MgsError(f"{what} {value!r} must be a whole number from 1 to {MAX_ID}")
    return value


def _optional_id(value: Any, what: str) -> int | None:
    return None if value is None else parse_id(value, what)


def parse_time(value: Any, what: str, optional: bool = False) -> float | None:
    """Accept Unix seconds or an ISO-8601 UTC string (a date alone is midnight UTC), within the wire
    contract's years 1970-2099, so every stored time can be shown and compared."""
    if value is None and optional:
        return None
    if isinstance(value, str):
        if _DATE_ONLY.match(value):
            value += "T00:00:00Z"
        try:
            return parse_utc_iso(value)
        except MgsError as exc:
            raise MgsError(f"{what}: {exc}; give Unix seconds or e.g. 2026-03-02T10:00:00Z or 2026-03-02") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise MgsError(f"{what} {value!r} must be Unix seconds or an ISO-8601 UTC time")
    if not EARLIEST_TIME <= value < LATEST_TIME:
        raise MgsError(
            f"{what} {value!r} is outside the years 1970-2099 (Unix seconds {EARLIEST_TIME:.0f} to {LATEST_TIME:.0f})"
        )
    return float(value)


class Repository:
    """All data access of the server over one `sqlite_utils.Database` (see `server.db.connect`)."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db

    def _q(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return _rows(self.db.execute(sql, params))

    # --- devices and boxes ------------------------------------------------------------------

    def devices(self) -> list[dict[str, Any]]:
        """name, first_seen, last_seen, availability, availability_changed, status_time, fps,
        target_fps, backend, camera, outbox_depth, skipped_frames, uptime_s, version, models
        (dict), message, last_score_at, boxes (list of box numbers seen)."""
        devices = self._q("SELECT * FROM devices ORDER BY name")
        boxes: dict[str, list[int]] = defaultdict(list)
        for row in self._q("SELECT device, box FROM boxes ORDER BY device, box"):
            boxes[row["device"]].append(row["box"])
        for d in devices:
            d["models"] = json.loads(d.pop("models_json") or "{}")
            d.pop("status_json")
            d["boxes"] = boxes.get(d["name"], [])
        return devices

    def device(self, name: str) -> dict[str, Any]:
        for d in self.devices():
            if d["name"] == name:
                return d
        raise NotFound(f"device {name!r}")

    def device_status_json(self, name: str) -> dict[str, Any] | None:
        row = _one(self.db.execute("SELECT status_json FROM devices WHERE name = ?", [name]), f"device {name!r}")
        return json.loads(row["status_json"]) if row["status_json"] else None

    def register_device(self, name: str, now: float | None = None) -> None:
        """Make a device known before it first publishes (used when unknown devices are refused)."""
        validate_name(name)
        now = time.time() if now is None else now
        with transaction(self.db) as conn:
            conn.execute(
                "INSERT INTO devices (name, first_seen, last_seen) VALUES (?, ?, ?) ON CONFLICT(name) DO NOTHING",
                [name, now, now],
            )

    def known_devices(self) -> set[str]:
        return {row[0] for row in self.db.execute("SELECT name FROM devices")}

    def set_box_label(self, device: str, box: int, label: str) -> None:
        label = _text(label, "box label", 100)
        with transaction(self.db) as conn:
            conn.execute(
                "INSERT INTO boxes (device, box, label) VALUES (?, ?, ?) "
                "ON CONFLICT(device, box) DO UPDATE SET label = excluded.label",
                [validate_name(device), _box(box), label],
            )

    def boxes(self, now: float | None = None) -> list[dict[str, Any]]:
        """The facility overview, one row per box ever seen or assigned:
        device, box, label, animal_id, animal_name, experiment_id, last_seq, last_score (None = no
        score in the last window), last_abstained_eyes (> 0 with no score: not scorable, a face seen
        but the model not confident), last_window_end, last_face_visible_fraction, age_s (seconds since
        the last window ended, None if never), device_online (bool), device_last_seen,
        device_alert ('raised'/'cleared'/None), ahead_s (seconds the last window ends after `now`: a
        device clock running ahead; 0 normally), server_alert ('raised' if a server rule for the
        animal is raised), alert ('raised' if either is), unacknowledged_alerts (count)."""
        now = time.time() if now is None else now
        rows = self._q(
            """
            WITH keys AS (
                SELECT device, box FROM boxes
                UNION SELECT device, box FROM assignments
                  WHERE start_time <= :now AND (end_time IS NULL OR end_time > :now)
            )
            SELECT k.device, k.box, COALESCE(b.label, '') AS label,
                   a.animal_id, an.name AS animal_name, an.experiment_id,
                   b.last_seq, b.last_score, b.last_window_end, b.last_face_visible_fraction,
                   COALESCE(b.last_abstained_eyes, 0) AS last_abstained_eyes,
                   b.device_alert, d.availability, d.last_seen AS device_last_seen,
                   (SELECT COUNT(*) FROM alerts al WHERE al.device = k.device AND al.box = k.box
                      AND al.event = 'raised' AND al.acknowledged_at IS NULL) AS unacknowledged_alerts,
                   (SELECT MAX(rs.raised) FROM rule_state rs WHERE rs.animal_id = a.animal_id) AS server_raised
            FROM keys k
            LEFT JOIN boxes b ON b.device = k.device AND b.box = k.box
            LEFT JOIN devices d ON d.name = k.device
            LEFT JOIN assignments a ON a.device = k.device AND a.box = k.box
                 AND a.start_time <= :now AND (a.end_time IS NULL OR a.end_time > :now)
            LEFT JOIN animals an ON an.id = a.animal_id
            ORDER BY k.device, k.box
            """,
            {"now": now},
        )
        for r in rows:
            r["age_s"] = None if r["last_window_end"] is None else max(0.0, now - r["last_window_end"])
            r["ahead_s"] = None if r["last_window_end"] is None else max(0.0, r["last_window_end"] - now)
            r["device_online"] = r.pop("availability") == "online"
            r["server_alert"] = "raised" if r.pop("server_raised") else None
            r["alert"] = "raised" if "raised" in (r["device_alert"], r["server_alert"]) else None
        return rows

    def box_known(self, device: str, box: int) -> bool:
        """Whether a box has ever reported, been labelled or been assigned (unknown ones are 404)."""
        row = self.db.execute(
            "SELECT 1 FROM boxes WHERE device = ? AND box = ? UNION ALL "
            "SELECT 1 FROM assignments WHERE device = ? AND box = ? LIMIT 1",
            [device, box, device, box],
        ).fetchone()
        return row is not None

    def boxes_ahead(self, now: float, allowance_s: float) -> dict[str, int]:
        """Device -> number of its boxes whose last window ends more than `allowance_s` after `now`:
        a device clock running ahead, whose scores would otherwise look current forever."""
        return {
            device: count
            for device, count in self.db.execute(
                "SELECT device, COUNT(*) FROM boxes WHERE last_window_end > ? GROUP BY device", [now + allowance_s]
            )
        }

    # --- experiments and animals ------------------------------------------------------------

    def experiments(self) -> list[dict[str, Any]]:
        """id, name, description, created, animals (count)."""
        return self._q(
            "SELECT e.*, (SELECT COUNT(*) FROM animals a WHERE a.experiment_id = e.id) AS animals "
            "FROM experiments e ORDER BY e.name"
        )

    def experiment(self, experiment_id: int) -> dict[str, Any]:
        return _one(
            self.db.execute("SELECT * FROM experiments WHERE id = ?", [experiment_id]), f"experiment {experiment_id}"
        )

    def create_experiment(self, name: str, description: str = "") -> int:
        name = _text(name, "experiment name", 200, allow_empty=False)
        description = _text(description, "experiment description", 4000)
        with transaction(self.db) as conn:
            if conn.execute("SELECT 1 FROM experiments WHERE name = ?", [name]).fetchone():
                raise Conflict(f"an experiment named {name!r} already exists")
            cur = conn.execute(
                "INSERT INTO experiments (name, description, created) VALUES (?, ?, ?)",
                [name, description, time.time()],
            )
            return int(cur.lastrowid)

    def animals(self, experiment_id: int | None = None) -> list[dict[str, Any]]:
        """id, name, strain, notes, experiment_id, experiment_name, created, device, box (current
        assignment or None)."""
        now = time.time()
        sql = """
            SELECT an.*, e.name AS experiment_name, a.device, a.box
            FROM animals an
            LEFT JOIN experiments e ON e.id = an.experiment_id
            LEFT JOIN assignments a ON a.animal_id = an.id AND a.start_time <= :now
                 AND (a.end_time IS NULL OR a.end_time > :now)
        """
        params: dict[str, Any] = {"now": now}
        if experiment_id is not None:
            sql += " WHERE an.experiment_id = :experiment"
            params["experiment"] = experiment_id
        return self._q(sql + " ORDER BY an.name", params)

    def animal(self, animal_id: int) -> dict[str, Any]:
        for a in self._q(
            "SELECT an.*, e.name AS experiment_name FROM animals an "
            "LEFT JOIN experiments e ON e.id = an.experiment_id WHERE an.id = ?",
            [animal_id],
        ):
            return a
        raise NotFound(f"animal {animal_id}")

    def create_animal(self, name: str, strain: str = "", notes: str = "", experiment_id: int | None = None) -> int:
        name = _text(name, "animal name", 200, allow_empty=False)
        strain = _text(strain, "strain", 200)
        notes = _text(notes, "notes", 4000)
        experiment_id = _optional_id(experiment_id, "experiment_id")
        with transaction(self.db) as conn:
            if (
                experiment_id is not None
                and not conn.execute("SELECT 1 FROM experiments WHERE id = ?", [experiment_id]).fetchone()
            ):
                raise NotFound(f"experiment {experiment_id}")
            if conn.execute("SELECT 1 FROM animals WHERE name = ?", [name]).fetchone():
                raise Conflict(f"an animal named {name!r} already exists")
            cur = conn.execute(
                "INSERT INTO animals (name, strain, notes, experiment_id, created) VALUES (?, ?, ?, ?, ?)",
                [name, strain, notes, experiment_id, time.time()],
            )
            return int(cur.lastrowid)

    def update_animal(self, animal_id: int, /, **changes: Any) -> None:
        """Change any of name, strain, notes, humane_endpoint, experiment_id. (The id is positional-only,
        so a change named `animal_id` from a request body is an unknown field, not a TypeError.)"""
        allowed = {"name": 200, "strain": 200, "notes": 4000, "humane_endpoint": 4000}
        unknown = set(changes) - set(allowed) - {"experiment_id"}
        if unknown:
            raise MgsError(
                f"unknown animal field(s) {sorted(unknown)}; use name, strain, notes, humane_endpoint, experiment_id"
            )
        values: dict[str, Any] = {
            k: _text(v, k, allowed[k], allow_empty=(k != "name")) for k, v in changes.items() if k in allowed
        }
        if "experiment_id" in changes:
            values["experiment_id"] = _optional_id(changes["experiment_id"], "experiment_id")
        if not values:
            return
        with transaction(self.db) as conn:
            if not conn.execute("SELECT 1 FROM animals WHERE id = ?", [animal_id]).fetchone():
                raise NotFound(f"animal {animal_id}")
            if (
                values.get("experiment_id") is not None
                and not conn.execute("SELECT 1 FROM experiments WHERE id = ?", [values["experiment_id"]]).fetchone()
            ):
                raise NotFound(f"experiment {values['experiment_id']}")
            if (
                "name" in values
                and conn.execute(
                    "SELECT 1 FROM animals WHERE name = ? AND id <> ?", [values["name"], animal_id]
                ).fetchone()
            ):
                raise Conflict(f"an animal named {values['name']!r} already exists")
            sets = ", ".join(f"{k} = :{k}" for k in values)
            conn.execute(f"UPDATE animals SET {sets} WHERE id = :id", {**values, "id": animal_id})

    # --- assignments ------------------------------------------------------------------------

    def assignments(
        self,
        animal_id: int | None = None,
        device: str | None = None,
        box: int | None = None,
        active_at: float | None = None,
    ) -> list[dict[str, Any]]:
        """id, animal_id, animal_name, device, box, start_time, end_time (None = open), note,
        created_by, created."""
        where, params = [], {}
        if animal_id is not None:
            where.append("a.animal_id = :animal")
            params["animal"] = animal_id
        if device is not None:
            where.append("a.device = :device")
            params["device"] = device
        if box is not None:
            where.append("a.box = :box")
            params["box"] = box
        if active_at is not None:
            where.append("a.start_time <= :at AND (a.end_time IS NULL OR a.end_time > :at)")
            params["at"] = active_at
        sql = "SELECT a.*, an.name AS animal_name FROM assignments a JOIN animals an ON an.id = a.animal_id"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._q(sql + " ORDER BY a.start_time, a.id", params)

    def assignment(self, assignment_id: int) -> dict[str, Any]:
        return _one(
            self.db.execute(
                "SELECT a.*, an.name AS animal_name FROM assignments a JOIN animals an ON an.id = a.animal_id "
                "WHERE a.id = ?",
                [assignment_id],
            ),
            f"assignment {assignment_id}",
        )

    def _check_assignment(
        self, conn: Any, animal_id: int, device: str, box: int, start: float, end: float | None, ignore_id: int | None
    ) -> None:
        if end is not None and end <= start:
            raise MgsError(f"assignment end {utc_iso(end)} must be after its start {utc_iso(start)}")
        if not conn.execute("SELECT 1 FROM animals WHERE id = ?", [animal_id]).fetchone():
            raise NotFound(f"animal {animal_id}")
        overlap = """
            SELECT a.id, an.name, a.device, a.box FROM assignments a JOIN animals an ON an.id = a.animal_id
            WHERE a.id IS NOT :ignore AND {who}
              AND a.start_time < :end AND (a.end_time IS NULL OR a.end_time > :start)
            LIMIT 1
        """
        params = {
            "ignore": ignore_id,
            "device": device,
            "box": box,
            "animal": animal_id,
            "start": start,
            "end": math.inf if end is None else end,
        }
        clash = conn.execute(overlap.format(who="a.device = :device AND a.box = :box"), params).fetchone()
        if clash:
            raise Conflict(
                f"box {device}/{box} is already assigned to animal {clash[1]!r} in that time "
                f"(assignment {clash[0]}); end that assignment first"
            )
        clash = conn.execute(overlap.format(who="a.animal_id = :animal"), params).fetchone()
        if clash:
            raise Conflict(
                f"animal {clash[1]!r} is already in box {clash[2]}/{clash[3]} in that time "
                f"(assignment {clash[0]}); end that assignment first"
            )

    def create_assignment(
        self, animal_id: int, device: str, box: int, start: Any, end: Any = None, note: str = "", created_by: str = ""
    ) -> int:
        """Put an animal in a box from `start` until `end` (None = until further notice).
        Overlaps with another assignment of the same box or animal are refused (`Conflict`)."""
        animal_id = parse_id(animal_id, "animal_id")
        device = validate_name(device)
        box = _box(box)
        start_t = parse_time(start, "assignment start")
        end_t = parse_time(end, "assignment end", optional=True)
        note = _text(note, "note", 1000)
        with transaction(self.db) as conn:
            self._check_assignment(conn, animal_id, device, box, start_t, end_t, None)
            cur = conn.execute(
                "INSERT INTO assignments (animal_id, device, box, start_time, end_time, note, created_by, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [animal_id, device, box, start_t, end_t, note, created_by, time.time()],
            )
            return int(cur.lastrowid)

    def update_assignment(self, assignment_id: int, /, **changes: Any) -> None:
        """Change any of animal_id, device, box, start_time, end_time, note (e.g. end it now); the
        id is positional-only like in `update_animal`."""
        unknown = set(changes) - {"animal_id", "device", "box", "start_time", "end_time", "note"}
        if unknown:
            raise MgsError(f"unknown assignment field(s) {sorted(unknown)}")
        current = self.assignment(assignment_id)
        new = {k: current[k] for k in ("animal_id", "device", "box", "start_time", "end_time", "note")}
        new.update(changes)
        new["animal_id"] = parse_id(new["animal_id"], "animal_id")
        new["device"] = validate_name(new["device"])
        new["box"] = _box(new["box"])
        new["start_time"] = parse_time(new["start_time"], "assignment start")
        new["end_time"] = parse_time(new["end_time"], "assignment end", optional=True)
        new["note"] = _text(new["note"], "note", 1000)
        with transaction(self.db) as conn:
            self._check_assignment(
                conn, new["animal_id"], new["device"], new["box"], new["start_time"], new["end_time"], assignment_id
            )
            conn.execute(
                "UPDATE assignments SET animal_id = :animal_id, device = :device, box = :box, "
                "start_time = :start_time, end_time = :end_time, note = :note WHERE id = :id",
                {**new, "id": assignment_id},
            )

    def delete_assignment(self, assignment_id: int) -> None:
        with transaction(self.db) as conn:
            if conn.execute("DELETE FROM assignments WHERE id = ?", [assignment_id]).rowcount == 0:
                raise NotFound(f"assignment {assignment_id}")

    def animal_at(self, device: str, box: int, t: float) -> int | None:
        """The animal whose assignment covers time `t` in this box, if any."""
        row = self.db.execute(
            "SELECT animal_id FROM assignments WHERE device = ? AND box = ? AND start_time <= ? "
            "AND (end_time IS NULL OR end_time > ?) ORDER BY start_time DESC LIMIT 1",
            [device, box, t, t],
        ).fetchone()
        return row[0] if row else None

    # --- score history ----------------------------------------------------------------------

    def box_scores(self, device: str, box: int, start: float, end: float, resolution: str = "auto") -> dict[str, Any]:
        """Score history of one box in [start, end).

        Returns {"resolution": "raw"|"minute"|"hour", "points": [...]} where each point has
        t (bucket or window start), windows, face_windows, not_scorable_windows (no score but eyes
        the model abstained on), mean (None when no window of the bucket was scored), min, max; raw
        points also carry seq, median, p90, face_visible_fraction, frames, valid_eyes,
        abstained_eyes, t_end."""
        if end <= start:
            raise MgsError("the end of a score range must be after its start")
        chosen: str = pick_resolution(start, end) if resolution == "auto" else resolution
        if chosen not in RESOLUTIONS:
            raise MgsError(f"resolution {resolution!r} must be one of auto, {', '.join(RESOLUTIONS)}")
        if chosen == "raw":
            points = self._q(
                "SELECT window_start AS t, window_end AS t_end, seq, frames, valid_eyes, score AS mean, "
                "score AS min, score AS max, median, p90, face_visible_fraction, abstained_eyes, 1 AS windows, "
                "score IS NOT NULL AS face_windows, score IS NULL AND abstained_eyes > 0 AS not_scorable_windows "
                "FROM score_windows WHERE device = ? AND box = ? AND window_start >= ? AND window_start < ? "
                "ORDER BY window_start",
                [device, box, start, end],
            )
        else:
            size = BUCKET_SECONDS[chosen]
            points = self._q(
                f"SELECT bucket AS t, windows, face_windows, not_scorable_windows, "
                f"CASE WHEN face_windows > 0 THEN score_sum / face_windows END AS mean, "
                f"score_min AS min, score_max AS max FROM rollup_{chosen} "
                f"WHERE device = ? AND box = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
                [device, box, math.floor(start / size) * size, end],
            )
        return {"resolution": chosen, "points": points}

    def animal_scores(self, animal_id: int, start: float, end: float, resolution: str = "auto") -> dict[str, Any]:
        """Score history of one animal: the boxes it sat in, each clipped to its assignment.
        Same shape as `box_scores`, points also carry device and box."""
        self.animal(animal_id)
        chosen = pick_resolution(start, end) if resolution == "auto" else resolution
        points: list[dict[str, Any]] = []
        for a in self.assignments(animal_id=animal_id):
            lo = max(start, a["start_time"])
            hi = min(end, a["end_time"] if a["end_time"] is not None else math.inf)
            if hi <= lo:
                continue
            part = self.box_scores(a["device"], a["box"], lo, hi, chosen)
            for p in part["points"]:
                p["device"], p["box"] = a["device"], a["box"]
            points.extend(part["points"])
        points.sort(key=lambda p: p["t"])
        return {"resolution": chosen, "points": points}

    def iter_windows(
        self,
        start: float,
        end: float,
        device: str | None = None,
        box: int | None = None,
        animal_id: int | None = None,
        experiment_id: int | None = None,
        batch: int = 5000,
    ) -> Iterator[dict[str, Any]]:
        """Raw windows for export, streamed in time order per box. Filter by box, animal or
        experiment (via assignments); every row carries animal_id/animal_name where assigned.
        Keys: device, box, seq, window_start, window_end (ISO), frames, valid_eyes, score, median,
        p90, face_visible_fraction, model_sha256, model_version ('' = shipped models), received_at
        (ISO), abstained_eyes, animal_id, animal_name."""
        if animal_id is not None or experiment_id is not None:
            if animal_id is not None:
                self.animal(animal_id)
                spans = self.assignments(animal_id=animal_id)
            else:
                self.experiment(experiment_id)  # type: ignore[arg-type]
                members = {x["id"] for x in self.animals(experiment_id=experiment_id)}
                spans = [a for a in self.assignments() if a["animal_id"] in members]
            for a in spans:
                lo = max(start, a["start_time"])
                hi = min(end, a["end_time"] if a["end_time"] is not None else math.inf)
                if hi > lo:
                    yield from self._windows(a["device"], a["box"], lo, hi, batch, a["animal_id"], a["animal_name"])
            return
        for k in self._q("SELECT device, box FROM boxes ORDER BY device, box"):
            if (device is None or k["device"] == device) and (box is None or k["box"] == box):
                spans = self.assignments(device=k["device"], box=k["box"])
                for row in self._windows(k["device"], k["box"], start, end, batch, None, None):
                    t = parse_utc_iso(row["window_start"])
                    for a in spans:
                        if a["start_time"] <= t and (a["end_time"] is None or t < a["end_time"]):
                            row["animal_id"], row["animal_name"] = a["animal_id"], a["animal_name"]
                    yield row

    def _windows(
        self,
        device: str,
        box: int,
        start: float,
        end: float,
        batch: int,
        animal_id: int | None,
        animal_name: str | None,
    ) -> Iterator[dict[str, Any]]:
        cursor = self.db.execute(
            "SELECT w.device, w.box, w.seq, w.window_start_iso AS window_start, w.window_end_iso AS window_end, "
            "w.frames, w.valid_eyes, w.score, w.median, w.p90, w.face_visible_fraction, m.sha256 AS model_sha256, "
            "w.model_version, strftime('%Y-%m-%dT%H:%M:%fZ', w.received_at, 'unixepoch') AS received_at, "
            "w.abstained_eyes "
            "FROM score_windows w JOIN models m ON m.id = w.model_id "
            "WHERE w.device = ? AND w.box = ? AND w.window_start >= ? AND w.window_start < ? ORDER BY w.window_start",
            [device, box, start, end],
        )
        names = [d[0] for d in cursor.description]
        while True:
            chunk = cursor.fetchmany(batch)
            if not chunk:
                return
            for row in chunk:
                out = dict(zip(names, row))
                out["animal_id"], out["animal_name"] = animal_id, animal_name
                yield out

    # --- alerts -----------------------------------------------------------------------------

    def alerts(
        self,
        since: float | None = None,
        until: float | None = None,
        device: str | None = None,
        box: int | None = None,
        animal_id: int | None = None,
        unacknowledged: bool = False,
        limit: int = 500,
    ) -> list[dict[str, Any]]:
        """Newest first: id, source ('device'|'server'), event ('raised'|'cleared'), device, box,
        seq, animal_id, animal_name, rule_id, time, threshold, duration_s, score, received_at,
        acknowledged_by, acknowledged_at."""
        where, params = [], {"limit": max(1, min(int(limit), 10_000))}
        for cond, key, value in (
            ("al.time >= :since", "since", since),
            ("al.time < :until", "until", until),
            ("al.device = :device", "device", device),
            ("al.box = :box", "box", box),
            ("al.animal_id = :animal", "animal", animal_id),
        ):
            if value is not None:
                where.append(cond)
                params[key] = value
        if unacknowledged:
            where.append("al.event = 'raised' AND al.acknowledged_at IS NULL")
        sql = (
            "SELECT al.id, al.source, al.event, al.device, al.box, al.seq, al.animal_id, an.name AS animal_name, "
            "al.rule_id, al.time, al.threshold, al.duration_s, al.score, al.received_at, al.acknowledged_by, "
            "al.acknowledged_at FROM alerts al LEFT JOIN animals an ON an.id = al.animal_id"
        )
        if where:
            sql += " WHERE " + " AND ".join(where)
        return self._q(sql + " ORDER BY al.time DESC, al.id DESC LIMIT :limit", params)

    def alert(self, alert_id: int) -> dict[str, Any]:
        return _one(
            self.db.execute(
                "SELECT al.*, an.name AS animal_name FROM alerts al LEFT JOIN animals an ON an.id = al.animal_id "
                "WHERE al.id = ?",
                [alert_id],
            ),
            f"alert {alert_id}",
        )

    def acknowledge_alert(self, alert_id: int, username: str, now: float | None = None) -> dict[str, Any]:
        """Mark a raised alert as seen by `username`; acknowledging twice keeps the first."""
        now = time.time() if now is None else now
        with transaction(self.db) as conn:
            row = conn.execute("SELECT event FROM alerts WHERE id = ?", [alert_id]).fetchone()
            if row is None:
                raise NotFound(f"alert {alert_id}")
            if row[0] != "raised":
                raise Conflict(f"alert {alert_id} is a 'cleared' event; only raised alerts are acknowledged")
            conn.execute(
                "UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ? WHERE id = ? AND acknowledged_at IS NULL",
                [username, now, alert_id],
            )
        return self.alert(alert_id)

    # --- alert rules ------------------------------------------------------------------------

    def alert_rules(self) -> list[dict[str, Any]]:
        """id, animal_id, animal_name, experiment_id, experiment_name, threshold, duration_s, enabled, created."""
        return self._q(
            "SELECT r.*, an.name AS animal_name, e.name AS experiment_name FROM alert_rules r "
            "LEFT JOIN animals an ON an.id = r.animal_id LEFT JOIN experiments e ON e.id = r.experiment_id ORDER BY r.id"
        )

    def alert_rule(self, rule_id: int) -> dict[str, Any]:
        for rule in self.alert_rules():
            if rule["id"] == rule_id:
                return rule
        raise NotFound(f"alert rule {rule_id}")

    def create_alert_rule(
        self,
        threshold: float,
        duration_s: float,
        animal_id: int | None = None,
        experiment_id: int | None = None,
        enabled: bool = True,
    ) -> int:
        """A server-side rule: raise when an animal's score stays >= threshold for duration_s."""
        if (animal_id is None) == (experiment_id is None):
            raise MgsError("an alert rule applies to exactly one of an animal or an experiment")
        animal_id = _optional_id(animal_id, "animal_id")
        experiment_id = _optional_id(experiment_id, "experiment_id")
        for name, value, hi in (("threshold", threshold, 9.0), ("duration_s", duration_s, 7 * 86400.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= hi:
                raise MgsError(f"alert rule {name} {value!r} must be a number from 0 to {hi:g}")
        if animal_id is not None:
            self.animal(animal_id)
        else:
            self.experiment(experiment_id)  # type: ignore[arg-type]
        with transaction(self.db) as conn:
            cur = conn.execute(
                "INSERT INTO alert_rules (animal_id, experiment_id, threshold, duration_s, enabled, created) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [animal_id, experiment_id, float(threshold), float(duration_s), int(bool(enabled)), time.time()],
            )
            return int(cur.lastrowid)

    def set_alert_rule_enabled(self, rule_id: int, enabled: bool) -> None:
        with transaction(self.db) as conn:
            if conn.execute("UPDATE alert_rules SET enabled = ? WHERE id = ?", [int(enabled), rule_id]).rowcount == 0:
                raise NotFound(f"alert rule {rule_id}")
            if not enabled:
                conn.execute("DELETE FROM rule_state WHERE rule_id = ?", [rule_id])

    def delete_alert_rule(self, rule_id: int) -> None:
        with transaction(self.db) as conn:
            if conn.execute("DELETE FROM alert_rules WHERE id = ?", [rule_id]).rowcount == 0:
                raise NotFound(f"alert rule {rule_id}")

    def rules_for_animals(self, animal_ids: Iterable[int]) -> dict[int, list[dict[str, Any]]]:
        """Enabled rules that apply to each animal (its own and its experiment's)."""
        ids = sorted(set(animal_ids))
        if not ids:
            return {}
        rows = self._q(
            "SELECT an.id AS animal_id, r.id AS rule_id, r.threshold, r.duration_s FROM animals an "
            "JOIN alert_rules r ON r.enabled = 1 AND (r.animal_id = an.id OR r.experiment_id = an.experiment_id) "
            "WHERE an.id IN (SELECT value FROM json_each(?)) ORDER BY r.id",
            [json.dumps(ids)],
        )
        out: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            out[r["animal_id"]].append(r)
        return out

    def rule_states(self, pairs: Iterable[tuple[int, int]]) -> dict[tuple[int, int], dict[str, Any]]:
        """(rule_id, animal_id) -> {above_since, below_since, raised} for pairs that have state."""
        keys = sorted(set(pairs))
        if not keys:
            return {}
        rows = self._q(
            "SELECT s.* FROM rule_state s JOIN json_each(?) j "
            "ON s.rule_id = json_extract(j.value, '$[0]') AND s.animal_id = json_extract(j.value, '$[1]')",
            [json.dumps(keys)],
        )
        return {(r["rule_id"], r["animal_id"]): r for r in rows}

    def record_rule_states(self, states: dict[tuple[int, int], dict[str, Any]]) -> None:
        self.db.conn.executemany(
            "INSERT INTO rule_state (rule_id, animal_id, above_since, below_since, raised) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT(rule_id, animal_id) DO UPDATE SET above_since = excluded.above_since, "
            "below_since = excluded.below_since, raised = excluded.raised",
            [(k[0], k[1], s["above_since"], s["below_since"], int(s["raised"])) for k, s in states.items()],
        )

    def record_server_alert(
        self,
        event: str,
        device: str,
        box: int,
        animal_id: int,
        rule_id: int,
        t: float,
        threshold: float,
        duration_s: float,
        score: float | None,
        received_at: float,
    ) -> int:
        cur = self.db.conn.execute(
            "INSERT INTO alerts (source, event, device, box, animal_id, rule_id, time, threshold, duration_s, "
            "score, received_at) VALUES ('server', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [event, device, box, animal_id, rule_id, t, threshold, duration_s, score, received_at],
        )
        return int(cur.lastrowid)

    def new_windows(self, batch: StoredBatch) -> list[StoredWindow]:
        """The windows `IngestStore.store_windows` just added (for the alert rules)."""
        rows = self.db.execute(
            "SELECT device, box, seq, window_start, window_end, score FROM score_windows WHERE id > ? ORDER BY id",
            [batch.after_id],
        ).fetchall()
        return [StoredWindow(*row) for row in rows]

    # --- monitoring ---------------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """Ingest counters since the database was created: received, stored, duplicates,
        rejected, rejected.<reason kind>, alerts_published..."""
        return {name: value for name, value in self.db.execute("SELECT name, value FROM counters ORDER BY name")}

    def quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first: id, received_at, topic, payload (truncated text), payload_bytes, reason."""
        return self._q("SELECT * FROM quarantine ORDER BY id DESC LIMIT ?", [max(1, min(int(limit), 10_000))])
