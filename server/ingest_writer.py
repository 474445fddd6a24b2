"""The writing side of the ingest: validate each batch, store it in one transaction, then report.

One writer thread takes batches from the inbox, validates every message with `mgs_core.messages`
and writes the batch in a single SQLite transaction (windows, rollups, alerts, statuses,
quarantine, rule evaluation, counters). The unique key (device, epoch, seq) makes a redelivery a
no-op. Only after the commit does it tell its `Outlet` which messages may be acknowledged and what
to publish: the server's alerts and, per device and outbox epoch touched, how far that outbox is
stored (`server.delivery`), so an acknowledgement never runs ahead of the database and the broker
is never the only copy of a window.

Nothing a device sends can stop the writer: a message that fails validation is counted, logged
with its topic, and kept (truncated) in the `quarantine` table for a person to look at; a batch
the database refuses is written message by message, so only the message that fails alone is
quarantined.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mgs_core.errors import MessageError
from mgs_core.messages import (
    MAX_INT,
    MAX_PAYLOAD_BYTES,
    AnimalAlert,
    BoxAlert,
    DeviceStatus,
    ModelEvent,
    ScoreWindow,
    StoredAck,
    animal_alert_topic,
    parse_availability,
    parse_state,
    parse_topic,
    score_topic,
    stored_topic,
    utc_iso,
)
from server.db import connect
from server.delivery import DeliveryTracker
from server.ingest_transport import Inbox, IngestHealth, Received
from server.repository import Quarantined
from server.rollout import store_model_event
from server.rules import RuleEngine
from server.store import IngestStore

log = logging.getLogger(__name__)


class Outlet(Protocol):
    """Where the writer reports after a commit (the MQTT transport; a test may stand in)."""

    def committed(self, items: Sequence[Received]) -> None:
        """These messages are stored or quarantined: acknowledge them."""

    def publish(self, topic: str, payload: str, retain: bool = False) -> bool:
        """Send a QoS 1 message; False when nothing can be sent now."""


@dataclass(frozen=True, slots=True)
class StatusReceipt:
    received_at: float
    status: DeviceStatus


@dataclass(frozen=True, slots=True)
class AvailabilityChange:
    received_at: float
    device: str
    availability: str


@dataclass(frozen=True, slots=True)
class OutboxStart:
    """Where a device's outbox of one epoch now starts (from its status): rows below it are gone."""

    device: str
    epoch: str
    first_seq: int


@dataclass
class ParsedBatch:
    """The valid contents of one batch, grouped by what gets written where, plus what was refused."""

    windows: list[ScoreWindow] = field(default_factory=list)
    alerts: list[BoxAlert] = field(default_factory=list)
    statuses: list[StatusReceipt] = field(default_factory=list)
    availability: list[AvailabilityChange] = field(default_factory=list)
    quarantine: list[Quarantined] = field(default_factory=list)
    outbox_starts: list[OutboxStart] = field(default_factory=list)
    model_events: list[ModelEvent] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class StoredBatch:
    """What one committed transaction leaves to send: the server's alerts and the devices' stored acks."""

    events: list[AnimalAlert]
    acks: dict[tuple[str, str], int]  # (device, epoch) -> seq stored up to


class IngestWriter:
    """Writes what the transport received into the database at `db_path`, batch by batch."""

    def __init__(
        self,
        db_path: str | os.PathLike[str],
        prefix: str,
        outlet: Outlet,
        health: IngestHealth,
        accept_unknown_devices: bool = True,
        publish_alerts: bool = True,
    ) -> None:
        self.db_path = Path(db_path)
        self.prefix = prefix
        self.outlet = outlet
        self.health = health
        self.accept_unknown_devices = accept_unknown_devices
        self.publish_alerts = publish_alerts

    def run(self, inbox: Inbox, flush_interval_s: float) -> None:
        """Write batches from `inbox` until it is closed and empty (the writer thread's body)."""
        db = connect(self.db_path)
        store = IngestStore(db)
        rules = RuleEngine(store.repository)
        tracker = DeliveryTracker()
        done = False
        while not done:
            items, done = inbox.take(flush_interval_s)
            if not items:
                continue
            try:
                self.write(store, rules, tracker, items)
            except Exception:  # a bug must cost one batch, never the worker
                log.exception(
                    "ingest writer failed on a batch of %d messages; they stay unacknowledged in the "
                    "broker, which delivers them again after the server reconnects",
                    len(items),
                )
                tracker.forget()
                self.health.count({"unwritten_after_errors": len(items)})
        db.conn.close()

    def write(self, store: IngestStore, rules: RuleEngine, tracker: DeliveryTracker, items: list[Received]) -> None:
        """Write one batch. A busy or full disk (OperationalError) is retried until it works; any
        other failure means some message in the batch cannot be stored, so the batch is split and
        written message by message: a message that fails alone is quarantined with the reason and
        acknowledged, and no message can hold back the others."""
        known = None if self.accept_unknown_devices else store.repository.known_devices()
        batch = self.parse(items, known)
        delay = 0.5
        while True:
            try:
                with store.write():
                    stored = self._store(store, rules, tracker, batch, items[-1].received_at)
                break
            except sqlite3.OperationalError as exc:
                tracker.forget()
                self._db_error(f"database write failed: {exc}; retrying {len(items)} messages in {delay:.1f} s")
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception as exc:  # whatever the database or a bug refuses: isolate the message
                tracker.forget()
                if len(items) > 1:
                    log.warning("a batch of %d messages failed (%s); writing them one by one", len(items), exc)
                    for item in items:
                        self.write(store, rules, tracker, [item])
                    return
                item = items[0]
                self._db_error(f"database refused the message on {item.topic!r}: {exc!r}")
                batch = ParsedBatch()
                batch.counts["received"] = 1
                self._reject(batch, item, f"database refused it: {exc!r}", "database")
                with store.write():
                    stored = self._store(store, rules, tracker, batch, item.received_at)
                break
        self.health.count(batch.counts)
        self.outlet.committed(items)
        self._publish_alerts(stored.events)
        self._publish_acks(stored.acks)

    def parse(self, items: list[Received], known: set[str] | None) -> ParsedBatch:
        """Validate every message; `known` is the set of registered devices when only those are accepted."""
        batch = ParsedBatch()
        batch.counts["received"] = len(items)
        for item in items:
            try:
                ref = parse_topic(item.topic, self.prefix)
                if known is not None and ref.device not in known:
                    raise MessageError(
                        f"device {ref.device!r} is not registered; provision it with "
                        "`mgs-server provision-device` or set [ingest] accept_unknown_devices"
                    )
                if ref.kind == "score":
                    window = ScoreWindow.from_json(item.payload)
                    _same_source(ref.device, ref.box, window.device, window.box)
                    batch.windows.append(window)
                elif ref.kind == "alert":
                    alert = BoxAlert.from_json(item.payload)
                    _same_source(ref.device, ref.box, alert.device, alert.box)
                    batch.alerts.append(alert)
                elif ref.kind == "status":
                    status = DeviceStatus.from_json(item.payload)
                    _same_source(ref.device, None, status.device, None)
                    batch.statuses.append(StatusReceipt(item.received_at, status))
                    if status.first_seq:
                        batch.outbox_starts.append(OutboxStart(status.device, status.epoch, status.first_seq))
                elif ref.kind == "model_event":
                    event = ModelEvent.from_json(item.payload)
                    _same_source(ref.device, None, event.device, None)
                    batch.model_events.append(event)
                elif ref.kind == "availability":
                    batch.availability.append(
                        AvailabilityChange(item.received_at, ref.device, parse_availability(item.payload))
                    )
                else:
                    parse_state(item.payload)
                    batch.counts["states"] += 1
            except MessageError as exc:
                self._reject(batch, item, str(exc), _kind(item.topic, self.prefix))
            except Exception as exc:  # a bug must cost one message, never the worker
                log.exception("unexpected error on %s", item.topic)
                self._reject(batch, item, f"internal error: {exc!r}", "internal")
        return batch

    def _db_error(self, message: str) -> None:
        self.health.error(message)
        log.error("%s", message)
        self.health.count({"db_errors": 1})

    def _store(
        self, store: IngestStore, rules: RuleEngine, tracker: DeliveryTracker, batch: ParsedBatch, received_at: float
    ) -> StoredBatch:
        reused = store.reused_seqs(batch.windows)
        skipped = {id(w) for w, _ in reused}
        windows = [w for w in batch.windows if id(w) not in skipped]
        quarantine = batch.quarantine + [
            Quarantined(
                received_at, score_topic(w.device, w.box, self.prefix), w.to_json(), reason, w.device, w.epoch, w.seq
            )
            for w, reason in reused
        ]
        for w, reason in reused:
            log.error("device %s: %s", w.device, reason)
            store.record_seq_regression(w.device, reason, received_at)
        new = store.store_windows(windows, received_at)
        batch.counts["stored"] = new.count
        batch.counts["duplicates"] = len(windows) - new.count
        batch.counts["reused_seq"] = len(reused)
        batch.counts["device_alerts"] = store.store_device_alerts(batch.alerts, received_at)
        for receipt in batch.statuses:
            store.store_status(receipt.status, receipt.received_at)
        for change in batch.availability:
            store.store_availability(change.device, change.availability, change.received_at)
        if batch.model_events:
            batch.counts["model_events"] = sum(
                store_model_event(store.db.conn, e, received_at) for e in batch.model_events
            )
        store.store_quarantine(quarantine)
        handled: dict[tuple[str, str], list[int]] = {}
        for msg in [*windows, *batch.alerts]:
            handled.setdefault((msg.device, msg.epoch), []).append(msg.seq)
        for q in quarantine:
            if q.device is not None and q.epoch is not None and q.seq is not None:
                handled.setdefault((q.device, q.epoch), []).append(q.seq)
        for (device, epoch), seqs in handled.items():
            tracker.handled(store, device, epoch, seqs, received_at)
        touched = set(handled)
        for start in batch.outbox_starts:
            if tracker.outbox_starts_at(store, start.device, start.epoch, start.first_seq, received_at):
                touched.add((start.device, start.epoch))
        acks = tracker.commit(store, touched, received_at)
        events = rules.evaluate(new, received_at)
        batch.counts["server_alerts"] = len(events)
        store.add_counters(dict(batch.counts))
        return StoredBatch(events, acks)

    def _reject(self, batch: ParsedBatch, item: Received, reason: str, kind: str) -> None:
        log.warning("rejected message on %r (%d bytes): %s", item.topic[:200], len(item.payload), reason)
        batch.quarantine.append(
            Quarantined(
                item.received_at, item.topic, item.payload, reason, *_claimed_seq(item.topic, item.payload, self.prefix)
            )
        )
        batch.counts["rejected"] += 1
        batch.counts[f"rejected.{kind}"] += 1

    def _publish_acks(self, acks: dict[tuple[str, str], int]) -> None:
        """Tell each device how far its outbox is stored (retained: a device that reconnects learns
        it at once). Sent after the commit, so an ack never runs ahead of the database."""
        if not acks:
            return
        now = utc_iso(time.time())
        sent = sum(
            self.outlet.publish(
                stored_topic(device, self.prefix),
                StoredAck(device=device, epoch=epoch, seq=seq, time=now).to_json(),
                retain=True,
            )
            for (device, epoch), seq in acks.items()
        )
        self.health.count({"stored_acks_published": sent})

    def _publish_alerts(self, events: list[AnimalAlert]) -> None:
        if not events or not self.publish_alerts:
            return
        sent = sum(self.outlet.publish(animal_alert_topic(e.animal_id, self.prefix), e.to_json()) for e in events)
        self.health.count({"alerts_published": sent})


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
