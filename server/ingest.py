"""MQTT ingest: every device message validated, stored exactly once, in batches, by one writer.

`IngestWorker` wires the two halves: `server.ingest_transport.IngestTransport` (the network thread:
the persistent paho session, subscriptions, PUBACKs) puts each message in a bounded `Inbox`, and
`server.ingest_writer.IngestWriter` (one writer thread) validates and stores each batch in a single
SQLite transaction, then reports back through the transport which messages to acknowledge and
which stored acks and alerts to publish. A full inbox blocks the network thread, which stops
reading the socket, so the broker holds the backlog instead of this process growing without
bound.

A message is acknowledged (PUBACK) only after the transaction that stored it, or quarantined it,
has committed; until then the broker keeps it in the session, so a hard kill (SIGKILL, power cut)
loses nothing: Mosquitto redelivers everything unacknowledged when the server reconnects, and the
unique key (device, epoch, seq) makes the redelivery a no-op. MQTT 5's Receive Maximum lets the
broker have up to `queue_size` messages unacknowledged at once whatever its
`max_inflight_messages` (20 by default, which would otherwise throttle ingest to one flush interval
per 20 messages).

`[ingest] protocol = "3.1.1"` is for a broker without MQTT 5 (the demo's embedded amqtt): the
session is then a 3.1.1 persistent one (clean_session=False), and acknowledgements still follow the
commit. Without Receive Maximum the broker's own inflight limit applies, so the network thread asks
the writer for an early flush whenever the socket has nothing more to read: a broker waiting for
acknowledgements goes quiet, and the batch it is waiting for is written at once rather than after
`flush_interval_s`.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from mgs_core.broker import BrokerConfig, TlsConfig
from mgs_core.tomlconfig import Check, Length, Range, existing_file, fail, validate
from server.db import connect
from server.ingest_transport import Inbox, IngestHealth, IngestTransport
from server.ingest_writer import IngestWriter
from server.rollout_publisher import AssignmentPublisher

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestTlsConfig(TlsConfig):
    SECTION: ClassVar[str] = "ingest.tls"


@dataclass(frozen=True)
class IngestConfig(BrokerConfig):
    """The `[ingest]` section of the server config: the broker connection plus how to batch.

    `tls = true` with `ca_file` is the older flat form of `[ingest.tls] enabled`/`ca`, and
    `keepalive_s` the older name of `keepalive`; both are read into the shared fields so existing
    server.toml files keep working.
    """

    SECTION: ClassVar[str] = "ingest"

    host: Annotated[str, Length(1)] = field(default="127.0.0.1", metadata={"doc": "MQTT broker host name or address"})
    client_id: Annotated[str, Length(1, 128, "characters")] = field(
        default="mgs-server-ingest",
        metadata={
            "doc": "fixed MQTT client id: the broker keeps this persistent session's messages while the server is down "
            "(the shipped broker config replaces it with the login, mgs-server)"
        },
    )
    protocol: Literal["5", "3.1.1"] = field(
        default="5",
        metadata={
            "doc": "MQTT version: 5 (the broker may send up to queue_size messages before they are acknowledged) or "
            "3.1.1 (for a broker without MQTT 5; its own inflight limit then paces the ingest)"
        },
    )
    tls: IngestTlsConfig | bool = field(  # type: ignore[assignment]
        default_factory=IngestTlsConfig,
        metadata={"doc": "TLS settings; `tls = true` (with `ca_file`) is the older flat form of `[ingest.tls]`"},
    )
    ca_file: Annotated[str, Check(existing_file)] = field(
        default="", metadata={"doc": "older flat form of `tls.ca`, read only with `tls = true`"}
    )
    keepalive_s: Annotated[int | None, Range(5, 3600, unit="seconds")] = field(
        default=None, metadata={"doc": "older name of `keepalive`"}
    )
    batch_size: Annotated[int, Range(1, 100_000)] = field(
        default=5000, metadata={"doc": "most messages written in one transaction"}
    )
    flush_interval_s: Annotated[float, Range(0.01, 60, unit="seconds")] = field(
        default=0.2, metadata={"doc": "longest a message waits before its batch is written"}
    )
    queue_size: int = field(default=50_000, metadata={"doc": "messages held in memory between receiving and writing"})
    accept_unknown_devices: bool = field(
        default=True,
        metadata={
            "doc": "store messages from devices never seen before; false = only devices registered by provisioning"
        },
    )
    publish_alerts: bool = field(
        default=True, metadata={"doc": "publish server-side alerts under <prefix>/alerts/<animal>"}
    )

    def __post_init__(self) -> None:
        if isinstance(self.tls, bool):
            object.__setattr__(
                self, "tls", IngestTlsConfig(enabled=self.tls, ca=Path(self.ca_file) if self.ca_file else None)
            )
        elif self.ca_file:
            raise ValueError("ca_file belongs to the flat form `tls = true`; with an [ingest.tls] table set tls.ca")
        if self.keepalive_s is not None:
            object.__setattr__(self, "keepalive", self.keepalive_s)

    def check(self) -> None:
        super().check()
        if self.queue_size < self.batch_size:
            raise fail("queue_size", self.queue_size, f"must be at least batch_size ({self.batch_size})")


class IngestWorker:
    """Subscribes to every device topic and writes what arrives to the database at `db_path`."""

    def __init__(self, config: IngestConfig, db_path: str | os.PathLike[str]) -> None:
        validate(config)
        self.config = config
        self.db_path = Path(db_path)
        self._health = IngestHealth()
        self._inbox = Inbox(config.queue_size, config.batch_size)
        self._transport = IngestTransport(config, self._health, receive_maximum=config.queue_size)
        self._writer = IngestWriter(
            self.db_path,
            config.prefix,
            self._transport,
            self._health,
            accept_unknown_devices=config.accept_unknown_devices,
            publish_alerts=config.publish_alerts,
        )
        self._writer_thread: threading.Thread | None = None
        self._assignments = AssignmentPublisher(self.db_path, config.prefix, self._transport)
        self.connected = self._transport.connected  # set once connected *and* subscribed

    @property
    def last_error(self) -> str:
        """The last connection or database problem; a (re)connect clears it."""
        return self._health.last_error

    def start(self) -> None:
        """Open the database (migrating it), start the writer, then the MQTT network thread."""
        connect(self.db_path).conn.close()
        self._inbox = Inbox(self.config.queue_size, self.config.batch_size)
        self._writer_thread = threading.Thread(
            target=self._writer.run,
            args=(self._inbox, self.config.flush_interval_s),
            name="mgs-ingest-writer",
            daemon=True,
        )
        self._writer_thread.start()
        self._transport.start(self._inbox)
        self._assignments.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop reading, write everything already received, acknowledge it, then disconnect.

        Whatever is not written and acknowledged by then stays in the broker's session and comes
        back after the next start."""
        self._assignments.stop()
        self._transport.stop_reading()
        if self._writer_thread is not None:
            self._inbox.close()
            self._writer_thread.join(timeout)
            if self._writer_thread.is_alive():
                log.error(
                    "ingest writer did not finish within %.0f s; %d messages unwritten (the broker "
                    "delivers them again after the next start)",
                    timeout,
                    len(self._inbox),
                )
        self._transport.close(timeout)
        self._writer_thread = None

    def stats(self) -> dict[str, int]:
        """Counters of this process since start: received, stored, duplicates, rejected, ..."""
        out = self._health.snapshot()
        out["queued"] = len(self._inbox)
        return out
