"""Broker logins and ACL entries for the facility's MQTT clients, and a ready config per device.

Every client of the broker logs in with its own password and may use only its own topics: a device
writes its availability, status and box topics under `<prefix>/<device>/` and nowhere else, and
reads only `<prefix>/<device>/stored`, which only the server may write, so a misconfigured or
compromised edge box can neither publish scores in another device's name nor tell any device that
its windows are stored. The shipped broker config makes the login the client id, so no client can
take over another's session. The files are Mosquitto's own formats (the
PBKDF2-SHA512 password file of `mosquitto_passwd` and a `user`/`topic` ACL file), written here in
Python so provisioning needs neither `mosquitto_passwd` nor root on the machine that runs it; the
broker picks up changes on `systemctl reload mosquitto`.
"""

from __future__ import annotations

import base64
import grp
import hashlib
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tomlkit

from mgs_core.errors import MessageError, MgsError
from mgs_core.messages import DEFAULT_PREFIX, validate_name, validate_prefix

Role = Literal["device", "server", "consumer"]
ROLES: tuple[Role, ...] = ("device", "server", "consumer")

SERVER_USER = "mgs-server"
CONSUMER_USER = "mgs-alerts"
ALERTS_LEVEL = "alerts"
# `<prefix>/alerts/#` is where the server publishes; a device of that name would collide with it.
RESERVED_DEVICE_NAMES = frozenset({ALERTS_LEVEL, SERVER_USER, CONSUMER_USER})

# Mosquitto 2.0's `$7$` format: PBKDF2-HMAC-SHA512, 12-byte salt, 101 iterations by default.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12
_USER_LINE = re.compile(r"^user\s+(\S+)\s*$")


def new_password() -> str:
    """A random broker password (192 bits, URL-safe so it needs no quoting in TOML or a shell)."""
    return secrets.token_urlsafe(24)


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """The password-file hash `mosquitto_passwd` writes for `password`."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def acl_rules(name: str, role: Role, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The ACL `topic` lines a login of `role` gets."""
    if role == "device":
        return [
            f"topic write {prefix}/{name}/availability",
            f"topic write {prefix}/{name}/status",
            f"topic write {prefix}/{name}/box/#",
            f"topic write {prefix}/{name}/model_event",
            f"topic read {prefix}/{name}/stored",
            f"topic read {prefix}/{name}/model",
        ]
    if role == "server":
        return [
            f"topic read {prefix}/#",
            f"topic write {prefix}/{ALERTS_LEVEL}/#",
            f"topic write {prefix}/+/stored",
            f"topic write {prefix}/+/model",
        ]
    return [f"topic read {prefix}/#"]


def set_password(path: Path, user: str, password: str) -> None:
    """Add `user` to the Mosquitto password file at `path`, or replace its hash."""
    lines = _read_lines(path)
    entry = f"{user}:{mosquitto_hash(password)}"
    kept = [line for line in lines if line.split(":", 1)[0] != user]
    _write_atomic(path, "".join(f"{line}\n" for line in kept + [entry]))


def set_acl(path: Path, user: str, rules: list[str]) -> None:
    """Give `user` exactly `rules` in the ACL file at `path`, replacing the block it had."""
    lines = _read_lines(path)
    start = next((i for i, line in enumerate(lines) if _is_user_line(line, user)), None)
    block = [f"user {user}", *rules]
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines.extend(block)
    else:
        end = start + 1
        while end < len(lines) and lines[end].strip().startswith("topic"):
            end += 1
        lines[start:end] = block
    _write_atomic(path, "".join(f"{line}\n" for line in lines))


def acl_users(path: Path) -> list[str]:
    """Logins that have a block in the ACL file (for listings and tests)."""
    return [m.group(1) for line in _read_lines(path) if (m := _USER_LINE.match(line.strip()))]


def _is_user_line(line: str, user: str) -> bool:
    m = _USER_LINE.match(line.strip())
    return bool(m and m.group(1) == user)


def check_login_name(name: str, role: Role) -> str:
    """Refuse names that would break topics or collide with the server's own namespace."""
    try:
        validate_name(name, "device name" if role == "device" else "login name")
    except MessageError as exc:
        raise MgsError(str(exc)) from None
    if role == "device" and name in RESERVED_DEVICE_NAMES:
        raise MgsError(f"device name {name!r} is reserved (the server and alert consumers use it); choose another name")
    return name


@dataclass(frozen=True)
class BrokerFiles:
    """Where the broker's password and ACL files live (see systemd/mosquitto/mgs.conf)."""

    password_file: Path = Path("/etc/mosquitto/mgs.passwd")
    acl_file: Path = Path("/etc/mosquitto/mgs.acl")


def add_login(
    files: BrokerFiles, name: str, role: Role, prefix: str = DEFAULT_PREFIX, password: str | None = None
) -> str:
    """Create or renew the broker login `name` with the rights of `role`; returns its password."""
    check_login_name(name, role)
    try:
        validate_prefix(prefix)
    except MessageError as exc:
        raise MgsError(str(exc)) from None
    password = new_password() if password is None else password
    set_password(files.password_file, name, password)
    set_acl(files.acl_file, name, acl_rules(name, role, prefix))
    return password


def _read_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MgsError(
            f"cannot read {path}: {exc.strerror}; run as a user that may edit the broker's files (e.g. with sudo)"
        ) from None


def _write_atomic(path: Path, text: str) -> None:
    """Replace `path` in one step, keeping its owner, group and mode (the broker must still read it).

    A new file gets mode 0640 and, where the group exists, group `mosquitto`: the broker re-reads
    these files as its unprivileged user on reload, and they hold password hashes.
    """
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    except OSError as exc:
        raise MgsError(f"cannot write in {path.parent}: {exc.strerror}; run with sudo or choose other files") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if old is not None:
            os.chmod(tmp, old.st_mode & 0o7777)
            _chown_if_root(tmp, old.st_uid, old.st_gid)
        else:
            os.chmod(tmp, 0o640)
            _chown_if_root(tmp, -1, _group_id("mosquitto"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return -1


def _chown_if_root(path: str, uid: int, gid: int) -> None:
    if os.geteuid() == 0 and (uid != -1 or gid != -1):
        os.chown(path, uid, gid)


# --- the files a new device gets ------------------------------------------------------------------

DEVICE_CONFIG_DIR = Path("/etc/mgs-rack")
DEVICE_STATE_DIR = Path("/var/lib/mgs-device")
PASSWORD_FILE_NAME = "mqtt-password"
TOKEN_FILE_NAME = "server-token"
SERVER_CONFIG_DIR = Path("/etc/mgs-rack")
SERVER_PASSWORD_FILE_NAME = "mqtt-server-password"


def toml_table(**values: object) -> tomlkit.items.Table:
    """A TOML table of `values`; tomlkit quotes and escapes them."""
    table = tomlkit.table()
    table.update(values)
    return table


def render_device_config(
    name: str,
    broker_host: str,
    broker_port: int,
    prefix: str,
    camera: str,
    config_dir: Path = DEVICE_CONFIG_DIR,
    created: str = "",
    server_url: str = "",
) -> str:
    """A `device.toml` for a new edge box: broker login filled in, boxes left for detect-boxes.

    Everything not written here keeps the defaults of `device.config.DeviceConfig` (docs/device-pipeline.md).
    """
    doc = tomlkit.document()
    for line in (
        f"device.toml for the edge box {name!r}, written by `mgs-server provision-device`{created}.",
        f"Install on the edge box as {config_dir / 'device.toml'} (mode 0640, group mgs) next to",
        f"{config_dir / PASSWORD_FILE_NAME}, then let the device find the boxes of its rack:",
        "  sudo systemctl stop mgs-device",
        f"  sudo -u mgs mgs-device detect-boxes --config {config_dir / 'device.toml'} --source {camera}",
        "and start it: sudo systemctl enable --now mgs-device (see docs/install.md).",
    ):
        doc.add(tomlkit.comment(line))
    doc.add("name", name)
    doc.add(
        "mqtt",
        toml_table(
            host=broker_host,
            port=broker_port,
            prefix=prefix,
            username=name,
            password_file=str(config_dir / PASSWORD_FILE_NAME),
        ),
    )
    doc.add("camera", toml_table(source=camera))
    doc.add("rois", toml_table(expected=4, boxes=[]))
    doc.add("outbox", toml_table(path=str(DEVICE_STATE_DIR / "outbox.sqlite")))
    if server_url:
        doc.add("server", toml_table(url=server_url, token_file=str(config_dir / TOKEN_FILE_NAME)))
    return tomlkit.dumps(doc)


def render_ingest_config(
    name: str, broker_host: str, broker_port: int, prefix: str, config_dir: Path = SERVER_CONFIG_DIR
) -> str:
    """The `[ingest]` lines of server.toml for the server's own broker login.

    The password itself goes into `SERVER_PASSWORD_FILE_NAME` beside server.toml, so server.toml
    can be shown or copied without handing out the login.
    """
    doc = tomlkit.document()
    doc.add(
        "ingest",
        toml_table(
            host=broker_host,
            port=broker_port,
            prefix=prefix,
            username=name,
            password_file=str(config_dir / SERVER_PASSWORD_FILE_NAME),
        ),
    )
    return tomlkit.dumps(doc)


def write_private(path: Path, text: str) -> None:
    """A file only its owner may read: it holds a password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)
