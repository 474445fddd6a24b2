"""`mgs-server provision-device NAME`: broker login, ACL entry and a ready device.toml for a new edge box.

Run on the broker host (it edits Mosquitto's password and ACL files, usually with sudo). The same
command creates the server's own login (`--role server`) and logins for alert consumers
(`--role consumer`), so every client of the broker is set up one way.
"""

from __future__ import annotations

import argparse
import socket
import time
from pathlib import Path

from mgs_core.errors import MgsError
from mgs_core.messages import DEFAULT_PREFIX


def configure(parser: argparse.ArgumentParser) -> None:
    from server.provision import ROLES, BrokerFiles

    defaults = BrokerFiles()
    parser.add_argument("name", help="device name (becomes the topic level mgs/NAME/... and the broker login)")
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="device",
        help="device (default): writes only under mgs/NAME/#; server: reads all, writes mgs/alerts/#; "
        "consumer: reads all, writes nothing",
    )
    parser.add_argument(
        "--broker-host",
        default=socket.getfqdn(),
        help="broker address the device should connect to (default: this host's name)",
    )
    parser.add_argument("--broker-port", type=int, default=1883, help="broker port (default 1883; 8883 with TLS)")
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help=f"topic prefix (default {DEFAULT_PREFIX})")
    parser.add_argument(
        "--camera",
        default="0",
        help="camera source written into device.toml: 0 = first USB camera, picamera2, a file or URL",
    )
    parser.add_argument("--out", type=Path, help="folder for the new files (default ./provisioned/NAME)")
    parser.add_argument(
        "--password-file",
        type=Path,
        default=defaults.password_file,
        help=f"Mosquitto password file to update (default {defaults.password_file})",
    )
    parser.add_argument(
        "--acl-file",
        type=Path,
        default=defaults.acl_file,
        help=f"Mosquitto ACL file to update (default {defaults.acl_file})",
    )
    parser.add_argument(
        "--server-config",
        type=Path,
        help="server.toml: also register the device in the server's database (needed when [ingest] "
        "accept_unknown_devices = false) and create its HTTP token for review samples and model roll-outs",
    )
    parser.add_argument(
        "--server-url",
        default="",
        help="mgs-server address the device should use, e.g. https://mgs.lab.example:8080 "
        "(written into device.toml's [server] with --server-config)",
    )


def run(args: argparse.Namespace) -> int:
    from server import provision

    if not 1 <= args.broker_port <= 65535:
        raise MgsError(f"--broker-port {args.broker_port}: use 1-65535")
    if not args.broker_host or any(c.isspace() or c in "\"'\\/" for c in args.broker_host):
        raise MgsError(f"--broker-host {args.broker_host!r}: give a host name or address")
    provision.check_login_name(args.name, args.role)
    out: Path = args.out or Path("provisioned") / args.name
    files = provision.BrokerFiles(args.password_file, args.acl_file)

    if args.server_url and not args.server_url.startswith(("http://", "https://")):
        raise MgsError(f"--server-url {args.server_url!r} must start with https:// (or http://)")
    if args.server_url and (args.server_config is None or args.role != "device"):
        raise MgsError("--server-url needs --server-config (the device token is created in the server's database)")
    password = provision.add_login(files, args.name, args.role, args.prefix)
    print(f"broker login {args.name!r} ({args.role}) written to {files.password_file} and {files.acl_file}")
    written: list[Path] = []
    if args.role == "device":
        created = time.strftime(" on %Y-%m-%d %H:%M UTC", time.gmtime())
        text = provision.render_device_config(
            args.name,
            args.broker_host,
            args.broker_port,
            args.prefix,
            args.camera,
            created=created,
            server_url=args.server_url,
        )
        config_path = out / "device.toml"
        provision.write_private(config_path, text)
        provision.write_private(out / provision.PASSWORD_FILE_NAME, password + "\n")
        written = [config_path, out / provision.PASSWORD_FILE_NAME]
        if args.server_config is not None:
            token = _register(args.server_config, args.name)
            provision.write_private(out / provision.TOKEN_FILE_NAME, token + "\n")
            written.append(out / provision.TOKEN_FILE_NAME)
            print(f"device {args.name!r} registered in the server database of {args.server_config}, with a new token")
    elif args.role == "server":
        snippet = out / "ingest.toml"
        secret = out / provision.SERVER_PASSWORD_FILE_NAME
        provision.write_private(
            snippet, provision.render_ingest_config(args.name, args.broker_host, args.broker_port, args.prefix)
        )
        provision.write_private(secret, password + "\n")
        written = [snippet, secret]
    else:
        secret = out / f"{args.name}.password"
        provision.write_private(secret, password + "\n")
        written = [secret]
    for path in written:
        print(f"wrote {path} (mode 0600)")
    print("next: sudo systemctl reload mosquitto   (the broker re-reads both files without dropping clients)")
    if args.role == "device":
        print(f"then copy {out}/* to /etc/mgs-rack/ on the edge box and follow docs/install.md")
    elif args.role == "server":
        print(
            f"then merge the [ingest] lines into {provision.SERVER_CONFIG_DIR}/server.toml, install "
            f"{secret} as {provision.SERVER_CONFIG_DIR / provision.SERVER_PASSWORD_FILE_NAME} "
            "(owner mgs, mode 0600) and restart mgs-server"
        )
    return 0


def _register(server_config: Path, name: str) -> str:
    """Register the device and create its HTTP token; returns the token (stored only as a hash)."""
    from server.auth import create_device_token
    from server.config import load_server_config
    from server.db import connect
    from server.repository import Repository

    config = load_server_config(server_config)
    db = connect(config.database.path)
    try:
        Repository(db).register_device(name)
        return create_device_token(db, name)
    finally:
        db.close()
