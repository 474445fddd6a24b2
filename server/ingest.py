"""MQTT ingest: every device message validated, stored exactly once, in batches, by one writer.

The network thread (paho, driven by this worker) only puts each message in a bounded inbox; one
writer thread validates with `mgs_core.messages`, and writes each batch in a single SQLite transaction
(windows, rollups, alerts, statuses, quarantine, rule evaluation, counters). The unique key
(device, epoch, seq) makes a redelivery a no-op. A full inbox blocks the network thread, which
stops reading the socket, so the broker holds the backlog instead of this process growing without
bound.

The session is persistent (fixed client id, MQTT 5 with clean_start=False and a session that never
expires, QoS 1), so messages published while the server is down wait in the broker. A message is
acknowledged (PUBACK) only after the transaction that stored it, or quarantined it, has committed:
the writer hands the committed packet ids back to the network thread, which owns the socket and
sends the PUBACKs in bulk. Until then the broker keeps the message in the session, so a hard kill
(SIGKILL, power cut) loses nothing: Mosquitto redelivers everything unacknowledged when the server
reconnects. Packet ids belong to one connection; acknowledgements for an earlier connection are
dropped, and the broker's redelivery of those messages is stored as a duplicate (no-op) and
acknowledged then. MQTT 5's Receive Maximum lets the broker have up to `queue_size` messages
unacknowledged at once whatever its `max_inflight_messages` (20 by default, which would otherwise
throttle ingest to one flush interval per 20 messages).

`[ingest] protocol = "3.1.1"` is for a broker without MQTT 5 (the demo's embedded amqtt): the
session is then a 3.1.1 persistent one (clean_session=False), and acknowledgements still follow the
commit. Without Receive Maximum the broker's own inflight limit applies, so the network thread asks
the writer for an early flush whenever the socket has nothing more to read: a broker waiting for
acknowledgements goes quiet, and the batch it is waiting for is written at once rather than after
`flush_interval_s`.

Nothing a device sends can stop the worker: a message that fails validation is counted, logged
with its topic, and kept (truncated) in the `quarantine` table for a person to look at; a batch
the database refuses is written message by message, so only the message that fails alone is
quarantined. After each commit the server publishes, per device and outbox epoch touched, how far
that outbox is stored (`server.delivery`): the device deletes its copies only then, so the broker
is never the only copy of a window.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import sqlite3
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mgs_core.broker import BrokerConfig, TlsConfig, make_client
from mgs_core.errors import MessageError
from mgs_core.messages import (
    MAX_INT,
    MAX_PAYLOAD_BYTES,
    AnimalAlert,
    BoxAlert,
    DeviceStatus,
    ScoreWindow,
    StoredAck,
    animal_alert_topic,
    parse_availability,
    parse_state,
    parse_topic,
    score_topic,
    stored_topic,
    subscriptions,
    utc_iso,
)
from mgs_core.tomlconfig import Check, Length, Range, existing_file, fail, validate
from server.db import connect, transaction
from server.delivery import DeliveryTracker
from server.repository import Quarantined, Repository
from server.rules import RuleEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the network thread hands it to the writer."""

    received_at: float
    topic: str
    payload: bytes
    connection: int  # numbers the connections: a packet id is only valid on its own
    mid: int  # packet id to acknowledge after the commit; 0 = QoS 0, nothing to acknowledge


# MQTT 5 session expiry "never": the broker's `persistent_client_expiration` still applies.
_SESSION_NEVER_EXPIRES = 0xFFFFFFFF


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
    tls: TlsConfig | bool = field(  # type: ignore[assignment]
        default_factory=TlsConfig,
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
                self, "tls", TlsConfig(enabled=self.tls, ca=Path(self.ca_file) if self.ca_file else None)
            )
        elif self.ca_file:
            raise ValueError("ca_file belongs to the flat form `tls = true`; with an [ingest.tls] table set tls.ca")
        if self.keepalive_s is not None:
            object.__setattr__(self, "keepalive", self.keepalive_s)

    def check(self) -> None:
        super().check()
        if self.queue_size < self.batch_size:
            raise fail("queue_size", self.queue_size, f"must be at least batch_size ({self.batch_size})")


class _Inbox:
    """Bounded hand-over from the paho thread to the writer.

    A `queue.Queue` wakes the writer on every message; at the ingest's design rate that ping-pong
    costs more than the writing. Here a message costs one uncontended lock, the writer wakes once per
    full batch or flush interval, and a full inbox blocks the paho thread (backpressure).
    """

    def __init__(self, capacity: int, batch_size: int) -> None:
        self.capacity = capacity
        self.batch_size = batch_size
        self._items: list[Received] = []
        self._cond = threading.Condition()
        self._closed = False
        self._flush = False

    def put(self, item: Received) -> None:
        """Hand over one message; once closed, drop it: it is not acknowledged, so the broker keeps it."""
        with self._cond:
            while len(self._items) >= self.capacity and not self._closed:
                self._cond.wait()
            if self._closed:
                return
            self._items.append(item)
            if len(self._items) == self.batch_size:
                self._cond.notify_all()

    def request_flush(self) -> None:
        """Let the writer take what is there now instead of waiting for a full batch."""
        with self._cond:
            if self._items and not self._flush:
                self._flush = True
                self._cond.notify_all()

    def take(self, max_wait: float) -> tuple[list[Received], bool]:
        """Up to batch_size items after at most `max_wait` s (less after `request_flush`); True once closed and empty."""
        with self._cond:
            if len(self._items) < self.batch_size and not self._closed and not self._flush:
                self._cond.wait(max_wait)
            self._flush = False
            items = self._items[: self.batch_size]
            del self._items[: self.batch_size]
            self._cond.notify_all()
            return items, self._closed and not self._items

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        return len(self._items)


class _Batch:
    """The parsed contents of one batch, grouped by what gets written where."""

    def __init__(self) -> None:
        self.windows: list[ScoreWindow] = []
        self.alerts: list[BoxAlert] = []
        self.statuses: list[tuple[float, DeviceStatus]] = []
        self.availability: list[tuple[float, str, str]] = []
        self.quarantine: list[Quarantined] = []
        self.first_seqs: list[tuple[str, str, int]] = []  # (device, epoch, lowest seq in its outbox) from statuses
        self.counts: Counter[str] = Counter()


class IngestWorker:
    """Subscribes to every device topic and writes what arrives to the database at `db_path`."""

    def __init__(self, config: IngestConfig, db_path: str | os.PathLike[str]) -> None:
        validate(config)
        self.config = config
        self.db_path = Path(db_path)
        self._inbox = _Inbox(config.queue_size, config.batch_size)
        self._writer: threading.Thread | None = None
        self._network: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._stop_reading = threading.Event()  # stop(): take no more messages, acknowledge what is stored
        self._stopping = threading.Event()  # then disconnect
        self._connection = 0  # numbers the connections: packet ids are only valid on their own
        self._committed: list[tuple[int, int]] = []  # (connection, packet id) stored, not yet acknowledged
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._received = 0  # messages paho handed over; tells the network thread a read made progress
        self._was_subscribed = False
        self._lock = threading.Lock()
        self._stats: Counter[str] = Counter()
        self.connected = threading.Event()  # set once connected *and* subscribed
        self.last_error: str = ""

    # --- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Open the database (migrating it), start the writer, then the MQTT network thread."""
        connect(self.db_path).conn.close()
        self._stop_reading.clear()
        self._stopping.clear()
        self._inbox = _Inbox(self.config.queue_size, self.config.batch_size)
        self._writer = threading.Thread(target=self._write_loop, name="mgs-ingest-writer", daemon=True)
        self._writer.start()
        self._client = self._new_client()
        self._network = threading.Thread(
            target=self._network_loop, args=(self._client,), name="mgs-ingest-mqtt", daemon=True
        )
        self._network.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop reading, write everything already received, acknowledge it, then disconnect.

        Whatever is not written and acknowledged by then stays in the broker's session and comes
        back after the next start."""
        self._stop_reading.set()
        self._wake_network()
        if self._writer is not None:
            self._inbox.close()
            self._writer.join(timeout)
            if self._writer.is_alive():
                log.error(
                    "ingest writer did not finish within %.0f s; %d messages unwritten (the broker "
                    "delivers them again after the next start)",
                    timeout,
                    len(self._inbox),
                )
        self._stopping.set()
        self._wake_network()
        if self._network is not None:
            self._network.join(timeout)
        self._client = None
        self._network = None
        self._writer = None
        self.connected.clear()

    def _new_client(self) -> mqtt.Client:
        client = make_client(self.config, self.config.client_id, persistent=True, manual_ack=True)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        # Packets queued by other threads (alert publishes) are written by the network thread.
        client.on_socket_register_write = lambda *args: None
        return client

    # --- network thread -------------------------------------------------------------------------

    def _network_loop(self, client: mqtt.Client) -> None:
        """Connect, serve, and reconnect with back-off until stopped.

        paho's own loop thread calls select() and wakes itself through a socket pair for every
        message; reading every message that is available after one select() costs much less CPU
        per message (docs/server.md has the figures). PUBACKs go out in bulk, one batch at a time,
        when the writer has committed it.
        """
        mqtt5 = self.config.protocol == "5"
        properties = None
        if mqtt5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = _SESSION_NEVER_EXPIRES
            properties.ReceiveMaximum = min(self.config.queue_size, 65535)
        delay = 1.0
        while not self._stop_reading.is_set():
            try:
                client.connect(
                    self.config.host,
                    self.config.port,
                    keepalive=self.config.keepalive,
                    clean_start=False if mqtt5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                    properties=properties,
                )
            except OSError as exc:
                self.last_error = f"cannot reach the MQTT broker at {self.config.host}:{self.config.port}: {exc}"
                log.warning("%s; retrying in %.0f s", self.last_error, delay)
            else:
                self._connection += 1
                self._serve(client)
            if self._stop_reading.is_set():
                break
            delay = 1.0 if self._was_subscribed else min(delay * 2, 30.0)
            self._was_subscribed = False
            self._stop_reading.wait(delay)
        if client.socket() is not None:
            self._send_acks(client)
            client.disconnect()
            self._flush(client)

    def _flush(self, client: mqtt.Client, timeout: float = 10.0) -> None:
        """Write the last PUBACKs and the DISCONNECT: thousands of 4-byte packets can fill the
        socket buffer, where one `loop_write()` would give up.

        Best effort: closing a socket that still holds unread messages sends a TCP reset, and the
        broker may drop PUBACKs it has not processed yet. Those messages come back after the next
        start and are counted as duplicates; nothing is lost."""
        deadline = time.monotonic() + timeout
        while client.want_write() and time.monotonic() < deadline:
            sock = client.socket()
            if sock is None:
                return
            select.select([], [sock], [], 0.2)
            if client.loop_write() not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                return

    def _wake_network(self) -> None:
        try:
            self._wake_writer.send(b"\0")
        except BlockingIOError:  # the buffer already holds a wake-up
            pass

    def _send_acks(self, client: mqtt.Client) -> None:
        """Acknowledge every committed message received on the current connection, through paho's
        public `ack()` (each PUBACK goes into paho's outgoing queue, written by this thread)."""
        with self._lock:
            committed, self._committed = self._committed, []
        mids = [mid for connection, mid in committed if connection == self._connection]
        for mid in mids:
            client.ack(mid, 1)
        with self._lock:
            self._stats["acknowledged"] += len(mids)
        if len(mids) < len(committed):
            log.info(
                "%d stored messages arrived on an earlier connection; the broker delivers them again "
                "and they are counted as duplicates",
                len(committed) - len(mids),
            )

    def _serve(self, client: mqtt.Client) -> None:
        """Read, acknowledge what the writer committed, and keep alive until the connection drops or
        `stop()` is called (after `stop()` starts, only acknowledge)."""
        ok = mqtt.MQTT_ERR_SUCCESS
        flush_when_idle = self.config.protocol == "3.1.1"
        while not self._stopping.is_set():
            sock = client.socket()
            if sock is None:
                return
            reading = not self._stop_reading.is_set()
            pending = sock.pending() if reading and isinstance(sock, ssl.SSLSocket) else 0
            readable, _, _ = select.select(
                [sock, self._wake_reader] if reading else [self._wake_reader],
                [sock] if client.want_write() else [],
                [],
                0 if pending else 0.2,
            )
            if self._wake_reader in readable:
                self._wake_reader.recv(4096)
                self._send_acks(client)
            if (sock in readable or pending) and reading:
                while not self._stop_reading.is_set():
                    before = self._received
                    if client.loop_read() != ok:
                        return
                    if self._received == before:
                        break
                if flush_when_idle:
                    self._inbox.request_flush()
            if client.want_write() and client.loop_write() not in (ok, mqtt.MQTT_ERR_AGAIN):
                return
            if client.loop_misc() != ok:
                return

    def stats(self) -> dict[str, int]:
        """Counters of this process since start: received, stored, duplicates, rejected, ..."""
        with self._lock:
            out = dict(self._stats)
        out["queued"] = len(self._inbox)
        return out

    # --- paho callbacks (network thread: keep them cheap) -------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.last_error = f"broker refused the connection: {reason}"
            log.error("%s (check [ingest] username/password and the broker ACL)", self.last_error)
            return
        client.subscribe([(topic, 1) for topic in subscriptions(self.config.prefix)])
        self.last_error = ""
        log.info(
            "ingest connected to %s:%d (session present: %s)", self.config.host, self.config.port, flags.session_present
        )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.last_error = f"broker refused the subscriptions: {failed}"
            log.error("%s (check the broker ACL for user %r)", self.last_error, self.config.username)
            return
        self._was_subscribed = True
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if reason.is_failure:
            self.last_error = f"disconnected from the broker: {reason}"
            log.warning("%s; reconnecting", self.last_error)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._received += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:  # quarantined as an invalid topic; paho keeps the raw bytes private
            topic = "<topic is not UTF-8>"
        self._inbox.put(
            Received(time.time(), topic, message.payload, self._connection, message.mid if message.qos else 0)
        )

    # --- writer thread ----------------------------------------------------------------------

    def _write_loop(self) -> None:
        db = connect(self.db_path)
        repo = Repository(db)
        rules = RuleEngine(repo)
        tracker = DeliveryTracker()
        done = False
        while not done:
            items, done = self._inbox.take(self.config.flush_interval_s)
            if not items:
                continue
            try:
                self._write(repo, rules, tracker, items)
            except Exception:  # a bug must cost one batch, never the worker
                log.exception(
                    "ingest writer failed on a batch of %d messages; they stay unacknowledged in the "
                    "broker, which delivers them again after the server reconnects",
                    len(items),
                )
                repo.forget_cached_ids()
                tracker.forget()
                with self._lock:
                    self._stats["unwritten_after_errors"] += len(items)
        db.conn.close()

    def _write(self, repo: Repository, rules: RuleEngine, tracker: DeliveryTracker, items: list[Received]) -> None:
        """Write one batch. A busy or full disk (OperationalError) is retried until it works; any
        other failure means some message in the batch cannot be stored, so the batch is split and
        written message by message: a message that fails alone is quarantined with the reason and
        acknowledged, and no message can hold back the others."""
        known = None if self.config.accept_unknown_devices else repo.known_devices()
        batch = self._parse(items, known)
        delay = 0.5
        while True:
            try:
                with transaction(repo.db):
                    events, acks = self._store(repo, rules, tracker, batch, items[-1].received_at)
                break
            except sqlite3.OperationalError as exc:
                repo.forget_cached_ids()
                tracker.forget()
                self._count_db_error(f"database write failed: {exc}; retrying {len(items)} messages in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # whatever the database or a bug refuses: isolate the message
                repo.forget_cached_ids()
                tracker.forget()
                if len(items) > 1:
                    log.warning("a batch of %d messages failed (%s); writing them one by one", len(items), exc)
                    for item in items:
                        self._write(repo, rules, tracker, [item])
                    return
                item = items[0]
                self._count_db_error(f"database refused the message on {item.topic!r}: {exc!r}")
                batch = _Batch()
                batch.counts["received"] = 1
                self._reject(
                    batch, item.received_at, item.topic, item.payload, f"database refused it: {exc!r}", "database"
                )
                with transaction(repo.db):
                    events, acks = self._store(repo, rules, tracker, batch, item.received_at)
                break
        with self._lock:
            self._stats.update(batch.counts)
            self._committed.extend((item.connection, item.mid) for item in items if item.mid)
        self._wake_network()
        self._publish(events)
        self._publish_acks(acks)

    def _count_db_error(self, message: str) -> None:
        self.last_error = message
        log.error("%s", message)
        with self._lock:
            self._stats["db_errors"] += 1

    def _store(
        self, repo: Repository, rules: RuleEngine, tracker: DeliveryTracker, batch: _Batch, received_at: float
    ) -> tuple[list[AnimalAlert], dict[tuple[str, str], int]]:
        reused = repo.reused_seqs(batch.windows)
        skipped = {id(w) for w, _ in reused}
        windows = [w for w in batch.windows if id(w) not in skipped]
        quarantine = batch.quarantine + [
            Quarantined(
                received_at,
                score_topic(w.device, w.box, self.config.prefix),
                w.to_json(),
                reason,
                w.device,
                w.epoch,
                w.seq,
            )
            for w, reason in reused
        ]
        for w, reason in reused:
            log.error("device %s: %s", w.device, reason)
            repo.record_seq_regression(w.device, reason, received_at)
        new = repo.store_windows(windows, received_at)
        batch.counts["stored"] = new.count
        batch.counts["duplicates"] = len(windows) - new.count
        batch.counts["reused_seq"] = len(reused)
        batch.counts["device_alerts"] = repo.store_device_alerts(batch.alerts, received_at)
        for t, status in batch.statuses:
            repo.store_status(status, t)
        for t, device, availability in batch.availability:
            repo.store_availability(device, availability, t)
        repo.store_quarantine(quarantine)
        handled: dict[tuple[str, str], list[int]] = {}
        for msg in [*windows, *batch.alerts]:
            handled.setdefault((msg.device, msg.epoch), []).append(msg.seq)
        for q in quarantine:
            if q.device is not None and q.epoch is not None and q.seq is not None:
                handled.setdefault((q.device, q.epoch), []).append(q.seq)
        for (device, epoch), seqs in handled.items():
            tracker.handled(repo, device, epoch, seqs, received_at)
        touched = set(handled)
        for device, epoch, first_seq in batch.first_seqs:
            if tracker.outbox_starts_at(repo, device, epoch, first_seq, received_at):
                touched.add((device, epoch))
        acks = tracker.commit(repo, touched, received_at)
        events = rules.evaluate(new, received_at)
        batch.counts["server_alerts"] = len(events)
        repo.add_counters(dict(batch.counts))
        return events, acks

    def _parse(self, items: list[Received], known: set[str] | None) -> _Batch:
        """Validate every message; `known` is the set of registered devices when only those are accepted."""
        batch = _Batch()
        batch.counts["received"] = len(items)
        prefix = self.config.prefix
        for item in items:
            received_at, topic, payload = item.received_at, item.topic, item.payload
            try:
                ref = parse_topic(topic, prefix)
                if known is not None and ref.device not in known:
                    raise MessageError(
                        f"device {ref.device!r} is not registered; provision it with "
                        "`mgs-server provision-device` or set [ingest] accept_unknown_devices"
                    )
                if ref.kind == "score":
                    window = ScoreWindow.from_json(payload)
                    _same_source(ref.device, ref.box, window.device, window.box)
                    batch.windows.append(window)
                elif ref.kind == "alert":
                    alert = BoxAlert.from_json(payload)
                    _same_source(ref.device, ref.box, alert.device, alert.box)
                    batch.alerts.append(alert)
                elif ref.kind == "status":
                    status = DeviceStatus.from_json(payload)
                    _same_source(ref.device, None, status.device, None)
                    batch.statuses.append((received_at, status))
                    if status.first_seq:
                        batch.first_seqs.append((status.device, status.epoch, status.first_seq))
                elif ref.kind == "availability":
                    batch.availability.append((received_at, ref.device, parse_availability(payload)))
                else:
                    parse_state(payload)
                    batch.counts["states"] += 1
            except MessageError as exc:
                self._reject(batch, received_at, topic, payload, str(exc), _kind(topic, prefix))
            except Exception as exc:  # a bug must cost one message, never the worker
                log.exception("unexpected error on %s", topic)
                self._reject(batch, received_at, topic, payload, f"internal error: {exc!r}", "internal")
        return batch

    def _reject(self, batch: _Batch, received_at: float, topic: str, payload: bytes, reason: str, kind: str) -> None:
        log.warning("rejected message on %r (%d bytes): %s", topic[:200], len(payload), reason)
        batch.quarantine.append(
            Quarantined(received_at, topic, payload, reason, *_claimed_seq(topic, payload, self.config.prefix))
        )
        batch.counts["rejected"] += 1
        batch.counts[f"rejected.{kind}"] += 1

    def _publish_acks(self, acks: dict[tuple[str, str], int]) -> None:
        """Tell each device how far its outbox is stored (retained: a device that reconnects learns
        it at once). Sent after the commit, so an ack never runs ahead of the database."""
        if not acks or self._client is None:
            return
        now = utc_iso(time.time())
        for (device, epoch), seq in acks.items():
            ack = StoredAck(device=device, epoch=epoch, seq=seq, time=now)
            self._client.publish(stored_topic(device, self.config.prefix), ack.to_json(), qos=1, retain=True)
        with self._lock:
            self._stats["stored_acks_published"] += len(acks)

    def _publish(self, events: list[AnimalAlert]) -> None:
        if not events or not self.config.publish_alerts or self._client is None:
            return
        for event in events:
            self._client.publish(animal_alert_topic(event.animal_id, self.config.prefix), event.to_json(), qos=1)
        with self._lock:
            self._stats["alerts_published"] += len(events)


def _same_source(topic_device: str, topic_box: int | None, device: str, box: int | None) -> None:
    """A payload must name the device (and box) of its topic: the broker ACL authenticates topics."""
    if device != topic_device or box != topic_box:
        where = topic_device if topic_box is None else f"{topic_device}/box/{topic_box}"
        what = device if box is None else f"{device}/box/{box}"
        raise MessageError(f"payload is from {what} but was published on {where}'s topic")


def _claimed_seq(topic: str, payload: bytes, prefix: str) -> tuple[str | None, str | None, int | None]:
    """(device, epoch, seq) that a refused score or alert message claims, or Nones when it names
    none readable: the device's outbox counts the message as handled only when the server knows
    which one it was. The device is the topic's (the broker ACL authenticates topics)."""
    try:
        ref = parse_topic(topic, prefix)
        obj = json.loads(payload) if ref.kind in ("score", "alert") and len(payload) <= MAX_PAYLOAD_BYTES else None
    except (MessageError, ValueError):
        return None, None, None
    if not isinstance(obj, dict):
        return None, None, None
    seq, epoch = obj.get("seq"), obj.get("epoch", "")
    if (
        isinstance(seq, bool)
        or not isinstance(seq, int)
        or not 0 <= seq <= MAX_INT
        or not isinstance(epoch, str)
        or len(epoch) > 32
    ):
        return None, None, None
    return ref.device, epoch, seq


def _kind(topic: str, prefix: str) -> str:
    """A short label for the rejected-message counters: score, alert, status, ... or topic."""
    try:
        return parse_topic(topic, prefix).kind
    except MessageError:
        return "topic"
