"""Nothing lost: the MQTT data path under faults and attacks, end to end on loopback.

The shipped Mosquitto config and ACL, `mgs-server run` as a process, devices with real outboxes and
publishers (see tests/fault_support.py). Every test ends with the exactly-once tally: each window a
device produced is stored once, none lost, none duplicated (by seq and by content).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from mgs_core.messages import score_topic
from server.db import connect
from server.provision import SERVER_USER
from tests.conftest import MOSQUITTO, wait_for
from tests.fault_support import (
    Producer,
    ServerProcess,
    ShippedBroker,
    SimDevice,
    Tally,
    wait_all_stored,
)
from tests.ingest_support import window

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[tuple[ShippedBroker, ServerProcess]]:
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed")
    broker = ShippedBroker(tmp_path)
    broker.start()
    server = ServerProcess(tmp_path, broker)
    try:
        yield broker, server
    finally:
        if server.proc is not None:
            server.proc.kill()
            server.proc.wait()
        if broker.proc is not None:
            broker.stop()


def devices(broker: ShippedBroker, tmp_path: Path, n: int = 2, **kw) -> list[SimDevice]:
    out = [sim_device(broker, f"rack{i}", tmp_path, **kw) for i in range(n)]
    for d in out:
        d.start()
    return out


def sim_device(broker: ShippedBroker, name: str, tmp_path: Path, **kw) -> SimDevice:
    return SimDevice(name, broker.host, broker.port, broker.passwords[name], tmp_path, **kw)


def stop_all(devs: list[SimDevice]) -> None:
    for d in devs:
        d.stop()


def raw_client(broker: ShippedBroker, user: str, client_id: str, clean_start: bool = True) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.username_pw_set(user, broker.passwords[user])
    client.connect(broker.host, broker.port, clean_start=clean_start)
    client.loop_start()
    wait_for(client.is_connected, what=f"{user} to connect")
    return client


def test_a_window_the_database_cannot_store_is_quarantined_alone_and_blocks_nothing(rig, tmp_path: Path) -> None:
    """Fault 1: one message fails at the database. Its batch is written message by message, the
    culprit is quarantined with the reason and acknowledged, everything else is stored; the
    year-10000 window of the original report is refused already by validation."""
    broker, server = rig
    connect(server.db).conn.executescript(  # the database refuses every window of device 'poison'
        "CREATE TRIGGER poison BEFORE INSERT ON score_windows WHEN NEW.device = 'poison' "
        "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END;"
    )
    server.start()
    devs = devices(broker, tmp_path)
    poison = sim_device(broker, "poison", tmp_path)
    poison.start()
    attacker = raw_client(broker, "rack0", "rack0-raw")
    try:
        with Producer(devs + [poison]):
            far = json.loads(window(device="rack0", seq=10**6).to_json())
            far.update(window_start="9999-12-31T23:59:59.9999995Z", window_end="9999-12-31T23:59:59.9999995Z")
            attacker.publish(score_topic("rack0", 0), json.dumps(far), qos=1).wait_for_publish(10)
            wait_for(lambda: len(poison.sent) >= 40, what="poison windows produced")
        took = wait_all_stored(server, devs)
        wait_for(poison.confirmed, what="the poison device's windows quarantined and confirmed")
    finally:
        attacker.disconnect()
        attacker.loop_stop()
        stop_all(devs + [poison])
    reasons = [r for (r,) in server.query("SELECT reason FROM quarantine WHERE device = 'poison'")]
    assert len(reasons) == len(poison.sent) and all("refused by a test trigger" in r for r in reasons)
    assert any(
        "outside the years" in r for (r,) in server.query("SELECT reason FROM quarantine WHERE device = 'rack0'")
    )
    assert server.query("SELECT COUNT(*) FROM score_windows WHERE device = 'poison'") == [(0,)]
    assert server.stop() == 0
    Tally.of(
        "poison message",
        "a device whose every window the database refuses streams next to 2 devices (counted "
        "here; the refused ones are all quarantined and confirmed); a year-9999 window",
        server,
        devs,
        took,
    ).check()


def test_a_device_using_the_servers_client_id_takes_over_nothing(rig, tmp_path: Path) -> None:
    """Fault 2: a device login connects with the server's client id (clean start off) and with
    another device's, over and over while the devices stream: the broker makes the login the
    client id, so the server and the other device keep their sessions."""
    broker, server = rig
    server.start()
    devs = devices(broker, tmp_path)
    try:
        with Producer(devs):
            attempts = 0
            while sum(len(d.sent) for d in devs) < 400:
                thief = raw_client(
                    broker, "rack1", ("mgs-server-ingest", SERVER_USER, "rack0")[attempts % 3], clean_start=False
                )
                thief.disconnect()
                thief.loop_stop()
                attempts += 1
        took = wait_all_stored(server, devs)
    finally:
        stop_all(devs)
    assert server.log.read_text().count("ingest connected") == 1, "the server's connection was never taken"
    assert server.stop() == 0
    Tally.of(
        "client id take-over",
        "a device login connects again and again with the server's and another device's "
        "client id (clean start off) while 2 devices stream",
        server,
        devs,
        took,
    ).check()


def test_broker_killed_while_the_server_is_stopped_loses_nothing(rig, tmp_path: Path) -> None:
    """Fault 3: the broker has acknowledged every window and holds them for the stopped server;
    SIGKILL before its next save loses its queue. The devices still have every window and send
    them again when they reconnect."""
    broker, server = rig
    server.start()
    server.stop()  # the server's persistent session exists; it is away now
    devs = devices(broker, tmp_path)
    try:
        for d in devs:
            d.produce(2000)
        wait_for(
            lambda: all(d.publisher.broker_has_all() for d in devs),
            timeout=60,
            what="every window acknowledged by the broker",
        )
        assert all(d.outbox.stats().depth == 2000 for d in devs), "nothing is confirmed stored yet"
        broker.kill()
        broker.start()
        started = time.monotonic()
        server.start()
        wait_all_stored(server, devs, timeout=90)
        took = time.monotonic() - started
    finally:
        stop_all(devs)
    assert server.stop() == 0
    Tally.of(
        "broker SIGKILL, server stopped",
        "2 devices x 2,000 windows acknowledged by the broker, broker killed "
        "before its save, restarted, server started",
        server,
        devs,
        took,
    ).check()


def test_a_lost_outbox_starts_a_new_epoch_and_nothing_is_dropped_as_a_duplicate(rig, tmp_path: Path) -> None:
    """Fault 4: a device's outbox file is lost (or moved aside as the corrupt-outbox message
    advises). Its seq restarts at 1 under a new epoch: the new windows are stored, not dropped as
    duplicates, and the server counts and shows the seq regression."""
    broker, server = rig
    server.start()
    devs = devices(broker, tmp_path, n=1)
    device = devs[0]
    try:
        device.produce(200)
        wait_all_stored(server, devs)
        first_epoch = device.outbox.epoch
        device.stop()
        device.outbox_path.rename(device.outbox_path.with_suffix(".aside"))
        started = time.monotonic()
        device.start()
        assert device.outbox.epoch != first_epoch
        second_epoch = device.outbox.epoch
        device.produce(200)
        wait_all_stored(server, devs)
        took = time.monotonic() - started
    finally:
        stop_all(devs)
    assert server.query(
        "SELECT epoch, MIN(seq), MAX(seq) FROM score_windows GROUP BY epoch ORDER BY epoch = ?", (second_epoch,)
    ) == [(first_epoch, 1, 200), (second_epoch, 1, 200)]
    ((regressions, last),) = server.query("SELECT seq_regressions, last_regression FROM devices WHERE name = 'rack0'")
    assert regressions == 1 and "outbox was replaced" in last and first_epoch in last
    assert server.stop() == 0
    Tally.of(
        "outbox lost", "200 windows stored, outbox file moved aside, device restarted, 200 more", server, devs, took
    ).check()


def test_server_killed_mid_stream_loses_nothing(rig, tmp_path: Path) -> None:
    broker, server = rig
    server.start()
    devs = devices(broker, tmp_path)
    try:
        with Producer(devs):
            wait_for(lambda: server.query("SELECT COUNT(*) FROM score_windows") >= [(200,)], what="a stream stored")
            server.kill()
            wait_for(lambda: sum(len(d.sent) for d in devs) >= 1200, what="more windows while the server is dead")
            started = time.monotonic()
            server.start()
        wait_all_stored(server, devs)
        took = time.monotonic() - started
    finally:
        stop_all(devs)
    assert server.stop() == 0
    Tally.of("server SIGKILL", "server killed while 2 devices stream, restarted", server, devs, took).check()


def test_broker_killed_while_the_server_runs_loses_nothing(rig, tmp_path: Path) -> None:
    broker, server = rig
    server.start()
    devs = devices(broker, tmp_path)
    try:
        with Producer(devs):
            wait_for(lambda: server.query("SELECT COUNT(*) FROM score_windows") >= [(200,)], what="a stream stored")
            broker.kill()
            wait_for(lambda: sum(len(d.sent) for d in devs) >= 1200, what="windows queued in the outboxes")
            started = time.monotonic()
            broker.start()
        wait_all_stored(server, devs)
        took = time.monotonic() - started
    finally:
        stop_all(devs)
    assert server.stop() == 0
    Tally.of(
        "broker SIGKILL, server running", "broker killed while 2 devices stream, restarted", server, devs, took
    ).check()


def test_broker_down_for_a_while_loses_nothing(rig, tmp_path: Path) -> None:
    broker, server = rig
    server.start()
    devs = devices(broker, tmp_path)
    try:
        with Producer(devs):
            wait_for(lambda: server.query("SELECT COUNT(*) FROM score_windows") >= [(100,)], what="a stream stored")
            broker.stop()
            down = time.monotonic()
            wait_for(lambda: time.monotonic() - down >= 3, interval=0.2, what="a 3 s outage")
            started = time.monotonic()
            broker.start()
        wait_all_stored(server, devs)
        took = time.monotonic() - started
    finally:
        stop_all(devs)
    assert server.stop() == 0
    Tally.of(
        "broker outage", "broker stopped for 3 s while 2 devices stream, started again", server, devs, took
    ).check()


def test_device_restart_continues_its_epoch_and_loses_nothing(rig, tmp_path: Path) -> None:
    broker, server = rig
    server.start()
    devs = devices(broker, tmp_path, n=1)
    device = devs[0]
    try:
        with Producer(devs):
            wait_for(lambda: len(device.sent) >= 200, what="windows produced")
            epoch = device.outbox.epoch
            device.stop()  # windows not yet confirmed stay in the outbox
            started = time.monotonic()
            device.start()
            assert device.outbox.epoch == epoch
            wait_for(lambda: len(device.sent) >= 400, what="windows after the restart")
        wait_all_stored(server, devs)
        took = time.monotonic() - started
    finally:
        stop_all(devs)
    assert server.query("SELECT COUNT(DISTINCT epoch) FROM score_windows") == [(1,)]
    assert server.query("SELECT seq_regressions FROM devices WHERE name = 'rack0'") == [(0,)]
    assert server.stop() == 0
    Tally.of("device restart", "device stopped mid-stream and started on the same outbox", server, devs, took).check()


def test_outbox_disk_full_keeps_windows_in_memory_and_loses_nothing(rig, tmp_path: Path) -> None:
    """The outbox file is capped (handled like a full disk) while the server is away: windows wait
    in memory without a seq, and are numbered and sent once stored rows make room."""
    broker, server = rig
    devs = devices(broker, tmp_path, n=1, max_bytes=64 * 1024)
    device = devs[0]
    try:
        for _ in range(20):
            device.produce(40)
        assert device.outbox.stats().disk_full and device.outbox.stats().held_in_memory > 0
        started = time.monotonic()
        server.start()
        wait_for(lambda: not device.outbox.stats().held_in_memory, timeout=60, what="held windows written")
        wait_all_stored(server, devs)
        took = time.monotonic() - started
    finally:
        stop_all(devs)
    assert server.stop() == 0
    Tally.of(
        "outbox disk full",
        "800 windows into a 64 KiB outbox while the server is away, then the server starts",
        server,
        devs,
        took,
    ).check()
