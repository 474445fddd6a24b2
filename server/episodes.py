"""Alert episodes: a raised and its cleared as one thing with a start, an end, a duration and a peak.

The alerts table keeps every event as it arrived (device alerts per box, rule alerts per rule and
animal), which is what the MQTT contract and the REST API expose. A person needs fewer, fuller
rows: "M03, since 09:12 (6 min), peak 7.8, device + rule, acknowledged by olga: analgesia given".
Episodes are derived from the alerts on every read, never stored, so they cannot disagree with
the events:

- per stream (a device's box, or a rule for an animal) a raised opens an interval and the next
  cleared closes it; a repeated raised joins the open interval;
- intervals of the same subject (the animal, or the box when no animal was assigned) that overlap
  or follow within MERGE_GAP_S are one episode, listing all their sources;
- an episode is acknowledged when every raised alert in it is; acknowledging writes the user,
  the time and a note for each of them (`acknowledgements`), and one audit entry.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from mgs_core.errors import MgsError
from server import audit
from server.db import transaction
from server.repository import NotFound
from server.timefmt import duration

MERGE_GAP_S = 60.0
LOOKBACK_S = 86400.0
NOTE_MAX_CHARS = 2000


@dataclass
class Episode:
    """One alert episode; `end` is None while it is open."""

    id: int
    animal_id: int | None
    animal_name: str | None
    device: str
    box: int
    start: float
    end: float | None
    sources: list[str] = field(default_factory=list)
    conditions: list[str] = field(default_factory=list)
    alert_ids: list[int] = field(default_factory=list)
    raised_ids: list[int] = field(default_factory=list)
    boxes: list[tuple[str, int]] = field(default_factory=list)
    peak: float | None = None
    acknowledgements: list[dict[str, Any]] = field(default_factory=list)
    unacknowledged: int = 0

    @property
    def open(self) -> bool:
        return self.end is None

    @property
    def acknowledged(self) -> bool:
        return self.unacknowledged == 0

    def duration(self, now: float) -> float:
        return (now if self.end is None else self.end) - self.start


def _stream(a: dict[str, Any]) -> tuple[Any, ...]:
    if a["source"] == "device":
        return ("device", a["device"], a["box"])
    return ("rule", a["rule_id"], a["animal_id"])


def _condition(a: dict[str, Any]) -> str:
    who = "device" if a["source"] == "device" else f"rule {a['rule_id']}"
    return f"{who}: ≥ {a['threshold']:g} for {duration(a['duration_s'])}"


def build(alerts: list[dict[str, Any]]) -> list[Episode]:
    """Pair and merge alert rows (any order) into episodes, oldest first. Pure: no database."""
    intervals: list[tuple[float, float | None, list[dict[str, Any]]]] = []
    open_by_stream: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for a in sorted(alerts, key=lambda r: (r["time"], r["id"])):
        key = _stream(a)
        if a["event"] == "raised":
            open_by_stream.setdefault(key, []).append(a)
        elif key in open_by_stream:
            members = open_by_stream.pop(key)
            intervals.append((members[0]["time"], a["time"], members + [a]))
    for members in open_by_stream.values():
        intervals.append((members[0]["time"], None, members))

    by_subject: dict[Any, list[tuple[float, float | None, list[dict[str, Any]]]]] = defaultdict(list)
    for interval in intervals:
        first = interval[2][0]
        subject = (
            ("animal", first["animal_id"]) if first["animal_id"] is not None else ("box", first["device"], first["box"])
        )
        by_subject[subject].append(interval)
    episodes: list[Episode] = []
    for parts in by_subject.values():
        parts.sort(key=lambda p: p[0])
        current: Episode | None = None
        for start, end, members in parts:
            if current is not None and (current.end is None or start <= current.end + MERGE_GAP_S):
                current.end = None if end is None or current.end is None else max(current.end, end)
                _add(current, members)
                continue
            first = members[0]
            current = Episode(
                id=first["id"],
                animal_id=first["animal_id"],
                animal_name=first.get("animal_name"),
                device=first["device"],
                box=first["box"],
                start=start,
                end=end,
            )
            _add(current, members)
            episodes.append(current)
    episodes.sort(key=lambda e: (e.start, e.id))
    return episodes


def _add(episode: Episode, members: list[dict[str, Any]]) -> None:
    for a in members:
        episode.alert_ids.append(a["id"])
        if (a["device"], a["box"]) not in episode.boxes:
            episode.boxes.append((a["device"], a["box"]))
        if a["event"] != "raised":
            continue
        episode.raised_ids.append(a["id"])
        source = "device" if a["source"] == "device" else "rule"
        if source not in episode.sources:
            episode.sources.append(source)
        condition = _condition(a)
        if condition not in episode.conditions:
            episode.conditions.append(condition)
        if a.get("acknowledged_at") is None:
            episode.unacknowledged += 1
        if a["score"] is not None:
            episode.peak = a["score"] if episode.peak is None else max(episode.peak, a["score"])


_ALERT_COLUMNS = (
    "al.id, al.source, al.event, al.device, al.box, al.animal_id, an.name AS animal_name, al.rule_id, "
    "al.time, al.threshold, al.duration_s, al.score, al.received_at, al.acknowledged_by, "
    "al.acknowledged_at"
)


def _rows(db: sqlite_utils.Database, sql: str, params: Any) -> list[dict[str, Any]]:
    cursor = db.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _fetch_start(db: sqlite_utils.Database, since: float) -> float:
    """How far back to read so an episode still open at `since` is found with its real start."""
    row = db.execute(
        "SELECT MIN(t) FROM (SELECT event, MAX(time) AS t FROM alerts WHERE time < ? GROUP BY source, "
        "CASE source WHEN 'device' THEN device || '/' || box ELSE rule_id || ':' || animal_id END) "
        "WHERE event = 'raised'",
        [since],
    ).fetchone()
    earliest_open = row[0] if row and row[0] is not None else math.inf
    return min(since - LOOKBACK_S, earliest_open)


def episodes(
    db: sqlite_utils.Database,
    since: float,
    until: float,
    animal_id: int | None = None,
    device: str | None = None,
    box: int | None = None,
    now: float | None = None,
) -> list[Episode]:
    """Episodes overlapping [since, until), newest first, with peak and acknowledgements filled in."""
    now = time.time() if now is None else now
    where = ["al.time >= ?", "al.time < ?"]
    params: list[Any] = [_fetch_start(db, since), until]
    if animal_id is not None:
        where.append("al.animal_id = ?")
        params.append(animal_id)
    if device is not None:
        where.append("al.device = ?")
        params.append(device)
    if box is not None:
        where.append("al.box = ?")
        params.append(box)
    alerts = _rows(
        db,
        f"SELECT {_ALERT_COLUMNS} FROM alerts al LEFT JOIN animals an ON an.id = al.animal_id "
        f"WHERE {' AND '.join(where)}",
        params,
    )
    found = [e for e in build(alerts) if e.start < until and (e.end is None or e.end >= since)]
    _fill(db, found, now)
    return found[::-1]


def open_episodes(db: sqlite_utils.Database, now: float | None = None) -> list[Episode]:
    """Episodes that are still open, or closed but not yet acknowledged within the last day."""
    now = time.time() if now is None else now
    return [e for e in episodes(db, now - LOOKBACK_S, now + 1, now=now) if e.open or not e.acknowledged]


def _fill(db: sqlite_utils.Database, found: list[Episode], now: float) -> None:
    """Peak from the minute rollups over the episode, and the acknowledgements with their notes."""
    for e in found:
        end = now if e.end is None else e.end
        for dev, bx in e.boxes:
            row = db.execute(
                "SELECT MAX(score_max) FROM rollup_minute WHERE device = ? AND box = ? AND bucket >= ? AND bucket < ?",
                [dev, bx, math.floor(e.start / 60) * 60, end],
            ).fetchone()
            if row[0] is not None:
                e.peak = row[0] if e.peak is None else max(e.peak, row[0])
    ids = [i for e in found for i in e.raised_ids]
    if not ids:
        return
    notes: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in _rows(
        db,
        "SELECT alert_id, username, time, note FROM acknowledgements WHERE alert_id IN "
        "(SELECT value FROM json_each(?)) ORDER BY time, id",
        [_json(ids)],
    ):
        notes[row["alert_id"]].append(row)
    plain = _rows(
        db,
        "SELECT id, acknowledged_by, acknowledged_at FROM alerts WHERE acknowledged_at IS NOT NULL "
        "AND id IN (SELECT value FROM json_each(?))",
        [_json(ids)],
    )
    for row in plain:  # acknowledged through the REST API, without a note
        if not notes[row["id"]]:
            notes[row["id"]].append({"username": row["acknowledged_by"], "time": row["acknowledged_at"], "note": ""})
    for e in found:
        seen = set()
        for alert_id in e.raised_ids:
            for n in notes.get(alert_id, []):
                key = (n["username"], round(n["time"], 3), n["note"])
                if key not in seen:
                    seen.add(key)
                    e.acknowledgements.append({"username": n["username"], "time": n["time"], "note": n["note"]})
        e.acknowledgements.sort(key=lambda n: n["time"])


def _json(ids: list[int]) -> str:
    return "[" + ",".join(str(int(i)) for i in ids) + "]"


def find(db: sqlite_utils.Database, episode_id: int, now: float | None = None) -> Episode:
    """The episode that alert `episode_id` belongs to."""
    now = time.time() if now is None else now
    rows = _rows(db, "SELECT time, animal_id, device, box FROM alerts WHERE id = ?", [episode_id])
    if not rows:
        raise NotFound(f"alert episode {episode_id} does not exist")
    a = rows[0]
    scope = {"animal_id": a["animal_id"]} if a["animal_id"] is not None else {"device": a["device"], "box": a["box"]}
    for e in episodes(db, a["time"] - 1, now + 1, now=now, **scope):
        if episode_id in e.alert_ids:
            return e
    raise NotFound(f"alert episode {episode_id} does not exist")


def acknowledge(
    db: sqlite_utils.Database, found: list[Episode], username: str, note: str, now: float | None = None
) -> int:
    """Acknowledge episodes (again, to add a note) for `username`; returns how many. One audit entry each."""
    now = time.time() if now is None else now
    if not isinstance(note, str) or len(note) > NOTE_MAX_CHARS:
        raise MgsError(f"the note is longer than {NOTE_MAX_CHARS} characters; shorten it")
    with transaction(db) as conn:
        for e in found:
            for alert_id in e.raised_ids:
                conn.execute(
                    "UPDATE alerts SET acknowledged_by = ?, acknowledged_at = ? WHERE id = ? "
                    "AND acknowledged_at IS NULL",
                    [username, now, alert_id],
                )
                conn.execute(
                    "INSERT INTO acknowledgements (alert_id, username, time, note) VALUES (?, ?, ?, ?)",
                    [alert_id, username, now, note.strip()],
                )
            audit.record_in(
                conn,
                username,
                "acknowledge episode",
                f"episode:{e.id}",
                {"acknowledged": e.acknowledged},
                {"acknowledged": True, "note": note.strip(), "animal": e.animal_name, "box": f"{e.device}/{e.box}"},
                now,
            )
    return len(found)
