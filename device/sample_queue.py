"""Review samples on their way to the server: an SQLite queue on disk and the thread that uploads it.

A sample is written in one transaction (its key, time and the finished upload body), so after a
crash or a power cut it is either fully queued or absent. It is deleted only once the server has
answered that it stored it or already had it (the same `sample_key`), so a lost answer means one
more upload, never a lost or doubled sample.

Samples are nice to have, scores are not: the queue is bounded by count, bytes and age, the oldest
are dropped first (counted by reason and logged), and nothing here ever blocks the frame loop.
`SampleWorker.submit` hands a kept window to the upload thread without waiting; the thread crops,
encodes, queues and uploads, backing off while the server is unreachable. A sample the server
refuses as malformed or too large is dropped with a log line, so one bad sample cannot stop the
queue; a refusal that is about the device (401/403: token revoked; 404: an older server) keeps the
samples and retries slowly until someone fixes the link.
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.sampling import SampleJob, SamplingConfig, build_body
from device.server_link import ServerLink, ServerLinkConfig, ServerRefused, ServerUnreachable
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

QUEUE_FILE = "samples.sqlite"
UPLOAD_PATH = "/samples"
# Refusals that are about the sample itself: retrying it will never help, the next one may work.
SAMPLE_REFUSED = frozenset({400, 413, 415, 422})
# Kept windows waiting in memory for the upload thread to encode them; more are dropped (counted).
MAX_PENDING_JOBS = 8
FIRST_RETRY_S = 2.0
EXPIRE_EVERY_S = 60.0


@dataclass(frozen=True)
class QueueRow:
    id: int
    sample_key: str
    body: bytes


class SampleQueue:
    """The on-disk queue; thread-safe (the upload thread writes, the health page reads)."""

    def __init__(self, path: Path, max_queued: int, max_bytes: int, max_age_s: float) -> None:
        self.path = Path(path)
        self.max_queued = max_queued
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.dropped: Counter[str] = Counter()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, sample_key TEXT NOT NULL UNIQUE, "
                "queued_at REAL NOT NULL, bytes INTEGER NOT NULL, body BLOB NOT NULL)"
            )
        except sqlite3.DatabaseError as exc:
            raise MgsError(
                f"cannot open the sample queue {self.path}: {exc}. Move it aside or point [sampling] path at a "
                "writable file (it holds only review samples, no scores)"
            ) from None
        except OSError as exc:
            raise MgsError(f"cannot create the sample queue directory {self.path.parent}: {exc.strerror}") from None

    @classmethod
    def from_config(cls, config: SamplingConfig, path: Path | None = None) -> SampleQueue:
        """The queue at `path`, else at `[sampling] path`."""
        where = path or config.path
        if where is None:
            raise MgsError("no sample queue file: set [sampling] path")
        return cls(where, config.max_queued, int(config.max_disk_mb * 1024 * 1024), config.max_age_hours * 3600)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def put(self, sample_key: str, body: bytes, now: float | None = None) -> bool:
        """Queue one sample, dropping the oldest beyond the limits; False if it alone is over `max_bytes`."""
        if len(body) > self.max_bytes:
            self._count_drop("too_large", 1, f"a sample of {len(body)} bytes is larger than [sampling] max_disk_mb")
            return False
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO samples (sample_key, queued_at, bytes, body) VALUES (?, ?, ?, ?)",
                    (sample_key, time.time() if now is None else now, len(body), body),
                )
                over_count = self._drop_oldest("COUNT(*)", self.max_queued)
                over_bytes = self._drop_oldest("COALESCE(SUM(bytes), 0)", self.max_bytes)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        for reason, n in (("max_queued", over_count), ("max_disk_mb", over_bytes)):
            if n:
                self._count_drop(reason, n, f"the queue reached [sampling] {reason}; dropped the oldest")
        return True

    def _drop_oldest(self, measure: str, limit: int) -> int:
        dropped = 0
        while self._db.execute(f"SELECT {measure} FROM samples").fetchone()[0] > limit:
            self._db.execute("DELETE FROM samples WHERE id = (SELECT MIN(id) FROM samples)")
            dropped += 1
        return dropped

    def expire(self, now: float | None = None) -> int:
        """Drop samples older than `max_age_s` (the server was away too long for them to matter)."""
        cutoff = (time.time() if now is None else now) - self.max_age_s
        with self._lock:
            n = self._db.execute("DELETE FROM samples WHERE queued_at < ?", (cutoff,)).rowcount
        if n:
            self._count_drop("max_age_hours", n, "older than [sampling] max_age_hours")
        return n

    def _count_drop(self, reason: str, n: int, why: str) -> None:
        self.dropped[reason] += n
        log.warning("sample queue %s: %d sample(s) dropped: %s (%d so far)", self.path, n, why, self.dropped.total())

    def oldest(self) -> QueueRow | None:
        with self._lock:
            row = self._db.execute("SELECT id, sample_key, body FROM samples ORDER BY id LIMIT 1").fetchone()
        return None if row is None else QueueRow(row[0], row[1], bytes(row[2]))

    def delete(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM samples WHERE id = ?", (row_id,))

    def depth(self) -> tuple[int, int]:
        """(samples, bytes) waiting."""
        with self._lock:
            n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM samples").fetchone()
        return int(n), int(size)


class SampleWorker:
    """The upload thread: encodes kept windows, queues them on disk and sends the queue to the server."""

    def __init__(
        self,
        config: SamplingConfig,
        samples: SampleQueue,
        link: ServerLink,
    ) -> None:
        self.config = config
        self.queue = samples
        self.link = link
        self.uploaded = 0
        self.already_stored = 0
        self.refused = 0
        self.busy_dropped = 0
        self.last_error = ""
        self._jobs: queue.Queue[SampleJob] = queue.Queue(MAX_PENDING_JOBS)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sample-upload", daemon=True)
        self._retry_s = 0.0
        self._next_try = 0.0
        self._next_expire = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after queuing the kept windows still in memory (an upload in flight may take timeout_s)."""
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.queue.close()

    def submit(self, job: SampleJob) -> None:
        """Hand a kept window to the upload thread; never waits (a full hand-over drops it, counted)."""
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.busy_dropped += 1
            log.warning(
                "sample of box %d dropped: %d kept window(s) already wait to be encoded", job.box, MAX_PENDING_JOBS
            )

    def stats(self) -> dict[str, Any]:
        depth, size = self.queue.depth()
        return {
            "queued": depth,
            "queued_mb": round(size / 1e6, 2),
            "uploaded": self.uploaded,
            "already_stored": self.already_stored,
            "refused": self.refused,
            "dropped": {**self.queue.dropped, "busy": self.busy_dropped},
            "last_error": self.last_error,
        }

    def _run(self) -> None:
        while True:
            wait = 0.0 if self._stop.is_set() else min(1.0, max(0.0, self._next_try - time.monotonic()))
            try:
                self._queue_job(self._jobs.get(timeout=wait) if wait else self._jobs.get_nowait())
                continue
            except queue.Empty:
                if self._stop.is_set():
                    return
            now = time.monotonic()
            if now >= self._next_expire:
                self._next_expire = now + EXPIRE_EVERY_S
                self.queue.expire()
            if now >= self._next_try:
                self._upload_one()

    def _queue_job(self, job: SampleJob) -> None:
        try:
            body = build_body(job, self.config)
            self.queue.put(body["sample_key"], json.dumps(body, separators=(",", ":")).encode())
        except (ValueError, sqlite3.Error) as exc:
            log.error("sample of box %d not queued: %s", job.box, exc)

    def _upload_one(self) -> None:
        """Send the oldest sample; on success the next one goes at once, on failure after a back-off."""
        row = self.queue.oldest()
        if row is None:
            self._next_try = time.monotonic() + 1.0
            return
        try:
            answer = self.link.request_json("POST", UPLOAD_PATH, json.loads(row.body))
            if not isinstance(answer, dict) or not isinstance(answer.get("stored"), bool):
                raise ServerUnreachable(f"the server answered {str(answer)[:100]!r}, not {{'stored': ...}}")
        except ServerUnreachable as exc:
            self._back_off(str(exc))
            return
        except ServerRefused as exc:
            if exc.status in SAMPLE_REFUSED:
                self.refused += 1
                self.queue.delete(row.id)
                log.warning("sample %s dropped: the server refused it: %s", row.sample_key, exc)
            else:
                self._back_off(f"{exc}; samples stay queued until the device's [server] link is fixed", at_most=True)
            return
        if self.last_error:
            log.info("sample upload works again: %s", self.link.base)
            self.last_error = ""
        self.queue.delete(row.id)
        if answer["stored"]:
            self.uploaded += 1
        else:
            self.already_stored += 1
        self._retry_s = 0.0
        self._next_try = 0.0

    def _back_off(self, error: str, at_most: bool = False) -> None:
        if error != self.last_error:
            log.warning("sample upload failed, will retry: %s", error)
        self.last_error = error
        limit = self.config.retry_max_s
        self._retry_s = limit if at_most else min(limit, max(FIRST_RETRY_S, self._retry_s * 2))
        self._next_try = time.monotonic() + self._retry_s


def queue_path(config: SamplingConfig, outbox_path: Path) -> Path:
    """`[sampling] path`, or samples.sqlite beside the outbox (the device's state folder)."""
    return config.path if config.path is not None else Path(outbox_path).parent / QUEUE_FILE


def start_sampling(config: SamplingConfig, link_config: ServerLinkConfig, outbox_path: Path) -> SampleWorker | None:
    """The running upload thread, or None (with one log line saying why) when sampling is off."""
    if not config.enabled:
        log.info("review sampling is off ([sampling] enabled = false)")
        return None
    if not link_config.enabled:
        log.info("review sampling is off: no [server] url in device.toml (samples need the HTTPS link to mgs-server)")
        return None
    path = queue_path(config, outbox_path)
    worker = SampleWorker(config, SampleQueue.from_config(config, path), ServerLink(link_config))
    worker.start()
    depth, _ = worker.queue.depth()
    log.info("review sampling on: %d sample(s) queued in %s, uploading to %s", depth, path, link_config.url)
    return worker
