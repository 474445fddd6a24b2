"""MQTT publisher: drains the outbox to the broker and keeps the retained topics current.

The contract (mgs_core.messages): availability with a last will `offline` and `online`
published in on_connect; a retained status every few seconds; per box a QoS 1 score and alert
stream from the outbox and a retained plain-number state. paho's network thread reconnects with
backoff by itself; this module only decides what to send when.

MQTT 5 so that a PUBACK can say "not authorized": a message the broker's ACL refuses stays in the
outbox and is reported, instead of being acknowledged and silently dropped as under MQTT 3.1.1.

Delivery is end to end: a message leaves the outbox only when the server says it is stored. The
server publishes, retained on `<prefix>/<device>/stored`, the seq up to which this outbox epoch is
stored (`StoredAck`); the device subscribes to it in on_connect and deletes its rows up to it. A
PUBACK only frees a slot for the next message (paho marks the message info as published;
on_publish only wakes the pump, because paho calls it with its own lock held and taking ours there
would deadlock against a concurrent publish). Rows that the broker acknowledged but the server has
not stored (a broker that crashed with its queue, a server that was not subscribed yet) are sent
again from the outbox on every reconnect, and whenever the ack does not advance for
`resend_after_s` (doubling each time it still does not, so a long server outage does not flood the
broker); the server drops the duplicates. A limited number of messages is in flight at once, so a
long backlog drains quickly after an outage without flooding the broker or starving the live
windows of the other devices.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, ClassVar

import paho.mqtt.client as mqtt

from device.outbox import Outbox
from mgs_core.broker import BrokerConfig, TlsConfig, make_client
from mgs_core.errors import MessageError
from mgs_core.messages import (
    AVAILABILITY_OFFLINE,
    AVAILABILITY_ONLINE,
    DeviceStatus,
    StoredAck,
    availability_topic,
    format_state,
    state_topic,
    status_topic,
    stored_topic,
)
from mgs_core.tomlconfig import Range

log = logging.getLogger(__name__)

PUMP_INTERVAL_S = 0.05
# Re-publishing unconfirmed rows backs off up to this interval while the server stays silent.
RESEND_MAX_S = 3600.0


@dataclass(frozen=True)
class MqttTlsConfig(TlsConfig):
    SECTION: ClassVar[str] = "mqtt.tls"


@dataclass(frozen=True)
class MqttConfig(BrokerConfig):
    """The device's `[mqtt]` section: the broker connection plus how the outbox drains."""

    SECTION: ClassVar[str] = "mqtt"

    client_id: str = field(
        default="",
        metadata={
            "doc": "MQTT client id; empty = mgs-device-<name> (the shipped broker config replaces it with the login)"
        },
    )
    max_inflight: Annotated[int, Range(1, 1000)] = field(
        default=20, metadata={"doc": "messages sent but not yet acknowledged at once (drain speed after an outage)"}
    )
    reconnect_max_s: Annotated[int, Range(1, 3600, unit="seconds")] = field(
        default=30, metadata={"doc": "longest wait between reconnect attempts"}
    )
    tls: MqttTlsConfig = field(default_factory=MqttTlsConfig)
    resend_after_s: Annotated[float, Range(1, 3600, unit="seconds")] = field(
        default=60.0,
        metadata={
            "doc": "send unconfirmed outbox rows again when the server's stored ack has not advanced for this long (doubles while it stays silent, up to an hour)"
        },
    )


class Publisher:
    """Owns the paho client and a pump thread that moves outbox rows, states and status to it."""

    def __init__(
        self,
        device: str,
        config: MqttConfig,
        outbox: Outbox,
        status: Callable[[], DeviceStatus],
        status_interval_s: float = 10.0,
    ) -> None:
        self.device = device
        self.config = config
        self.outbox = outbox
        self.status = status
        self.status_interval_s = status_interval_s
        self.connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._inflight: list[tuple[mqtt.MQTTMessageInfo, int]] = []  # (paho message info, seq)
        self._cursor = outbox.stored_through()  # highest seq handed to paho
        self._resend_at = time.monotonic() + config.resend_after_s
        self._resend_wait = config.resend_after_s
        self._states: dict[int, float | None] = {}
        self._states_sent: dict[int, float | None] = {}
        self._status_due = 0.0
        self.last_error = ""
        self.delivered = 0  # rows the server confirmed stored
        self.refused = 0
        self._refused: dict[int, str] = {}  # mid -> reason, for PUBACKs that said no (MQTT 5)
        self._thread: threading.Thread | None = None
        self._tls_context = config.tls_context()
        # Commands for this device (topic -> handler, called on paho's thread; subscribed at QoS 1 on
        # every connect, so retained ones arrive again) and what to do once connected.
        self.handlers: dict[str, Callable[[bytes], None]] = {}
        self.on_connected: list[Callable[[], None]] = []
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        c = self.config
        client = make_client(c, c.client_id or f"mgs-device-{self.device}", self._tls_context)
        client.will_set(availability_topic(self.device, c.prefix), AVAILABILITY_OFFLINE, qos=1, retain=True)
        client.reconnect_delay_set(1, c.reconnect_max_s)
        client.max_inflight_messages_set(c.max_inflight)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        return client

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        c = self.config
        log.info("connecting to MQTT broker %s:%d as %s", c.host, c.port, self.device)
        self.client.connect_async(c.host, c.port, c.keepalive)
        self.client.loop_start()
        self._thread = threading.Thread(target=self._pump, name="mqtt-pump", daemon=True)
        self._thread.start()

    def stop(self, drain_timeout_s: float = 3.0) -> None:
        """Give the outbox a moment to drain, say `offline`, and disconnect; undelivered rows stay on disk."""
        deadline = time.monotonic() + drain_timeout_s
        while self.connected.is_set() and self.outbox.stats().depth and time.monotonic() < deadline:
            self._wake.set()
            time.sleep(PUMP_INTERVAL_S)
        self._stopping.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.outbox.flush_acks()
        if self.connected.is_set():
            info = self.client.publish(
                availability_topic(self.device, self.config.prefix), AVAILABILITY_OFFLINE, qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                log.warning("could not publish 'offline' before disconnecting; the broker's last will says it instead")
        self.client.disconnect()
        self.client.loop_stop()
        self._collect_acks()
        self.outbox.flush_acks()

    def broker_has_all(self) -> bool:
        """Every row on disk has been handed to the broker and acknowledged by it (PUBACK)."""
        self._collect_acks()
        with self._lock:
            return not self._inflight and self._cursor >= self.outbox.stats().last_seq

    def notify(self) -> None:
        """New rows are in the outbox: send them now rather than at the next pump tick."""
        self._wake.set()

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 message outside the outbox (paho keeps it for the next connect)."""
        self.client.publish(topic, payload, qos=1, retain=True)

    def publish_state(self, box: int, score: float | None) -> None:
        """Latest plain-number score of a box (retained); only the newest value per box is kept."""
        with self._lock:
            self._states[box] = score
        self._wake.set()

    # --- paho callbacks (network thread) ------------------------------------------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"broker refused the connection: {reason_code}"
            log.error(
                "MQTT broker %s:%d refused the connection: %s (check [mqtt] username/password and the broker ACL)",
                self.config.host,
                self.config.port,
                reason_code,
            )
            return
        log.info("connected to MQTT broker %s:%d", self.config.host, self.config.port)
        self.last_error = ""
        client.publish(availability_topic(self.device, self.config.prefix), AVAILABILITY_ONLINE, qos=1, retain=True)
        client.subscribe(stored_topic(self.device, self.config.prefix), qos=1)
        for topic in self.handlers:
            client.subscribe(topic, qos=1)
        for hook in self.on_connected:
            hook()
        with self._lock:
            self._states_sent.clear()
            # Whatever the server has not confirmed goes out again: the broker may have lost it.
            self._inflight.clear()
            self._cursor = self.outbox.stored_through()
            self._resend_wait = self.config.resend_after_s
            self._resend_at = time.monotonic() + self._resend_wait
        self._status_due = 0.0
        self.connected.set()
        self._wake.set()

    def _on_connect_fail(self, client, userdata) -> None:
        """paho retries on its own but does not say why; find out, because 'certificate verify failed'
        or 'connection refused' tells the technician what to fix."""
        error = f"cannot connect to the MQTT broker {self.config.host}:{self.config.port}: {self._probe()}"
        if error != self.last_error:
            log.error("%s; retrying (check [mqtt] host/port, the network and [mqtt.tls])", error)
        self.last_error = error

    def _probe(self) -> str:
        try:
            with socket.create_connection((self.config.host, self.config.port), timeout=5) as sock:
                if self._tls_context is not None:
                    with self._tls_context.wrap_socket(sock, server_hostname=self.config.host):
                        pass
        except OSError as exc:
            return str(exc) or type(exc).__name__
        return "the connection failed during the MQTT handshake"

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stopping.is_set():
            self.last_error = f"disconnected from broker: {reason_code}"
            log.warning(
                "lost the MQTT broker (%s); scores are kept in the outbox and sent after reconnecting", reason_code
            )

    def _on_message(self, client, userdata, message) -> None:
        """The server's stored ack; one for another epoch (an earlier outbox of this device) deletes nothing."""
        handler = self.handlers.get(message.topic)
        if handler is not None:
            handler(bytes(message.payload))
            return
        try:
            ack = StoredAck.from_json(message.payload)
        except MessageError as exc:
            log.warning("ignoring a malformed stored ack on %s: %s", message.topic, exc)
            return
        if ack.device != self.device or ack.epoch != self.outbox.epoch:
            return
        before = self.outbox.stored_through()
        self.outbox.mark_stored(ack.seq)
        if ack.seq > before:
            with self._lock:
                self.delivered += ack.seq - before
                self._resend_wait = self.config.resend_after_s
                self._resend_at = time.monotonic() + self._resend_wait
            self._wake.set()

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        if reason_code.is_failure:
            with self._lock:
                self._refused[mid] = str(reason_code)
        self._wake.set()

    # --- pump thread --------------------------------------------------------------------------

    def _pump(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(PUMP_INTERVAL_S)
            self._wake.clear()
            try:
                self._tick()
            except Exception:
                log.exception("publisher pump failed; retrying")
                time.sleep(1.0)

    def _tick(self) -> None:
        self._collect_acks()
        self.outbox.flush_acks()
        self.outbox.retry_held()
        if not self.connected.is_set():
            return
        self._resend_if_unconfirmed()
        self._send_rows()
        self._send_states()
        now = time.monotonic()
        if now >= self._status_due:
            self._status_due = now + self.status_interval_s
            self.client.publish(
                status_topic(self.device, self.config.prefix), self.status().to_json(), qos=1, retain=True
            )

    def _send_rows(self) -> None:
        with self._lock:
            room = self.config.max_inflight - len(self._inflight)
            if self._cursor <= self.outbox.stored_through():  # nothing outstanding: the wait starts now
                self._resend_at = time.monotonic() + self._resend_wait
        if room <= 0:
            return
        for row in self.outbox.pending(self._cursor, room):
            info = self.client.publish(row.topic, row.payload, qos=1, retain=False)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                log.warning("publish of seq %d failed (%s); will retry", row.seq, mqtt.error_string(info.rc))
                return
            with self._lock:
                self._inflight.append((info, row.seq))
                self._cursor = row.seq

    def _collect_acks(self) -> None:
        """PUBACKs free in-flight slots; the rows stay in the outbox until the server has them."""
        with self._lock:
            waiting, refused = [], []
            for info, seq in self._inflight:
                if not info.is_published():
                    waiting.append((info, seq))
                elif info.mid in self._refused:
                    refused.append((seq, self._refused.pop(info.mid)))
            self._inflight = waiting
            self._refused.clear()  # refusals of status/state messages: reported by the broker log
            self.refused += len(refused)
        for seq, reason in refused:
            self.last_error = (
                f"broker refused message seq {seq} ({reason}); it stays in the outbox. The device name "
                "must match its MQTT login and the broker ACL"
            )
            log.error("%s", self.last_error)

    def _resend_if_unconfirmed(self) -> None:
        """Everything handed to the broker but still not confirmed stored after `resend_after_s`
        goes out again, from the oldest row; the wait doubles while the server stays silent."""
        with self._lock:
            now = time.monotonic()
            stored = self.outbox.stored_through()
            if now < self._resend_at or self._cursor <= stored:
                return
            log.warning(
                "the server has not confirmed seq %d-%d for %.0f s; sending them again from the outbox",
                stored + 1,
                self._cursor,
                self._resend_wait,
            )
            self._inflight.clear()
            self._cursor = stored
            self._resend_wait = min(self._resend_wait * 2, RESEND_MAX_S)
            self._resend_at = now + self._resend_wait

    def _send_states(self) -> None:
        with self._lock:
            changed = {b: s for b, s in self._states.items() if b not in self._states_sent or self._states_sent[b] != s}
            self._states_sent.update(changed)
        for box, score in changed.items():
            self.client.publish(
                state_topic(self.device, box, self.config.prefix), format_state(score), qos=1, retain=True
            )
