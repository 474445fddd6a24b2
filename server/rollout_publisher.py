"""Publishing model assignments to the devices, from the ingest worker's MQTT session.

The web process records an assignment with `published_at` NULL; this thread, started with the
ingest worker in the same process, polls for such rows and publishes each retained, QoS 1, on the
device's model topic through the ingest transport (the server's one MQTT login, which the broker
ACL lets write `+/model`), then marks it published. The database is the queue, so an assignment
made while the broker is unreachable, or just before a restart, is sent once the session is back.
After every (re)connect it publishes every device's current assignment again: a broker that lost
its retained messages (no persistence, a fresh install) still tells every device what to run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol

import sqlite_utils

from mgs_core.messages import model_topic
from server.db import connect
from server.rollout import current_assignments, mark_published, message

log = logging.getLogger(__name__)

POLL_S = 0.5


class Publishing(Protocol):
    """The ingest transport as seen from here."""

    connected: threading.Event

    @property
    def connection_number(self) -> int:
        """Counts the connections made: a new number means a new session to tell everything."""

    def publish(self, topic: str, payload: str, retain: bool = False) -> bool:
        """Queue a QoS 1 publish; False when there is no connection."""


class AssignmentPublisher:
    def __init__(self, db_path: str | os.PathLike[str], prefix: str, transport: Publishing) -> None:
        self.db_path = Path(db_path)
        self.prefix = prefix
        self.transport = transport
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._told = 0  # the connection number on which every current assignment was published

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="mgs-model-assignments", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        db = connect(self.db_path, migrate_schema=False)
        try:
            while not self._stop.wait(POLL_S):
                try:
                    self.publish_due(db)
                except Exception:  # a bug or a locked database must not end the thread
                    log.exception("publishing model assignments failed; retrying")
        finally:
            db.conn.close()

    def publish_due(self, db: sqlite_utils.Database) -> int:
        """Publish what is due now; returns how many assignments were sent."""
        if not self.transport.connected.is_set():
            return 0
        connection = self.transport.connection_number
        everything = connection != self._told
        rows = current_assignments(db, only_unpublished=not everything)
        sent = []
        for row in rows:
            topic = model_topic(row["device"], self.prefix)
            if not self.transport.publish(topic, message(row).to_json().decode(), retain=True):
                return len(sent)
            sent.append(row["id"])
            log.info("told %s to run model version %r (assignment %d)", row["device"], row["version"], row["id"])
        mark_published(db, sent, time.time())
        if everything:
            self._told = connection
        return len(sent)
