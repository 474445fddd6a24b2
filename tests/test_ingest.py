"""The ingest worker against a real Mosquitto and a real SQLite file."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mgs_core.errors import ConfigError
from mgs_core.messages import (
    AnimalAlert,
    BoxAlert,
    animal_alert_subscription,
    availability_topic,
    status_topic,
    utc_iso,
)
from mgs_core.tomlconfig import from_dict
from server.db import connect
from server.ingest import IngestConfig, IngestTlsConfig, IngestWorker
from server.repository import Repository
from tests.conftest import wait_for
from tests.ingest_support import T0, publish, running_worker, score_message, window
from tests.web_support import status


def rows(db_path: Path, sql: str) -> list[tuple]:
    db = connect(db_path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.conn.close()


def stored_seqs(db_path: Path) -> list[int]:
    return [r[0] for r in rows(db_path, "SELECT seq FROM score_windows ORDER BY seq")]


def test_windows_arrive_once_even_when_published_twice(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    messages = [score_message(window(box=i % 4, seq=i, t=T0 + i // 4)) for i in range(300)]
    with running_worker(broker, db_path) as worker:
        publish(broker, messages)
        publish(broker, messages[50:150])
        wait_for(lambda: worker.stats().get("received", 0) >= 400, what="400 messages received")
        wait_for(
            lambda: worker.stats().get("stored", 0) + worker.stats().get("duplicates", 0) >= 400, what="all written"
        )
        assert worker.stats()["duplicates"] == 100
    assert stored_seqs(db_path) == list(range(300))
    assert rows(db_path, "SELECT SUM(windows) FROM rollup_hour") == [(300,)]


def test_messages_published_while_the_server_is_down_are_stored_after_restart(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    with running_worker(broker, db_path, client_id="ingest-under-test"):
        pass
    publish(broker, [score_message(window(seq=i, t=T0 + i)) for i in range(50)])
    with running_worker(broker, db_path, client_id="ingest-under-test") as worker:
        wait_for(lambda: worker.stats().get("stored", 0) >= 50, what="the backlog to be stored")
    assert stored_seqs(db_path) == list(range(50))


def test_stop_writes_everything_already_received(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    with running_worker(broker, db_path, flush_interval_s=5.0, batch_size=10_000) as worker:
        publish(broker, [score_message(window(seq=i, t=T0 + i)) for i in range(200)])
        wait_for(lambda: worker.stats()["queued"] + worker.stats().get("stored", 0) >= 200, what="all received")
    assert stored_seqs(db_path) == list(range(200))


def test_status_availability_and_device_alerts_are_tracked(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    alert = BoxAlert(
        device="rack1", box=1, seq=900, event="raised", time=utc_iso(T0), threshold=5.0, duration_s=30.0, score=6.0
    )
    with running_worker(broker, db_path) as worker:
        publish(
            broker, [(availability_topic("rack1"), b"online"), (status_topic("rack1"), status().to_json())], retain=True
        )
        publish(broker, [("mgs/rack1/box/1/alert", alert.to_json())] * 2 + [("mgs/rack1/box/1/state", b"4.50")])
        wait_for(
            lambda: (
                worker.stats().get("device_alerts", 0) >= 1
                and worker.stats().get("states", 0) >= 1
                and worker.stats().get("received", 0) >= 5
            ),
            what="status, alerts and state",
        )
        device = Repository(connect(db_path)).device("rack1")
        assert (device["availability"], device["fps"], device["backend"], device["outbox_depth"]) == (
            "online",
            21.5,
            "local",
            3,
        )
        publish(broker, [(availability_topic("rack1"), b"offline")], retain=True)
        wait_for(
            lambda: Repository(connect(db_path)).device("rack1")["availability"] == "offline",
            what="offline to be recorded",
        )
    assert rows(db_path, "SELECT source, event, seq FROM alerts") == [("device", "raised", 900)]


def test_server_alerts_are_published_for_alerting_systems(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    repo = Repository(connect(db_path))
    mouse = repo.create_animal("M-42 'special'")
    repo.create_assignment(mouse, "rack1", 0, T0)
    repo.create_alert_rule(threshold=5.0, duration_s=2.0, animal_id=mouse)
    received: list[tuple[str, bytes]] = []
    subscribed = threading.Event()
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    listener.on_message = lambda c, u, m: received.append((m.topic, m.payload))
    listener.on_subscribe = lambda *args: subscribed.set()
    listener.connect(broker.host, broker.port)
    listener.loop_start()
    listener.subscribe(animal_alert_subscription(), qos=1)
    try:
        assert subscribed.wait(10)
        with running_worker(broker, db_path) as worker:
            publish(broker, [score_message(window(seq=i, t=T0 + i, score=7.0)) for i in range(5)])
            wait_for(lambda: received, what="an alert on mgs/alerts/+")
            assert worker.stats()["alerts_published"] == 1
    finally:
        listener.disconnect()
        listener.loop_stop()
    topic, payload = received[0]
    event = AnimalAlert.from_json(payload)
    assert topic == f"mgs/alerts/{mouse}"
    assert (event.event, event.animal, event.device, event.box, event.threshold) == (
        "raised",
        "M-42 'special'",
        "rack1",
        0,
        5.0,
    )
    assert json.loads(payload)["alert_id"] == repo.alerts(animal_id=mouse)[0]["id"]


def test_unknown_devices_can_be_refused(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    Repository(connect(db_path)).register_device("rack1")
    with running_worker(broker, db_path, accept_unknown_devices=False) as worker:
        publish(broker, [score_message(window("rack1", seq=1)), score_message(window("intruder", seq=1))])
        wait_for(lambda: worker.stats().get("received", 0) >= 2, what="both messages")
        wait_for(lambda: worker.stats().get("rejected", 0) == 1, what="the intruder's rejection")
    assert rows(db_path, "SELECT device FROM score_windows") == [("rack1",)]
    assert "not registered" in rows(db_path, "SELECT reason FROM quarantine")[0][0]


def test_config_is_checked_with_key_and_reason() -> None:
    with pytest.raises(ConfigError, match="ingest.prefix"):
        from_dict(IngestConfig, {"prefix": "mgs/#"})
    with pytest.raises(ConfigError, match="ingest.queue_size"):
        from_dict(IngestConfig, {"batch_size": 5000, "queue_size": 10})
    with pytest.raises(ConfigError, match="unknown key 'ingest.batchsize'"):
        from_dict(IngestConfig, {"batchsize": 10})


def test_older_flat_tls_and_keepalive_keys_still_configure_the_broker_connection(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here")
    old = from_dict(IngestConfig, {"tls": True, "ca_file": str(ca), "keepalive_s": 60})
    new = from_dict(IngestConfig, {"tls": {"enabled": True, "ca": str(ca)}, "keepalive": 60})
    assert (old.tls, old.keepalive) == (new.tls, new.keepalive) == (IngestTlsConfig(enabled=True, ca=ca), 60)
    with pytest.raises(ConfigError, match="ingest.tls.ca"):
        from_dict(IngestConfig, {"tls": {"enabled": True, "ca": str(tmp_path / "missing.pem")}})
    with pytest.raises(ConfigError, match="ca_file"):
        from_dict(IngestConfig, {"tls": {"enabled": True}, "ca_file": str(ca)})
    with pytest.raises(ConfigError, match="only one of password"):
        from_dict(IngestConfig, {"password": "x", "password_file": str(ca)})


def test_ingest_reconnects_after_a_broker_restart(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    with running_worker(broker, db_path) as worker:
        publish(broker, [score_message(window(seq=i, t=T0 + i)) for i in range(10)])
        wait_for(lambda: worker.stats().get("stored", 0) == 10, what="the first windows")
        broker.stop()
        wait_for(lambda: not worker.connected.is_set(), what="the worker to notice the outage")
        broker.start()
        wait_for(worker.connected.is_set, timeout=30, what="the worker to reconnect and subscribe again")
        publish(broker, [score_message(window(seq=i, t=T0 + i)) for i in range(10, 20)])
        wait_for(lambda: worker.stats().get("stored", 0) == 20, what="windows after the restart")
    assert stored_seqs(db_path) == list(range(20))


def test_a_server_started_before_its_broker_says_why_and_connects_later(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    broker.stop()
    worker = IngestWorker(IngestConfig(host=broker.host, port=broker.port, flush_interval_s=0.05), db_path)
    worker.start()
    try:
        wait_for(lambda: "cannot reach the MQTT broker" in worker.last_error, what="the reason to be reported")
        assert not worker.connected.is_set()
        broker.start()
        wait_for(worker.connected.is_set, timeout=30, what="the worker to connect once the broker is up")
        assert worker.last_error == ""
        publish(broker, [score_message(window(seq=1))])
        wait_for(lambda: worker.stats().get("stored", 0) == 1, what="a window to be stored")
    finally:
        worker.stop()
