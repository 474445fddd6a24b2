"""The shipped Mosquitto config and ACL, run in a real broker: who may publish and read what.

The broker is started from systemd/mosquitto/mgs.conf itself (only the port and file paths are
changed), with logins created by `server.provision`, so these tests check the files a facility
installs, not a copy of them.
"""

from __future__ import annotations

import getpass
import itertools
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from server.provision import CONSUMER_USER, SERVER_USER, BrokerFiles, add_login
from tests.conftest import MOSQUITTO, Broker, wait_for

_client_ids = itertools.count()
SYSTEMD = Path(__file__).resolve().parent.parent / "systemd" / "mosquitto"


class SecuredBroker(Broker):
    """Mosquitto with the production mgs.conf: no anonymous access, password file and ACL."""

    def __init__(self, workdir: Path, files: BrokerFiles) -> None:
        super().__init__(workdir)
        conf = (SYSTEMD / "mgs.conf").read_text()
        conf = re.sub(r"^password_file .*$", f"password_file {files.password_file}", conf, flags=re.M)
        conf = re.sub(r"^acl_file .*$", f"acl_file {files.acl_file}", conf, flags=re.M)
        conf = re.sub(r"^listener 1883$", f"listener {self.port} 127.0.0.1", conf, flags=re.M)
        # `user` keeps a broker started by root (CI) able to read files in pytest's private tmp dir.
        test_only = f"user {getpass.getuser()}\npersistence false\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        self.config.write_text(conf + test_only)


class Client:
    """A paho MQTT v5 client that records what it receives and the broker's answers to publishes."""

    def __init__(self, broker: Broker, user: str, password: str, client_id: str = "") -> None:
        self.received: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self.puback: dict[int, ReasonCode] = {}
        self.connect_rc: ReasonCode | None = None
        self.subscribed = threading.Event()
        self.lock = threading.Lock()
        self.c = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id or f"test-{user}-{next(_client_ids)}", protocol=mqtt.MQTTv5
        )
        self.c.username_pw_set(user, password)
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = lambda *a: self.subscribed.set()
        self.c.on_disconnect = self._on_disconnect
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        wait_for(lambda: self.connect_rc is not None, timeout=10, what=f"CONNACK for {user}")

    def _on_connect(self, client, userdata, flags, rc, props=None) -> None:
        self.connect_rc = rc

    def _on_disconnect(self, client, userdata, flags, rc, props=None) -> None:
        self.disconnects += 1

    def _on_message(self, client, userdata, msg) -> None:
        with self.lock:
            self.received.append((msg.topic, msg.payload))

    def _on_publish(self, client, userdata, mid, rc, props=None) -> None:
        self.puback[mid] = rc

    def subscribe(self, topic: str) -> None:
        self.subscribed.clear()
        self.c.subscribe(topic, qos=1)
        assert self.subscribed.wait(10), f"no SUBACK for {topic}"

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1 and return the broker's PUBACK reason (MQTT 5 says 'Not authorized')."""
        mid = self.c.publish(topic, payload, qos=1).mid
        return wait_for(lambda: self.puback.get(mid), timeout=10, what=f"PUBACK for {topic}")

    def topics(self) -> list[str]:
        with self.lock:
            return [t for t, _ in self.received]

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def facility(tmp_path: Path) -> Iterator[tuple[SecuredBroker, dict[str, str]]]:
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed (make test installs it when run as root)")
    files = BrokerFiles(tmp_path / "mgs.passwd", tmp_path / "mgs.acl")
    shutil.copy(SYSTEMD / "mgs.acl", files.acl_file)
    passwords = {
        "rack-a": add_login(files, "rack-a", "device"),
        "rack-b": add_login(files, "rack-b", "device"),
        SERVER_USER: add_login(files, SERVER_USER, "server"),
        CONSUMER_USER: add_login(files, CONSUMER_USER, "consumer"),
    }
    broker = SecuredBroker(tmp_path, files)
    broker.start()
    try:
        yield broker, passwords
    finally:
        broker.stop()


@pytest.fixture
def connect(facility) -> Iterator:
    broker, passwords = facility
    opened: list[Client] = []

    def _connect(user: str, password: str | None = None) -> Client:
        client = Client(broker, user, passwords[user] if password is None else password)
        opened.append(client)
        return client

    yield _connect
    for c in opened:
        c.close()


def test_device_publishes_under_its_own_prefix_and_the_server_receives_it(connect) -> None:
    server = connect(SERVER_USER)
    assert not server.connect_rc.is_failure
    server.subscribe("mgs/#")
    device = connect("rack-a")
    assert not device.publish("mgs/rack-a/box/0/score", b"{}").is_failure
    wait_for(lambda: "mgs/rack-a/box/0/score" in server.topics(), what="the server to receive rack-a's score")


def test_device_cannot_publish_in_another_devices_name(connect) -> None:
    server = connect(SERVER_USER)
    server.subscribe("mgs/#")
    device = connect("rack-a")
    refused = device.publish("mgs/rack-b/box/0/score", b"forged")
    assert refused.is_failure and refused.getName() == "Not authorized"
    assert not device.publish("mgs/rack-a/box/0/state", b"marker").is_failure
    # Same publisher, same broker thread: once the later marker is in, the forged one would be too.
    wait_for(lambda: "mgs/rack-a/box/0/state" in server.topics(), what="the marker from rack-a")
    assert "mgs/rack-b/box/0/score" not in server.topics()


def test_device_cannot_read_other_devices(connect) -> None:
    spy = connect("rack-a")
    spy.subscribe("mgs/#")
    connect("rack-b").publish("mgs/rack-b/box/1/score", b"private")
    # PUBACK above means the broker has handled rack-b's message before it sees this marker. The
    # marker comes from the server's login: a second rack-a connection would replace the spy's.
    connect(SERVER_USER).publish("mgs/rack-a/stored", b"marker")
    wait_for(lambda: spy.received, what="rack-a to receive the marker on its stored topic")
    assert spy.topics() == ["mgs/rack-a/stored"]


def test_wrong_password_is_refused_at_connect(facility) -> None:
    broker, _ = facility
    client = Client(broker, "rack-a", "not-the-password")
    try:
        assert client.connect_rc.is_failure
        assert client.connect_rc.getName() in ("Bad user name or password", "Not authorized")
    finally:
        client.close()


def test_unknown_login_is_refused_at_connect(facility) -> None:
    broker, _ = facility
    client = Client(broker, "intruder", "whatever")
    try:
        assert client.connect_rc.is_failure
    finally:
        client.close()


def test_alert_consumer_reads_everything_but_cannot_publish(connect) -> None:
    consumer = connect(CONSUMER_USER)
    consumer.subscribe("mgs/#")
    server = connect(SERVER_USER)
    server.subscribe("mgs/#")
    for topic in ("mgs/rack-a/box/0/alert", "mgs/alerts/rack-a", "mgs/mgs-alerts/status"):
        assert consumer.publish(topic, b"fake").getName() == "Not authorized", topic
    device = connect("rack-a")
    device.publish("mgs/rack-a/box/0/alert", b"real")
    wait_for(lambda: consumer.received and server.received, what="both subscribers to get rack-a's alert")
    assert consumer.received == [("mgs/rack-a/box/0/alert", b"real")]
    assert server.received == [("mgs/rack-a/box/0/alert", b"real")]


def test_server_writes_alerts_only(connect) -> None:
    consumer = connect(CONSUMER_USER)
    consumer.subscribe("mgs/#")
    server = connect(SERVER_USER)
    assert server.publish("mgs/rack-a/box/0/score", b"forged").getName() == "Not authorized"
    assert not server.publish("mgs/alerts/rack-a/0", b"raised").is_failure
    wait_for(lambda: consumer.received, what="the consumer to receive the server's alert")
    assert consumer.topics() == ["mgs/alerts/rack-a/0"]


def test_only_the_server_writes_stored_acks_and_a_device_reads_only_its_own(connect) -> None:
    rack_a, rack_b = connect("rack-a"), connect("rack-b")
    rack_a.subscribe("mgs/rack-a/stored")
    rack_b.subscribe("mgs/rack-a/stored")  # another device's acks: never delivered
    rack_b.subscribe("mgs/rack-b/stored")
    for device, topic in ((rack_a, "mgs/rack-a/stored"), (rack_b, "mgs/rack-a/stored"), (rack_a, "mgs/rack-b/stored")):
        assert device.publish(topic, b"forged ack").getName() == "Not authorized", topic
    server = connect(SERVER_USER)
    assert not server.publish("mgs/rack-a/stored", b"ack a").is_failure
    assert not server.publish("mgs/rack-b/stored", b"ack b").is_failure
    wait_for(lambda: rack_a.received and rack_b.received, what="each device's own ack")
    assert rack_a.received == [("mgs/rack-a/stored", b"ack a")]
    assert rack_b.received == [("mgs/rack-b/stored", b"ack b")]


def test_the_login_is_the_client_id_so_no_device_can_take_another_clients_session(facility) -> None:
    """A device connecting with the server's (or another device's) client id gets its own login as
    client id: the server and the other device stay connected."""
    broker, passwords = facility
    server = Client(broker, SERVER_USER, passwords[SERVER_USER], client_id="mgs-server-ingest")
    server.subscribe("mgs/#")
    rack_b = Client(broker, "rack-b", passwords["rack-b"], client_id="rack-b")
    for stolen in ("mgs-server-ingest", SERVER_USER, "rack-b"):
        thief = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=stolen, protocol=mqtt.MQTTv5)
        thief.username_pw_set("rack-a", passwords["rack-a"])
        thief.connect(broker.host, broker.port)
        thief.loop_start()
        try:
            wait_for(thief.is_connected, what=f"rack-a to connect as {stolen!r}")
            thief.publish("mgs/rack-a/box/0/state", stolen.encode(), qos=1).wait_for_publish(10)
        finally:
            thief.disconnect()
            thief.loop_stop()
    assert not rack_b.publish("mgs/rack-b/box/0/state", b"still here").is_failure
    wait_for(lambda: ("mgs/rack-b/box/0/state", b"still here") in server.received, what="rack-b's marker at the server")
    assert (server.disconnects, rack_b.disconnects) == (0, 0)
    assert [p for t, p in server.received if t == "mgs/rack-a/box/0/state"] == [
        b"mgs-server-ingest",
        b"mgs-server",
        b"rack-b",
    ]
    server.close()
    rack_b.close()
