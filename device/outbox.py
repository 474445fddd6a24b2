"""On-disk store-and-forward queue (SQLite, WAL) between the scorer and the MQTT publisher.

Every score window and alert is written here first and removed only after the server has said it
is stored (`StoredAck`, see `device.publisher`): a broker outage, a broker that loses its queue, a
network cut or a power loss loses nothing already measured. Each message gets a `seq` from a
counter kept in the same database and bumped in the same transaction as the insert, and the
outbox's `epoch`, a random id made when the file is created: the server stores every message
exactly once by (device, epoch, seq) however often it is redelivered, and a fresh outbox (the old
one lost or moved aside) starts a new epoch instead of reusing seqs the server already has.

Commits use `synchronous=FULL`: if a commit could vanish on power loss, the counter could roll back
and hand out a seq the server already stored (the server then quarantines the new message and
counts a seq regression, see `server.delivery`).

Limits: above `max_messages` the oldest rows are dropped (a last resort, counted and logged); when
the disk is full, new messages wait in memory (bounded the same way) without a seq and are written
as soon as space returns, so the device keeps scoring and says so in its status.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar

from mgs_core.errors import MgsError
from mgs_core.tomlconfig import Range, fail

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
# The write-ahead log is cut back to this size after checkpoints (SD cards, full disks).
WAL_LIMIT_BYTES = 1024 * 1024
# Warn once the queue passes this share of its limit, well before anything has to be dropped.
WARN_FRACTION = 0.8
# A queue at its limit drops a message per window: report that once a minute, not every time.
DROP_LOG_INTERVAL_S = 60.0
# Held messages go back to disk in transactions this small, so freed space is used as it appears.
HELD_BATCH = 32


@dataclass(frozen=True)
class OutboxConfig:
    SECTION: ClassVar[str] = "outbox"

    path: Path = field(
        default=Path("outbox.sqlite"),
        metadata={
            "doc": "SQLite file of undelivered messages and the seq counter (relative to the working directory; keep it on persistent storage)"
        },
    )
    max_messages: Annotated[int, Range(100)] = field(
        default=1_000_000,
        metadata={"doc": "queue limit (about 3 days of 1 s windows for 4 boxes); above it the oldest are dropped"},
    )
    max_bytes: int = field(
        default=0,
        metadata={"doc": "hard cap on the file size in bytes (0 = none); reaching it is handled like a full disk"},
    )

    def check(self) -> None:
        if self.max_bytes != 0 and self.max_bytes < 64 * 1024:
            raise fail("max_bytes", self.max_bytes, "must be 0 (no cap) or at least 65536")


@dataclass(frozen=True)
class Pending:
    """A queued message that a build function turns into its payload once it has a seq; it gets
    the outbox's epoch too, which every score window and alert must carry."""

    topic: str
    build: Callable[[int, str], bytes]


@dataclass(frozen=True)
class Row:
    seq: int
    topic: str
    payload: bytes


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    dropped: int
    held_in_memory: int
    disk_full: bool
    last_seq: int
    epoch: str
    first_seq: int  # lowest seq still on disk, or last_seq + 1 when none is

    def problem(self) -> str:
        """One line for the device status, or '' when the queue is healthy."""
        parts = []
        if self.disk_full:
            parts.append(f"outbox disk full: {self.held_in_memory} message(s) held in memory until space returns")
        if self.dropped:
            parts.append(f"outbox limit reached: {self.dropped} oldest message(s) dropped")
        return "; ".join(parts)


def _is_disk_full(exc: sqlite3.OperationalError) -> bool:
    return "full" in str(exc).lower()


class Outbox:
    """Thread-safe: the scorer enqueues while the publisher reads and acknowledges."""

    def __init__(self, path: Path, max_messages: int = 1_000_000, max_bytes: int = 0) -> None:
        self.path = Path(path)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        self._held: deque[Pending] = deque()
        self._stored_through = 0  # the server has every seq up to here; deleted by `flush_acks`
        self._disk_full = False
        self._warned_limit = False
        # Drops counted while the disk was full; written to the meta table with the next commit.
        self._dropped_unsaved = 0
        self._last_drop_log = -DROP_LOG_INTERVAL_S
        self._drops_since_log = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            if max_bytes:
                page = self._db.execute("PRAGMA page_size").fetchone()[0]
                self._db.execute(f"PRAGMA max_page_count={max(16, max_bytes // page)}")
            self._migrate()
            self._rows = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            self.epoch: str = self._db.execute("SELECT value FROM epoch").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise MgsError(
                f"cannot open the outbox {self.path}: {exc}. It holds undelivered scores: if it is damaged, move it "
                "aside (keep it for recovery) and start again, or point [outbox] path at a writable file"
            ) from None
        except OSError as exc:
            raise MgsError(f"cannot create the outbox directory {self.path.parent}: {exc.strerror}") from None
        if self._rows:
            log.info("outbox %s holds %d undelivered message(s); delivering them first", self.path, self._rows)

    @classmethod
    def from_config(cls, config: OutboxConfig) -> Outbox:
        return cls(config.path, config.max_messages, config.max_bytes)

    def _migrate(self) -> None:
        """Schema 2 adds the epoch. A new file gets a random one; a schema-1 file keeps counting
        with epoch '' (what the server files its earlier messages under), so it stays one outbox."""
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version not in (0, 1):
            raise MgsError(f"outbox {self.path} has schema {version}; this version reads schema {SCHEMA_VERSION}")
        epoch = secrets.token_hex(8) if version == 0 else ""
        self._db.executescript(
            f"""
            BEGIN;
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
            CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL);
            INSERT OR IGNORE INTO meta VALUES ('last_seq', 0), ('dropped', 0);
            CREATE TABLE epoch (value TEXT NOT NULL);
            INSERT INTO epoch VALUES ('{epoch}');
            PRAGMA user_version = {SCHEMA_VERSION};
            COMMIT;
            """
        )
        if version == 0:
            log.info("new outbox %s, epoch %s", self.path, epoch)

    def _meta(self, key: str) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])

    # --- writing ------------------------------------------------------------------------------

    def enqueue(self, items: Iterable[Pending]) -> list[int]:
        """Give each item the next seq and store it, all in one transaction; returns the seqs.

        When the disk is full the items wait in memory (returned list is then empty) and are
        written, in order, by the next successful `enqueue` or `retry_held`.
        """
        with self._lock:
            self._held.extend(items)
            return self._write_held()

    def retry_held(self) -> list[int]:
        with self._lock:
            return self._write_held() if self._held else []

    def _write_held(self) -> list[int]:
        """Write held items in order, in small transactions, until all are stored or the disk is full."""
        written: list[int] = []
        if self._disk_full:
            self._checkpoint()
        while self._held:
            batch = list(itertools.islice(self._held, HELD_BATCH))
            try:
                seqs = self._insert(batch)
            except sqlite3.OperationalError as exc:
                if not _is_disk_full(exc):
                    raise
                self._on_disk_full(exc)
                break
            for _ in batch:
                self._held.popleft()
            written.extend(seqs)
        if written and self._disk_full and not self._held:
            log.warning("outbox %s: space is back; held messages are written to disk", self.path)
            self._disk_full = False
        if written:
            self._warn_near_limit()
        return written

    def _insert(self, batch: list[Pending]) -> list[int]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            seq = self._meta("last_seq")
            overflow = max(0, self._rows + len(batch) - self.max_messages)
            if overflow:
                self._drop_oldest(overflow)
            if self._dropped_unsaved:
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (self._dropped_unsaved,))
            seqs = []
            for item in batch:
                seq += 1
                self._db.execute("INSERT INTO outbox VALUES (?, ?, ?)", (seq, item.topic, item.build(seq, self.epoch)))
                seqs.append(seq)
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'last_seq'", (seq,))
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._dropped_unsaved = 0
        self._rows += len(seqs) - overflow
        return seqs

    def _checkpoint(self) -> None:
        """Fold the write-ahead log into the database and truncate it: on a full disk the log cannot
        grow, but rows deleted after delivery leave free pages in the database file to reuse."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.OperationalError as exc:
            log.debug("checkpoint failed: %s", exc)

    def _rollback(self) -> None:
        # SQLite may already have rolled back by itself (e.g. after SQLITE_FULL on COMMIT).
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _drop_oldest(self, n: int) -> None:
        self._db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)", (n,))
        self._db.execute("UPDATE meta SET value = value + ? WHERE key = 'dropped'", (n,))
        self._drops_since_log += n
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            log.error(
                "outbox %s is at its limit of %d messages (the broker has been unreachable for long): dropped the %d "
                "oldest undelivered message(s) since the last report. Fix the broker connection or raise "
                "[outbox] max_messages",
                self.path,
                self.max_messages,
                self._drops_since_log,
            )
            self._last_drop_log, self._drops_since_log = now, 0

    def _on_disk_full(self, exc: sqlite3.OperationalError) -> None:
        overflow = len(self._held) - self.max_messages
        for _ in range(max(0, overflow)):
            self._held.popleft()
        self._dropped_unsaved += max(0, overflow)
        if not self._disk_full:
            log.error(
                "outbox %s: %s. Scoring continues; new messages are kept in memory (up to %d) until space "
                "returns. Free disk space on the device",
                self.path,
                exc,
                self.max_messages,
            )
        self._disk_full = True

    def _warn_near_limit(self) -> None:
        near = self._rows >= WARN_FRACTION * self.max_messages
        if near and not self._warned_limit:
            log.warning(
                "outbox %s holds %d of at most %d messages: the broker has not acknowledged messages for a long "
                "time; the oldest will be dropped when the limit is reached",
                self.path,
                self._rows,
                self.max_messages,
            )
        self._warned_limit = near

    # --- delivering ---------------------------------------------------------------------------

    def pending(self, after_seq: int = 0, limit: int = 100) -> list[Row]:
        """The oldest stored messages with seq > after_seq, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()
        return [Row(s, t, bytes(p)) for s, t, p in rows]

    def mark_stored(self, through: int) -> None:
        """The server has stored every seq up to `through`: those rows may go (deleted in one
        transaction by `flush_acks`)."""
        with self._lock:
            self._stored_through = max(self._stored_through, through)

    def stored_through(self) -> int:
        with self._lock:
            return self._stored_through

    def flush_acks(self) -> int:
        """Delete the rows the server has stored; an ack lost in a crash only means a redelivery."""
        with self._lock:
            if not self._rows or self._stored_through < self._first_seq():
                return 0
            try:
                self._db.execute("BEGIN IMMEDIATE")
                deleted = self._db.execute("DELETE FROM outbox WHERE seq <= ?", (self._stored_through,)).rowcount
                self._db.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self._rollback()
                if not _is_disk_full(exc):
                    raise
                return 0
            self._rows -= deleted
            self._warn_near_limit()
            return deleted

    def _first_seq(self) -> int:
        row = self._db.execute("SELECT MIN(seq) FROM outbox").fetchone()[0]
        return self._meta("last_seq") + 1 if row is None else int(row)

    # --- reporting ----------------------------------------------------------------------------

    def stats(self) -> OutboxStats:
        with self._lock:
            return OutboxStats(
                depth=self._rows + len(self._held),
                dropped=self._meta("dropped") + self._dropped_unsaved,
                held_in_memory=len(self._held),
                disk_full=self._disk_full,
                last_seq=self._meta("last_seq"),
                epoch=self.epoch,
                first_seq=self._first_seq(),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
