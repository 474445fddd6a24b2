"""`[ingest] protocol = "3.1.1"`: the ingest keeps a 3.1.1 persistent session and acknowledges only
after the commit, against a real Mosquitto (whose inflight limit, 20 by default, then applies) and
against the embedded amqtt broker of the demo (which speaks only 3.1.1)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from server.demo import Child, Facility, amqtt_installed, start_amqtt
from tests.conftest import wait_for
from tests.ingest_support import publish, running_worker, score_message, window

N = 2000  # a hundred times Mosquitto's default inflight limit


def stored_seqs(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [seq for (seq,) in conn.execute("SELECT seq FROM score_windows WHERE device = 'rack1' ORDER BY seq")]


def test_3_1_1_stores_every_window_exactly_once_through_mosquitto(broker, tmp_path: Path) -> None:
    db = tmp_path / "mgs.sqlite"
    messages = [score_message(window(seq=seq, t=1_750_000_000.0 + seq)) for seq in range(N)]
    with running_worker(broker, db, protocol="3.1.1", flush_interval_s=0.5) as worker:
        publish(broker, messages)
        publish(broker, messages[:100])  # redelivered windows are duplicates, not new rows
        wait_for(
            lambda: worker.stats().get("acknowledged", 0) == N + 100, timeout=60, what="every message acknowledged"
        )
        assert worker.stats()["stored"] == N and worker.stats()["duplicates"] == 100
    assert stored_seqs(db) == list(range(N))


def test_3_1_1_session_keeps_what_is_published_while_the_server_is_down(broker, tmp_path: Path) -> None:
    db = tmp_path / "mgs.sqlite"
    with running_worker(broker, db, protocol="3.1.1"):
        pass  # the first connection creates the persistent session and its subscriptions
    publish(broker, [score_message(window(seq=seq, t=1_750_000_000.0 + seq)) for seq in range(50)])
    with running_worker(broker, db, protocol="3.1.1") as worker:
        wait_for(lambda: worker.stats().get("stored", 0) == 50, timeout=30, what="the queued windows stored")
    assert stored_seqs(db) == list(range(50))


@dataclass
class AmqttBroker:
    """The demo's embedded broker, with the host and port `ingest_support` expects of a broker."""

    child: Child
    port: int
    host: str = "127.0.0.1"


@pytest.fixture
def amqtt_broker(tmp_path: Path) -> Iterator[AmqttBroker]:
    if not amqtt_installed():
        pytest.skip("amqtt is not installed (it comes with the server extra)")
    facility = Facility(tmp_path / "amqtt")
    try:
        yield AmqttBroker(*start_amqtt(facility))
    finally:
        facility.stop()


def publish_as(broker: AmqttBroker, username: str, messages: list[tuple[str, bytes]]) -> None:
    """QoS 1 under a user name: the demo's amqtt refuses anonymous clients."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    client.username_pw_set(username)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        for info in [client.publish(topic, payload, qos=1) for topic, payload in messages]:
            info.wait_for_publish(timeout=30)
    finally:
        client.disconnect()
        client.loop_stop()


def test_3_1_1_stores_every_window_exactly_once_through_amqtt(amqtt_broker, tmp_path: Path) -> None:
    """amqtt has no inflight limit (every PUBLISH is its own task waiting 5 s for its PUBACK), so the
    acknowledgements after each commit must come back within those 5 s, or amqtt drops the message."""
    db = tmp_path / "mgs.sqlite"
    messages = [score_message(window(seq=seq, t=1_750_000_000.0 + seq)) for seq in range(500)]
    with running_worker(amqtt_broker, db, protocol="3.1.1", username="server") as worker:
        publish_as(amqtt_broker, "rack1", messages)
        wait_for(lambda: worker.stats().get("acknowledged", 0) == 500, timeout=60, what="every message acknowledged")
        assert worker.stats()["stored"] == 500
    assert stored_seqs(db) == list(range(500))
    assert "Timeout waiting for PUBACK" not in amqtt_broker.child.log_tail()


def test_amqtt_keeps_what_is_published_while_the_server_is_down(amqtt_broker, tmp_path: Path) -> None:
    db = tmp_path / "mgs.sqlite"
    with running_worker(amqtt_broker, db, protocol="3.1.1", username="server"):
        pass
    publish_as(amqtt_broker, "rack1", [score_message(window(seq=seq, t=1_750_000_000.0 + seq)) for seq in range(50)])
    with running_worker(amqtt_broker, db, protocol="3.1.1", username="server") as worker:
        wait_for(lambda: worker.stats().get("stored", 0) == 50, timeout=30, what="the queued windows stored")
    assert stored_seqs(db) == list(range(50))


def test_amqtt_of_the_demo_refuses_anonymous_clients(amqtt_broker) -> None:
    """An anonymous ingest session would silently lose what arrives while the server is down."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
    refused: list[object] = []
    client.on_connect = lambda c, userdata, flags, reason, properties: refused.append(reason.is_failure)
    client.connect(amqtt_broker.host, amqtt_broker.port)
    client.loop_start()
    try:
        wait_for(lambda: refused, timeout=10, what="the broker's answer to an anonymous CONNECT")
    finally:
        client.loop_stop()
    assert refused == [True]
