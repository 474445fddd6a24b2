"""The MQTT side of the ingest: the paho connection, the subscriptions, the hand-over to the writer
and the PUBACKs, through paho's public API only.

The session is persistent (fixed client id, MQTT 5 with clean_start=False and a session that never
expires, or a 3.1.1 persistent session, QoS 1), so messages published while the server is down
wait in the broker. paho's `manual_ack` holds back every PUBACK until the writer reports the
message committed (`committed()`); this thread, which owns the socket, then sends them in bulk.
Packet ids belong to one connection, so acknowledgements for an earlier connection are dropped and
the broker's redelivery is stored as a duplicate (no-op) and acknowledged then.
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mgs_core.broker import BrokerConfig, make_client
from mgs_core.messages import subscriptions

log = logging.getLogger(__name__)

# MQTT 5 session expiry "never": the broker's `persistent_client_expiration` still applies.
_SESSION_NEVER_EXPIRES = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class Received:
    """One message as the network thread hands it to the writer."""

    received_at: float
    topic: str
    payload: bytes
    connection: int  # numbers the connections: a packet id is only valid on its own
    mid: int  # packet id to acknowledge after the commit; 0 = QoS 0, nothing to acknowledge


class IngestHealth:
    """Counters and the last problem, shared by the network thread and the writer for `stats()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.last_error = ""

    def count(self, counts: Mapping[str, int]) -> None:
        with self._lock:
            self._counts.update(counts)

    def error(self, message: str) -> None:
        """A problem the dashboard shows until the next (re)connect clears it."""
        self.last_error = message

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class Inbox:
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


class IngestTransport:
    """One persistent MQTT session that feeds an `Inbox` and acknowledges what the writer committed.

    `receive_maximum` is MQTT 5's Receive Maximum: how many messages the broker may have
    unacknowledged at once whatever its `max_inflight_messages` (the inbox's capacity, so the broker
    never waits for acknowledgements the writer cannot give yet).
    """

    def __init__(self, config: BrokerConfig, health: IngestHealth, receive_maximum: int) -> None:
        self.config = config
        self.inbox = Inbox(1, 1)
        self.health = health
        self.receive_maximum = receive_maximum
        self.connected = threading.Event()  # set once connected *and* subscribed
        self._client: mqtt.Client | None = None
        self._network: threading.Thread | None = None
        self._stop_reading = threading.Event()  # take no more messages, acknowledge what is stored
        self._stopping = threading.Event()  # then disconnect
        self._connection = 0
        self._committed: list[Received] = []  # stored, not yet acknowledged
        self._lock = threading.Lock()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._received = 0  # messages paho handed over; tells the network thread a read made progress
        self._was_subscribed = False

    # --- what the worker and the writer call --------------------------------------------------

    def start(self, inbox: Inbox) -> None:
        """Connect in a network thread of its own and hand every message to `inbox`."""
        self.inbox = inbox
        self._stop_reading.clear()
        self._stopping.clear()
        self._client = self._new_client()
        self._network = threading.Thread(
            target=self._network_loop, args=(self._client,), name="mgs-ingest-mqtt", daemon=True
        )
        self._network.start()

    def stop_reading(self) -> None:
        """Take no more messages; keep acknowledging what the writer commits."""
        self._stop_reading.set()
        self._wake_network()

    def close(self, timeout: float) -> None:
        """Send the last acknowledgements and disconnect."""
        self._stop_reading.set()
        self._stopping.set()
        self._wake_network()
        if self._network is not None:
            self._network.join(timeout)
        self._client = None
        self._network = None
        self.connected.clear()

    @property
    def connection_number(self) -> int:
        """Counts the connections made: publishers that must tell a new session everything watch it."""
        return self._connection

    def committed(self, items: Sequence[Received]) -> None:
        """These messages are stored (or quarantined): acknowledge them to the broker."""
        with self._lock:
            self._committed.extend(item for item in items if item.mid)
        self._wake_network()

    def publish(self, topic: str, payload: str, retain: bool = False) -> bool:
        """Queue a QoS 1 publish (the network thread writes it); False when there is no connection object."""
        client = self._client
        if client is None:
            return False
        client.publish(topic, payload, qos=1, retain=retain)
        return True

    # --- network thread -------------------------------------------------------------------------

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
            properties.ReceiveMaximum = min(self.receive_maximum, 65535)
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
                self.health.error(f"cannot reach the MQTT broker at {self.config.host}:{self.config.port}: {exc}")
                log.warning("%s; retrying in %.0f s", self.health.last_error, delay)
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
        mids = [item.mid for item in committed if item.connection == self._connection]
        for mid in mids:
            client.ack(mid, 1)
        self.health.count({"acknowledged": len(mids)})
        if len(mids) < len(committed):
            log.info(
                "%d stored messages arrived on an earlier connection; the broker delivers them again "
                "and they are counted as duplicates",
                len(committed) - len(mids),
            )

    def _serve(self, client: mqtt.Client) -> None:
        """Read, acknowledge what the writer committed, and keep alive until the connection drops or
        `stop_reading()` is called (after that, only acknowledge until `close()`)."""
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
                    self.inbox.request_flush()
            if client.want_write() and client.loop_write() not in (ok, mqtt.MQTT_ERR_AGAIN):
                return
            if client.loop_misc() != ok:
                return

    # --- paho callbacks (network thread: keep them cheap) -------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self.health.error(f"broker refused the connection: {reason}")
            log.error("%s (check [ingest] username/password and the broker ACL)", self.health.last_error)
            return
        client.subscribe([(topic, 1) for topic in subscriptions(self.config.prefix)])
        self.health.error("")
        log.info(
            "ingest connected to %s:%d (session present: %s)", self.config.host, self.config.port, flags.session_present
        )

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.health.error(f"broker refused the subscriptions: {failed}")
            log.error("%s (check the broker ACL for user %r)", self.health.last_error, self.config.username)
            return
        self._was_subscribed = True
        self.connected.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected.clear()
        if reason.is_failure:
            self.health.error(f"disconnected from the broker: {reason}")
            log.warning("%s; reconnecting", self.health.last_error)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._received += 1
        try:
            topic = message.topic
        except UnicodeDecodeError:  # quarantined as an invalid topic; paho keeps the raw bytes private
            topic = "<topic is not UTF-8>"
        self.inbox.put(
            Received(time.time(), topic, message.payload, self._connection, message.mid if message.qos else 0)
        )
