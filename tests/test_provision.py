"""`mgs-server provision-device`: password and ACL files in Mosquitto's formats, and the device.toml.

Whether the broker accepts these files is tested against a real Mosquitto in test_acl_broker.py.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

from device.config import DeviceConfig
from mgs_core.tomlconfig import from_dict
from server.cli import main
from server.ingest import IngestConfig
from server.provision import BrokerFiles, acl_users, add_login, mosquitto_hash, set_acl

ACL_TEMPLATE = Path(__file__).resolve().parent.parent / "systemd" / "mosquitto" / "mgs.acl"


def _verify(password_file: Path, user: str, password: str) -> bool:
    """Check a password the way Mosquitto does: PBKDF2-SHA512 with the stored salt and iterations."""
    for line in password_file.read_text().splitlines():
        name, _, stored = line.partition(":")
        if name == user:
            _, kind, iterations, salt, digest = stored.split("$")
            assert kind == "7"
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations), 64)
            return base64.b64encode(got).decode() == digest
    return False


def _provision(tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "provision-device",
            *extra,
            "--password-file",
            str(tmp_path / "mgs.passwd"),
            "--acl-file",
            str(tmp_path / "mgs.acl"),
        ]
    )


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd is not installed")
def test_hash_matches_mosquitto_passwd(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(reference), "rack-a", "s3cret"], check=True, timeout=30)
    _, kind, iterations, salt, _ = reference.read_text().strip().split(":", 1)[1].split("$")
    ours = mosquitto_hash("s3cret", base64.b64decode(salt), int(iterations))
    assert ours == reference.read_text().strip().split(":", 1)[1]


def test_provision_writes_login_acl_and_a_loadable_device_config(tmp_path: Path, capsys) -> None:
    shutil.copy(ACL_TEMPLATE, tmp_path / "mgs.acl")
    out = tmp_path / "out"
    assert (
        _provision(tmp_path, "rack-a", "--broker-host", "broker.lab", "--camera", "picamera2", "--out", str(out)) == 0
    )
    password = (out / "mqtt-password").read_text().strip()
    assert len(password) >= 24 and _verify(tmp_path / "mgs.passwd", "rack-a", password)
    assert stat.S_IMODE((out / "mqtt-password").stat().st_mode) == 0o600
    assert acl_users(tmp_path / "mgs.acl") == ["mgs-server", "mgs-alerts", "rack-a"]
    assert (
        "user rack-a\ntopic write mgs/rack-a/availability\ntopic write mgs/rack-a/status\n"
        "topic write mgs/rack-a/box/#\ntopic write mgs/rack-a/model_event\n"
        "topic read mgs/rack-a/stored\ntopic read mgs/rack-a/model\n"
    ) in (tmp_path / "mgs.acl").read_text()

    data = tomllib.loads((out / "device.toml").read_text())
    assert data["rois"]["boxes"] == []  # detect-boxes fills these in on the device
    data["rois"]["boxes"] = [[10, 10, 400, 600]]
    config = from_dict(DeviceConfig, data, source="device.toml")
    assert (config.name, config.mqtt.host, config.mqtt.username) == ("rack-a", "broker.lab", "rack-a")
    assert config.camera.source == "picamera2"
    assert str(config.mqtt.password_file) == "/etc/mgs-rack/mqtt-password"
    assert "reload mosquitto" in capsys.readouterr().out


def test_provisioning_again_rotates_the_password_and_keeps_one_entry(tmp_path: Path) -> None:
    files = BrokerFiles(tmp_path / "mgs.passwd", tmp_path / "mgs.acl")
    first = add_login(files, "rack-a", "device")
    add_login(files, "rack-b", "device")
    second = add_login(files, "rack-a", "device")
    assert first != second
    assert not _verify(files.password_file, "rack-a", first) and _verify(files.password_file, "rack-a", second)
    assert [line.split(":")[0] for line in files.password_file.read_text().splitlines()] == ["rack-b", "rack-a"]
    assert acl_users(files.acl_file) == ["rack-a", "rack-b"]
    assert files.acl_file.read_text().count("topic write mgs/rack-a/box/#") == 1


def test_acl_block_is_replaced_not_appended(tmp_path: Path) -> None:
    acl = tmp_path / "mgs.acl"
    acl.write_text(
        "# comment kept\nuser rack-a\ntopic readwrite old/rack-a/#\ntopic read old/#\n\nuser rack-b\ntopic readwrite mgs/rack-b/#\n"
    )
    set_acl(acl, "rack-a", ["topic readwrite mgs/rack-a/#"])
    assert acl.read_text() == (
        "# comment kept\nuser rack-a\ntopic readwrite mgs/rack-a/#\n\nuser rack-b\ntopic readwrite mgs/rack-b/#\n"
    )


def test_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    files = BrokerFiles(tmp_path / "mgs.passwd", tmp_path / "mgs.acl")
    files.password_file.write_text("")
    files.password_file.chmod(0o604)
    add_login(files, "rack-a", "device")
    assert stat.S_IMODE(files.password_file.stat().st_mode) == 0o604
    assert stat.S_IMODE(files.acl_file.stat().st_mode) == 0o640  # a new file: not world-readable


@pytest.mark.parametrize("name", ["alerts", "mgs-server", "rack/a", "rack+", "#", "", "a b"])
def test_unsafe_or_reserved_device_names_are_refused(tmp_path: Path, name: str, capsys) -> None:
    assert _provision(tmp_path, name, "--out", str(tmp_path / "out")) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "mgs.passwd").exists() and not (tmp_path / "out").exists()


def test_bad_broker_host_is_refused_before_anything_is_written(tmp_path: Path, capsys) -> None:
    assert _provision(tmp_path, "rack-a", "--broker-host", "a host", "--out", str(tmp_path / "out")) == 2
    assert "--broker-host" in capsys.readouterr().err
    assert not (tmp_path / "mgs.passwd").exists()


def test_server_role_gets_an_ingest_section_with_its_password_in_a_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _provision(tmp_path, "mgs-server", "--role", "server", "--broker-host", "127.0.0.1", "--out", str(out)) == 0
    text = (out / "ingest.toml").read_text()
    ingest = from_dict(IngestConfig, tomllib.loads(text)["ingest"], source="ingest.toml")
    assert ingest.username == "mgs-server" and not ingest.password
    assert ingest.password_file == Path("/etc/mgs-rack/mqtt-server-password")
    secret = out / "mqtt-server-password"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    password = secret.read_text().strip()
    assert password not in text and _verify(tmp_path / "mgs.passwd", "mgs-server", password)
    assert "user mgs-server\ntopic read mgs/#\ntopic write mgs/alerts/#\n" in (tmp_path / "mgs.acl").read_text()


def test_registering_the_device_with_the_server(tmp_path: Path) -> None:
    from server.auth import device_for_token
    from server.db import connect
    from server.repository import Repository

    (tmp_path / "server.toml").write_text('[database]\npath = "facility.sqlite"\n')
    out = tmp_path / "out"
    assert (
        _provision(
            tmp_path,
            "rack-a",
            "--out",
            str(out),
            "--server-config",
            str(tmp_path / "server.toml"),
            "--server-url",
            "https://mgs.lab.example:8080",
        )
        == 0
    )
    token = (out / "server-token").read_text().strip()
    assert stat.S_IMODE((out / "server-token").stat().st_mode) == 0o600
    server_link = tomllib.loads((out / "device.toml").read_text())["server"]
    assert server_link == {"url": "https://mgs.lab.example:8080", "token_file": "/etc/mgs-rack/server-token"}
    db = connect(tmp_path / "facility.sqlite")
    try:
        assert Repository(db).known_devices() == {"rack-a"}
        assert device_for_token(db, token) == "rack-a"
        assert device_for_token(db, token + "x") is None
    finally:
        db.close()


def test_server_url_without_server_config_is_refused(tmp_path: Path, capsys) -> None:
    assert _provision(tmp_path, "rack-a", "--out", str(tmp_path / "out"), "--server-url", "https://mgs.lab") == 2
    assert "--server-url needs --server-config" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_config_examples_in_the_install_guide_load() -> None:
    """The TOML a technician copies from docs/install.md must pass the real config loaders."""
    from device.gpu_host import GpuHostConfig
    from server.config import ServerConfig

    guide = (Path(__file__).resolve().parent.parent / "docs" / "install.md").read_text()
    blocks = [tomllib.loads(b) for b in re.findall(r"```toml\n(.*?)```", guide, flags=re.S)]
    server = [b for b in blocks if "database" in b]
    gpu_host = [b for b in blocks if "bind" in b]
    assert len(server) == 1 and len(gpu_host) == 1
    config = from_dict(ServerConfig, server[0], source="docs/install.md")
    assert str(config.database.path).startswith("/var/lib/mgs-server/")  # the unit's only writable place
    from_dict(GpuHostConfig, gpu_host[0], source="docs/install.md")
