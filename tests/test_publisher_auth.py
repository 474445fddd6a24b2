"""The publisher against the production broker config: device login from a password file, ACL."""

from __future__ import annotations

import time
from pathlib import Path

from device.outbox import Outbox
from device.publisher import MqttConfig, Publisher
from server.provision import SERVER_USER
from tests.conftest import wait_for
from tests.test_acl_broker import connect, facility  # noqa: F401  (fixtures: the secured broker and its logins)
from tests.test_publisher import enqueue_windows, status_of

DEVICE = "rack-a"


def publisher(broker, outbox: Outbox, **kw) -> Publisher:
    config = MqttConfig(host=broker.host, port=broker.port, username=DEVICE, reconnect_max_s=2, **kw)
    return Publisher(DEVICE, config, outbox, status_of(outbox, DEVICE), status_interval_s=0.5)


def test_device_login_from_password_file_publishes_everything_within_its_acl(facility, connect, tmp_path: Path) -> None:  # noqa: F811
    broker, passwords = facility
    server = connect(SERVER_USER)
    server.subscribe("mgs/#")
    secret = tmp_path / "mqtt-password"
    secret.write_text(passwords[DEVICE] + "\n")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = publisher(broker, outbox, password_file=secret)
    pub.start()
    try:
        wait_for(pub.connected.is_set, 10, what="the device to log in")
        enqueue_windows(outbox, 1_700_000_000.0, device=DEVICE)
        pub.publish_state(0, 2.5)
        pub.notify()
        expected = {f"mgs/{DEVICE}/availability", f"mgs/{DEVICE}/status", f"mgs/{DEVICE}/box/0/state"} | {
            f"mgs/{DEVICE}/box/{b}/score" for b in range(4)}
        wait_for(lambda: expected <= set(server.topics()), 10, what="every device topic at the server")
        wait_for(lambda: outbox.stats().depth == 0, 5, what="the outbox to drain")
        enqueue_windows(outbox, 1_700_000_001.0, device="rack-b")  # another device's name: the ACL refuses it
        enqueue_windows(outbox, 1_700_000_002.0, device=DEVICE)
        pub.notify()
        wait_for(lambda: len([t for t in server.topics() if t.endswith("/score")]) == 8, 10, what="the next own windows")
        wait_for(lambda: pub.refused == 4, 5, what="four refusals")
        assert not any("rack-b" in t for t in server.topics())
        assert "refused" in pub.last_error and "MQTT login" in pub.last_error
        assert outbox.stats().depth == 4  # refused, so not lost: still in the outbox
    finally:
        pub.stop()
        outbox.close()


def test_wrong_password_is_reported_and_nothing_is_lost(facility, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    broker, _ = facility
    monkeypatch.setenv("MGS_TEST_MQTT_PASSWORD", "not-the-password")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = publisher(broker, outbox, password_env="MGS_TEST_MQTT_PASSWORD")
    pub.start()
    try:
        enqueue_windows(outbox, 1_700_000_000.0, device=DEVICE)
        wait_for(lambda: "refused" in pub.last_error, 10, what="the refusal to be reported")
        assert not pub.connected.is_set()
        assert outbox.stats().depth == 4  # kept for when the password is fixed
    finally:
        pub.stop(drain_timeout_s=0)
        outbox.close()
