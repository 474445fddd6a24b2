"""The ingest's write path: every write the ingest writer makes, inside its one transaction.

`IngestStore` holds what must run inside the writer's one-transaction-per-batch: score windows
with their rollups and box state, device alerts, statuses, availability, quarantine, the delivery
watermarks of the devices' outboxes, seq regressions and the ingest counters. None of these
methods commits: the caller opens the transaction with `write()` (or `server.db.transaction`),
so a batch is stored whole or not at all. The dashboard and API read and edit through
`server.repository.Repository`, whose methods commit their own transactions.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlite_utils

from mgs_core.messages import BoxAlert, DeviceStatus, ScoreWindow, parse_utc_iso, utc_iso
from server.db import transaction
from server.repository import Quarantined, Repository, StoredBatch
from server.rollout_history import record_model_changes

QUARANTINE_PAYLOAD_CHARS = 2048
QUARANTINE_MAX_ROWS = 10_000
# ISO-8601 'YYYY-MM-DDTHH:MM:SS.sssZ' -> Unix seconds in SQLite, rounded to the wire's milliseconds.
_EPOCH_SQL = "round((julianday(?) - 2440587.5) * 86400.0, 3)"
_CANONICAL_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def _canonical_iso(value: str) -> str:
    """The wire's own format passes as is; any other valid ISO-8601 UTC spelling is rewritten so
    SQLite's date functions can read it."""
    if _CANONICAL_ISO.match(value):
        return value
    return utc_iso(parse_utc_iso(value))


class IngestStore:
    """The ingest writer's database writes over one `sqlite_utils.Database`; see the module docstring."""

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self.repository = Repository(db)  # the reads the write path needs (which animal is in a box)
        self._model_ids: dict[str, int] = {}

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """The one transaction a batch is written in (`BEGIN IMMEDIATE` ... commit, or rollback)."""
        try:
            with transaction(self.db) as conn:
                yield conn
        except BaseException:
            self._model_ids.clear()  # ids the rolled-back transaction inserted are gone
            raise

    def model_id(self, sha: str) -> int:
        """The small id of a model by its sha256, added on first use (cached for this store)."""
        model_id = self._model_ids.get(sha)
        if model_id is None:
            conn = self.db.conn
            conn.execute("INSERT INTO models (sha256) VALUES (?) ON CONFLICT(sha256) DO NOTHING", [sha])
            model_id = conn.execute("SELECT id FROM models WHERE sha256 = ?", [sha]).fetchone()[0]
            self._model_ids[sha] = model_id
        return model_id

    def store_windows(self, windows: Sequence[ScoreWindow], received_at: float) -> StoredBatch:
        """Insert score windows not stored before (by device, epoch and seq) and update the rollups,
        the boxes' current state and the devices' last-seen times from the new rows only, so a
        broker redelivery changes nothing, not even the rollups.

        The single writer makes new rows exactly those with an id above the largest id before
        the insert; rollups and box state are then computed by SQLite from those rows, and times
        are converted from ISO-8601 in SQL, because per-row Python work is the bottleneck of the
        ingest (bench/bench_ingest.py measures it)."""
        conn = self.db.conn
        after_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM score_windows").fetchone()[0]
        rows = [
            (
                w.device,
                w.box,
                w.epoch,
                w.seq,
                _canonical_iso(w.window_start),
                _canonical_iso(w.window_end),
                w.frames,
                w.valid_eyes,
                w.score,
                w.median,
                w.p90,
                w.face_visible_fraction,
                self.model_id(w.model_sha256),
                w.model_version,
                received_at,
                w.abstained_eyes,
            )
            for w in windows
        ]
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO score_windows (device, box, epoch, seq, window_start, window_end, frames, "
            "valid_eyes, score, median, p90, face_visible_fraction, model_id, model_version, received_at, abstained_eyes) "
            f"VALUES (?, ?, ?, ?, {_EPOCH_SQL}, {_EPOCH_SQL}, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        count = conn.total_changes - before
        if count:
            self._update_from_new_rows(after_id, received_at)
            record_model_changes(conn, after_id)
        return StoredBatch(count, after_id)

    def reused_seqs(self, windows: Sequence[ScoreWindow]) -> list[tuple[ScoreWindow, str]]:
        """Windows whose (device, epoch, seq) is already stored with another box or start time, each
        with the reason: the device's seq counter went back (an old copy of its outbox), so storing
        it would be mistaken for a redelivery and lose the window."""
        if not windows:
            return []
        keys = json.dumps([[w.device, w.epoch, w.seq] for w in windows])
        stored = {
            (d, e, q): (b, t)
            for d, e, q, b, t in self.db.conn.execute(
                "SELECT w.device, w.epoch, w.seq, w.box, w.window_start FROM json_each(?) j JOIN score_windows w "
                "ON w.device = json_extract(j.value, '$[0]') AND w.epoch = json_extract(j.value, '$[1]') "
                "AND w.seq = json_extract(j.value, '$[2]')",
                [keys],
            )
        }
        reused = []
        for w in windows:
            old = stored.get((w.device, w.epoch, w.seq))
            if old is not None and (old[0] != w.box or abs(old[1] - parse_utc_iso(w.window_start)) > 0.001):
                reason = (
                    f"seq {w.seq} of outbox epoch {w.epoch!r} is already stored for box {old[0]} at "
                    f"{utc_iso(old[1])}: the device's seq went back (was its outbox restored from an old "
                    "copy?); kept here instead of being dropped as a duplicate"
                )
                reused.append((w, reason))
        return reused

    def update_rollups(self, after_id: int) -> None:
        """Add the score windows with an id above `after_id` to the minute and hour rollups
        (`not_scorable_windows`: no score, but eyes the model abstained on)."""
        conn = self.db.conn
        for table, size in (("rollup_minute", 60), ("rollup_hour", 3600)):
            conn.execute(
                f"INSERT INTO {table} (device, box, bucket, windows, face_windows, score_sum, score_min, score_max, "
                f"not_scorable_windows) "
                f"SELECT device, box, CAST(window_start / {size} AS INTEGER) * {size}, COUNT(*), COUNT(score), "
                f"TOTAL(score), MIN(score), MAX(score), SUM(score IS NULL AND abstained_eyes > 0) "
                f"FROM score_windows WHERE id > ? GROUP BY 1, 2, 3 "
                f"ON CONFLICT(device, box, bucket) DO UPDATE SET "
                f"windows = windows + excluded.windows, face_windows = face_windows + excluded.face_windows, "
                f"not_scorable_windows = not_scorable_windows + excluded.not_scorable_windows, "
                f"score_sum = score_sum + excluded.score_sum, "
                f"score_min = CASE WHEN score_min IS NULL OR excluded.score_min < score_min "
                f"THEN excluded.score_min ELSE score_min END, "
                f"score_max = CASE WHEN score_max IS NULL OR excluded.score_max > score_max "
                f"THEN excluded.score_max ELSE score_max END",
                [after_id],
            )

    def _update_from_new_rows(self, after_id: int, received_at: float) -> None:
        self.update_rollups(after_id)
        conn = self.db.conn
        # The newest window by its end time: seqs restart with a new outbox epoch, times do not.
        # (SQLite takes the bare columns from the row that holds the MAX.)
        conn.execute(
            "INSERT INTO boxes (device, box, last_seq, last_window_end, last_score, last_face_visible_fraction, "
            "last_received_at, last_abstained_eyes) "
            "SELECT device, box, seq, MAX(window_end), score, face_visible_fraction, received_at, abstained_eyes "
            "FROM score_windows WHERE id > ? GROUP BY device, box "
            "ON CONFLICT(device, box) DO UPDATE SET "
            "last_seq = excluded.last_seq, last_window_end = excluded.last_window_end, "
            "last_score = excluded.last_score, last_face_visible_fraction = excluded.last_face_visible_fraction, "
            "last_received_at = excluded.last_received_at, last_abstained_eyes = excluded.last_abstained_eyes "
            "WHERE boxes.last_window_end IS NULL OR excluded.last_window_end >= boxes.last_window_end",
            [after_id],
        )
        conn.execute(
            "INSERT INTO devices (name, first_seen, last_seen, last_score_at) "
            "SELECT DISTINCT device, :now, :now, :now FROM score_windows WHERE id > :after "
            "ON CONFLICT(name) DO UPDATE SET last_seen = excluded.last_seen, last_score_at = excluded.last_score_at",
            {"now": received_at, "after": after_id},
        )

    def store_device_alerts(self, alerts: Sequence[BoxAlert], received_at: float) -> int:
        """Insert device alerts once per (device, epoch, seq); update the box's alert state. Returns
        the number of new rows."""
        conn = self.db.conn
        stored = 0
        for a in alerts:
            t = parse_utc_iso(a.time)
            cur = conn.execute(
                "INSERT OR IGNORE INTO alerts (source, event, device, box, epoch, seq, animal_id, time, threshold, "
                "duration_s, score, received_at) VALUES ('device', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    a.event,
                    a.device,
                    a.box,
                    a.epoch,
                    a.seq,
                    self.repository.animal_at(a.device, a.box, t),
                    t,
                    a.threshold,
                    a.duration_s,
                    a.score,
                    received_at,
                ],
            )
            if cur.rowcount:
                stored += 1
                conn.execute(
                    "INSERT INTO boxes (device, box, device_alert) VALUES (?, ?, ?) "
                    "ON CONFLICT(device, box) DO UPDATE SET device_alert = excluded.device_alert",
                    [a.device, a.box, a.event],
                )
        return stored

    def store_status(self, status: DeviceStatus, received_at: float) -> None:
        self.db.conn.execute(
            "INSERT INTO devices (name, first_seen, last_seen, status_json, status_time, fps, target_fps, backend, "
            "camera, outbox_depth, skipped_frames, uptime_s, version, models_json, message, model_version) "
            "VALUES (:name, :now, :now, :json, :time, :fps, :target_fps, :backend, :camera, :depth, :skipped, "
            ":uptime, :version, :models, :message, :model_version) ON CONFLICT(name) DO UPDATE SET last_seen = :now, "
            "status_json = :json, status_time = :time, fps = :fps, target_fps = :target_fps, backend = :backend, "
            "camera = :camera, outbox_depth = :depth, skipped_frames = :skipped, uptime_s = :uptime, "
            "version = :version, models_json = :models, message = :message, model_version = :model_version",
            {
                "name": status.device,
                "now": received_at,
                "json": status.to_json().decode(),
                "time": parse_utc_iso(status.time),
                "fps": status.fps,
                "target_fps": status.target_fps,
                "backend": status.backend,
                "camera": status.camera,
                "depth": status.queue_depth,
                "skipped": status.skipped_frames,
                "uptime": status.uptime_s,
                "version": status.version,
                "models": json.dumps(status.models),
                "message": status.message,
                "model_version": status.model_version,
            },
        )

    def store_availability(self, device: str, availability: str, received_at: float) -> None:
        self.db.conn.execute(
            "INSERT INTO devices (name, first_seen, last_seen, availability, availability_changed) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET last_seen = excluded.last_seen, "
            "availability_changed = CASE WHEN availability IS excluded.availability THEN availability_changed "
            "ELSE excluded.availability_changed END, availability = excluded.availability",
            [device, received_at, received_at, availability, received_at],
        )

    def store_quarantine(self, items: Sequence[Quarantined]) -> None:
        """Keep rejected messages for a person to inspect; payloads are truncated and the table is
        capped at QUARANTINE_MAX_ROWS, newest kept."""
        if not items:
            return
        conn = self.db.conn
        conn.executemany(
            "INSERT INTO quarantine (received_at, topic, payload, payload_bytes, reason, device, epoch, seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    q.received_at,
                    q.topic[:512],
                    q.payload[:QUARANTINE_PAYLOAD_CHARS].decode("utf-8", errors="replace"),
                    len(q.payload),
                    q.reason[:1000],
                    q.device,
                    q.epoch,
                    q.seq,
                )
                for q in items
            ],
        )
        conn.execute("DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?", [QUARANTINE_MAX_ROWS])

    def delivery(self, device: str, epoch: str) -> tuple[int, int] | None:
        """(stored_through, highest_seq) of a device's outbox epoch, or None if never seen."""
        row = self.db.conn.execute(
            "SELECT stored_through, highest_seq FROM delivery WHERE device = ? AND epoch = ?", [device, epoch]
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def latest_epoch(self, device: str) -> tuple[str, int] | None:
        """The (epoch, highest seq) this device stored last, or None for a device never seen."""
        row = self.db.conn.execute(
            "SELECT epoch, highest_seq FROM delivery WHERE device = ? ORDER BY last_seen DESC LIMIT 1", [device]
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def handled_seqs(self, device: str, epoch: str, above: int) -> set[int]:
        """Seqs above `above` of a device's epoch that are stored (windows, alerts) or quarantined."""
        params = [device, epoch, above]
        return {
            row[0]
            for row in self.db.conn.execute(
                "SELECT seq FROM score_windows WHERE device = ? AND epoch = ? AND seq > ? "
                "UNION SELECT seq FROM alerts WHERE device = ? AND epoch = ? AND seq > ? "
                "UNION SELECT seq FROM quarantine WHERE device = ? AND epoch = ? AND seq > ?",
                params * 3,
            )
        }

    def record_delivery(self, device: str, epoch: str, stored_through: int, highest_seq: int, now: float) -> None:
        self.db.conn.execute(
            "INSERT INTO delivery (device, epoch, stored_through, highest_seq, first_seen, last_seen) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(device, epoch) DO UPDATE SET "
            "stored_through = excluded.stored_through, highest_seq = MAX(highest_seq, excluded.highest_seq), "
            "last_seen = excluded.last_seen",
            [device, epoch, stored_through, highest_seq, now, now],
        )

    def record_seq_regression(self, device: str, what: str, now: float) -> None:
        """Count a seq that went back for this device, with one line saying how (devices page)."""
        self.db.conn.execute(
            "INSERT INTO devices (name, first_seen, last_seen, seq_regressions, last_regression, last_regression_at) "
            "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(name) DO UPDATE SET seq_regressions = seq_regressions + 1, "
            "last_regression = excluded.last_regression, last_regression_at = excluded.last_regression_at",
            [device, now, now, what[:500], now],
        )

    def add_counters(self, deltas: dict[str, int]) -> None:
        self.db.conn.executemany(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            [(k, v) for k, v in deltas.items() if v],
        )
