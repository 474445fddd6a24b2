"""Publisher + outbox against a real Mosquitto: payloads, retained topics, outage, exactly-once by seq."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from device.aggregate import BoxWindow
from device.outbox import Outbox, Pending
from device.publisher import MqttConfig, Publisher
from mgs_core.messages import (
    DeviceStatus,
    ScoreWindow,
    StoredAck,
    availability_topic,
    parse_state,
    score_topic,
    state_topic,
    status_topic,
    stored_topic,
    subscriptions,
    utc_iso,
)
from tests.conftest import Broker, wait_for
from tests.ingest_support import running_worker

SHA = "ab" * 32
DEVICE = "rack-7"


class Collector:
    """A real subscriber to the whole contract at QoS 1, recording every message by topic.

    With `client_id` it keeps a persistent session, so a broker with persistence queues what
    arrives while the collector is away (e.g. across a broker restart).
    """

    def __init__(self, host: str, port: int, prefix: str = "mgs", client_id: str = "") -> None:
        self.messages: dict[str, list[bytes]] = defaultdict(list)
        self._lock = threading.Lock()
        self.prefix = prefix
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not client_id, protocol=mqtt.MQTTv311
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(host, port, 30)
        self.client.loop_start()
        wait_for(self.subscribed.is_set, 10, what="the test subscriber to subscribe")

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        client.subscribe([(t, 1) for t in subscriptions(self.prefix)])

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages[msg.topic].append(bytes(msg.payload))

    def payloads(self, suffix: str) -> list[bytes]:
        with self._lock:
            return [p for t, ps in list(self.messages.items()) if t.endswith(suffix) for p in ps]

    def last(self, topic: str) -> bytes | None:
        with self._lock:
            got = self.messages.get(topic)
            return got[-1] if got else None

    def scores(self) -> list[ScoreWindow]:
        return [ScoreWindow.from_json(p) for p in self.payloads("/score")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def window(box: int, t: float, score: float | None = 3.0) -> BoxWindow:
    eyes = 0 if score is None else 2
    return BoxWindow(box, t, t + 1.0, 10, eyes, score, score, score, 0.0 if score is None else 1.0)


def enqueue_windows(
    outbox: Outbox, t: float, boxes=range(4), score: float | None = 3.0, device: str = DEVICE
) -> list[int]:
    items = [
        Pending(
            score_topic(device, b),
            lambda seq, epoch, w=window(b, t, score): replace(w.to_message(device, seq, SHA), epoch=epoch).to_json(),
        )
        for b in boxes
    ]
    return outbox.enqueue(items)


def status_of(outbox: Outbox, device: str = DEVICE):
    def status() -> DeviceStatus:
        stats = outbox.stats()
        return DeviceStatus(
            device=device,
            time=utc_iso(time.time()),
            fps=10.0,
            target_fps=10.0,
            backend="local",
            camera="ok",
            queue_depth=stats.depth,
            uptime_s=1.0,
            version="test",
            epoch=stats.epoch,
            first_seq=stats.first_seq,
        )

    return status


def make_publisher(broker: Broker, outbox: Outbox, **mqtt_kwargs) -> Publisher:
    config = MqttConfig(host=broker.host, port=broker.port, reconnect_max_s=2, **mqtt_kwargs)
    return Publisher(DEVICE, config, outbox, status_of(outbox), status_interval_s=0.5)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_scores_status_state_and_availability_arrive_as_the_contract_says(
    broker: Broker, tmp_path: Path, protocol: str
) -> None:
    sub = Collector(broker.host, broker.port)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = make_publisher(broker, outbox, protocol=protocol, resend_after_s=1)
    pub.start()
    try:
        wait_for(pub.connected.is_set, 10, what="publisher to connect")
        seqs = enqueue_windows(outbox, 1_700_000_000.0) + enqueue_windows(outbox, 1_700_000_001.0, score=None)
        pub.publish_state(0, 3.0)
        pub.publish_state(1, None)
        pub.notify()
        wait_for(lambda: len(sub.payloads("/score")) >= 8, 10, what="8 score windows")
        got = sub.scores()
        assert sorted({w.seq for w in got}) == seqs == list(range(1, 9))
        assert all(w.epoch == outbox.epoch for w in got)
        assert {w.box for w in got} == {0, 1, 2, 3}
        assert all(w.device == DEVICE and w.model_sha256 == SHA for w in got)
        no_face = [w for w in got if w.window_start == utc_iso(1_700_000_001.0)]
        assert len(no_face) == 4 and all(w.score is None and not w.face_visible for w in no_face)
        assert sub.last(availability_topic(DEVICE)) == b"online"
        wait_for(lambda: sub.last(status_topic(DEVICE)), 5, what="a status message")
        assert DeviceStatus.from_json(sub.last(status_topic(DEVICE))).device == DEVICE
        wait_for(lambda: sub.last(state_topic(DEVICE, 1)) is not None, 5, what="state of box 1")
        assert parse_state(sub.last(state_topic(DEVICE, 0))) == 3.0
        assert parse_state(sub.last(state_topic(DEVICE, 1))) is None
        assert outbox.stats().depth == 8, "a PUBACK alone deletes nothing: only the server's stored ack does"
        # The server starts after the broker took the windows: they reach it when the device sends them again.
        with running_worker(broker, tmp_path / "server.db"):
            wait_for(lambda: outbox.stats().depth == 0, 10, what="outbox to be empty after the server stored it")
        assert pub.delivered == 8
    finally:
        pub.stop()
        outbox.close()
    wait_for(lambda: sub.last(availability_topic(DEVICE)) == b"offline", 5, what="'offline' on clean stop")
    sub.close()


def test_retained_topics_reach_a_late_subscriber(broker: Broker, tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = make_publisher(broker, outbox)
    pub.start()
    try:
        wait_for(pub.connected.is_set, 10, what="publisher to connect")
        pub.publish_state(2, 6.5)
        wait_for(lambda: not pub._states or pub._states_sent.get(2) == 6.5, 5, what="state handed to the client")
        sub = Collector(broker.host, broker.port)
        wait_for(lambda: sub.last(state_topic(DEVICE, 2)) and sub.last(status_topic(DEVICE)), 5, what="retained topics")
        assert parse_state(sub.last(state_topic(DEVICE, 2))) == 6.5
        assert sub.last(availability_topic(DEVICE)) == b"online"
        sub.close()
    finally:
        pub.stop()
        outbox.close()


def test_nothing_is_sent_before_the_broker_exists_and_everything_after(tmp_path: Path) -> None:
    broker = Broker(tmp_path)  # not started: the device boots before the broker
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = make_publisher(broker, outbox)
    pub.start()
    try:
        enqueue_windows(outbox, 1_700_000_000.0)
        assert not pub.connected.is_set()
        broker.start()
        sub = Collector(broker.host, broker.port)
        wait_for(lambda: len(sub.payloads("/score")) >= 4, 20, what="the queued windows after the broker appears")
        assert sorted({w.seq for w in sub.scores()}) == [1, 2, 3, 4]
        sub.close()
    finally:
        pub.stop()
        outbox.close()
        broker.stop()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_broker_outage_of_30_s_loses_nothing_and_duplicates_nothing_after_dedup(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    broker = Broker(tmp_path, extra_config=f"persistence true\npersistence_location {tmp_path / 'db'}/\nuser root\n")
    broker.start()
    sub = Collector(broker.host, broker.port, client_id="outage-test-subscriber")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = make_publisher(broker, outbox)
    pub.start()
    stop = threading.Event()
    produced: list[int] = []

    def produce() -> None:
        t = 1_700_000_000.0
        while not stop.is_set():
            produced.extend(enqueue_windows(outbox, t))
            pub.notify()
            t += 1.0
            stop.wait(0.1)

    producer = threading.Thread(target=produce)
    server = running_worker(broker, tmp_path / "server.db")  # confirms what is stored; the device deletes only that
    server.__enter__()
    producer.start()
    try:
        wait_for(lambda: len(sub.payloads("/score")) >= 20, 10, what="windows before the outage")
        broker.stop()
        wait_for(lambda: not pub.connected.is_set(), 10, what="the publisher to notice the outage")
        depth_before = outbox.stats().depth
        wait_for(lambda: outbox.stats().depth >= depth_before + 200, 60, what="windows queueing during the outage")
        outage_start = time.monotonic()
        wait_for(lambda: time.monotonic() - outage_start >= 30 - 3, 40, interval=0.5, what="30 s of outage")
        assert outbox.stats().depth > 200  # held on disk, not lost
        broker.start()
        wait_for(pub.connected.is_set, 30, what="the publisher to reconnect")
        stop.set()
        producer.join()
        wait_for(lambda: outbox.stats().depth == 0, 60, what="the outbox to drain")
        wait_for(lambda: {w.seq for w in sub.scores()} >= set(produced), 30, what="every window at the subscriber")
    finally:
        stop.set()
        producer.join()
        server.__exit__(None, None, None)
        pub.stop()
        outbox.close()
        sub.close()
        broker.stop()
    seqs = [w.seq for w in sub.scores()]
    assert set(seqs) == set(range(1, max(produced) + 1)) == set(produced)  # no gap, no loss
    dups = [s for s, n in Counter(seqs).items() if n > 1]
    # QoS 1 may redeliver a message whose PUBACK was lost in the outage; the payload is then identical.
    by_seq = defaultdict(set)
    for p in sub.payloads("/score"):
        by_seq[ScoreWindow.from_json(p).seq].add(p)
    assert all(len(by_seq[s]) == 1 for s in dups)


def test_unconfirmed_rows_go_out_again_and_only_this_epochs_ack_deletes(broker: Broker, tmp_path: Path) -> None:
    """No server: the broker PUBACKs every window, none is confirmed stored, so after
    `resend_after_s` the device sends them again; an ack for another outbox epoch deletes
    nothing, one for its own epoch deletes exactly up to its seq."""
    sub = Collector(broker.host, broker.port)
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = make_publisher(broker, outbox, resend_after_s=1)
    pub.start()
    acker = Collector(broker.host, broker.port)
    try:
        wait_for(pub.connected.is_set, 10, what="publisher to connect")
        enqueue_windows(outbox, 1_700_000_000.0)
        pub.notify()
        wait_for(
            lambda: Counter(w.seq for w in sub.scores()) == Counter({1: 2, 2: 2, 3: 2, 4: 2}),
            15,
            what="every window sent a second time",
        )
        for epoch, seq in (("0" * 16, 4), (outbox.epoch, 2)):
            ack = StoredAck(device=DEVICE, epoch=epoch, seq=seq, time=utc_iso(time.time()))
            acker.client.publish(stored_topic(DEVICE), ack.to_json(), qos=1, retain=True).wait_for_publish(5)
        wait_for(lambda: [r.seq for r in outbox.pending()] == [3, 4], 10, what="rows 1-2 deleted, 3-4 kept")
    finally:
        pub.stop()
        outbox.close()
        sub.close()
        acker.close()
