"""The publisher against the production broker config: device login from a password file, ACL."""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from device.outbox import Outbox
from device.publisher import MqttConfig, Publisher
from mgs_core.broker import TlsConfig
from server.db import connect as connect_db
from server.provision import CONSUMER_USER, SERVER_USER
from tests.conftest import Broker, wait_for
from tests.ingest_support import running_worker
from tests.test_acl_broker import connect, facility  # noqa: F401  (fixtures: the secured broker and its logins)
from tests.test_publisher import enqueue_windows, status_of

DEVICE = "rack-a"


def publisher(broker, outbox: Outbox, **kw) -> Publisher:
    config = MqttConfig(host=broker.host, port=broker.port, username=DEVICE, reconnect_max_s=2, **kw)
    return Publisher(DEVICE, config, outbox, status_of(outbox, DEVICE), status_interval_s=0.5)


def test_device_login_from_password_file_publishes_everything_within_its_acl(facility, connect, tmp_path: Path) -> None:  # noqa: F811
    broker, passwords = facility
    consumer = connect(CONSUMER_USER)  # reads every device topic, as the server does
    consumer.subscribe("mgs/#")
    secret = tmp_path / "mqtt-password"
    secret.write_text(passwords[DEVICE] + "\n")
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = publisher(broker, outbox, password_file=secret)
    pub.start()
    db = tmp_path / "server.db"
    server_secret = tmp_path / "server-password"
    server_secret.write_text(passwords[SERVER_USER] + "\n")
    try:
        with running_worker(broker, db, username=SERVER_USER, password_file=server_secret):
            wait_for(pub.connected.is_set, 10, what="the device to log in")
            enqueue_windows(outbox, 1_700_000_000.0, device=DEVICE)
            pub.publish_state(0, 2.5)
            pub.notify()
            expected = {f"mgs/{DEVICE}/availability", f"mgs/{DEVICE}/status", f"mgs/{DEVICE}/box/0/state"} | {
                f"mgs/{DEVICE}/box/{b}/score" for b in range(4)
            }
            wait_for(lambda: expected <= set(consumer.topics()), 10, what="every device topic at the consumer")
            wait_for(lambda: outbox.stats().depth == 0, 10, what="the outbox to drain once the server stored it")
            enqueue_windows(outbox, 1_700_000_001.0, device="rack-b")  # another device's name: the ACL refuses it
            enqueue_windows(outbox, 1_700_000_002.0, device=DEVICE)
            pub.notify()
            wait_for(
                lambda: len([t for t in consumer.topics() if t.endswith("/score")]) == 8,
                10,
                what="the next own windows",
            )
            wait_for(lambda: pub.refused == 4, 5, what="four refusals")
            assert not any("rack-b" in t for t in consumer.topics())
            assert "refused" in pub.last_error and "MQTT login" in pub.last_error
            # Kept, not lost; the own windows behind them stay too, since the server's ack covers
            # only what it has without a gap.
            assert [json.loads(r.payload)["device"] for r in outbox.pending()] == ["rack-b"] * 4 + [DEVICE] * 4
    finally:
        pub.stop()
        outbox.close()
    stored = connect_db(db).execute("SELECT seq FROM score_windows ORDER BY seq").fetchall()
    assert [s for (s,) in stored] == [1, 2, 3, 4, 9, 10, 11, 12]


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


def make_certificates(d: Path) -> dict[str, Path]:
    """A throw-away CA and a broker certificate for 127.0.0.1 (openssl, as a facility would)."""
    ca_key, ca, key, csr, cert, ext = (
        d / n for n in ("ca.key", "ca.pem", "broker.key", "broker.csr", "broker.pem", "san.ext")
    )
    ext.write_text("subjectAltName = IP:127.0.0.1\n")
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)  # noqa: E731
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "2",
        "-subj",
        "/CN=mgs-test-ca",
    )
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    run(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    for p in (key, cert, ca):
        p.chmod(0o644)
    return {"ca": ca, "cert": cert, "key": key}


def tls_listener(certs: dict[str, Path]) -> str:
    # `user` keeps a broker started by root able to read pytest's private tmp dir.
    return f"cafile {certs['ca']}\ncertfile {certs['cert']}\nkeyfile {certs['key']}\nuser {getpass.getuser()}\n"


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_tls_with_the_facility_ca(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    broker = Broker(tmp_path, extra_config=tls_listener(certs))
    broker.start()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = Publisher(
        DEVICE,
        MqttConfig(host="127.0.0.1", port=broker.port, tls=TlsConfig(enabled=True, ca=certs["ca"])),
        outbox,
        status_of(outbox, DEVICE),
    )
    pub.start()
    try:
        with running_worker(broker, tmp_path / "server.db", tls=TlsConfig(enabled=True, ca=certs["ca"])):
            enqueue_windows(outbox, 1_700_000_000.0, device=DEVICE)
            wait_for(lambda: outbox.stats().depth == 0, 15, what="windows stored and confirmed over TLS")
    finally:
        pub.stop()
        outbox.close()
        broker.stop()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
def test_tls_refuses_a_broker_the_ca_did_not_sign(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_certificates(tmp_path / "other")
    broker = Broker(tmp_path, extra_config=tls_listener(certs))
    broker.start()
    outbox = Outbox(tmp_path / "outbox.sqlite")
    pub = Publisher(
        DEVICE,
        MqttConfig(host="127.0.0.1", port=broker.port, reconnect_max_s=1, tls=TlsConfig(enabled=True, ca=other["ca"])),
        outbox,
        status_of(outbox, DEVICE),
    )
    pub.start()
    try:
        enqueue_windows(outbox, 1_700_000_000.0, device=DEVICE)
        wait_for(lambda: "certificate" in pub.last_error.lower(), 15, what="the certificate failure to be reported")
        assert not pub.connected.is_set() and outbox.stats().depth == 4
    finally:
        pub.stop(drain_timeout_s=0)
        outbox.close()
        broker.stop()
