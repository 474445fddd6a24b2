"""`mgs-server create-user NAME --role ROLE`: add a dashboard login.

The password is asked twice on the terminal, or read from standard input with --password-stdin
(for provisioning scripts), never taken from the command line where `ps` and shell history see it.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from mgs_core.errors import MgsError
from server.repository import ROLES


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="login name (letters, digits, '_', '-', '.')")
    parser.add_argument(
        "--role",
        choices=ROLES,
        default="viewer",
        help="viewer: sees everything; officer: also acknowledges alerts and edits assignments; "
        "admin: also manages users and tokens (default: viewer)",
    )
    parser.add_argument("--password-stdin", action="store_true", help="read the password from the first line of stdin")
    parser.add_argument("--config", default="server.toml", help="server config file (default: server.toml)")


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Repeat password: ") != first:
        raise MgsError("the two passwords differ; nothing was changed")
    return first


def run(args: argparse.Namespace) -> int:
    from server.auth import create_user
    from server.config import load_server_config
    from server.db import connect

    config = load_server_config(args.config)
    password = read_password(args.password_stdin)
    db = connect(config.database.path)
    try:
        create_user(db, args.name, password, args.role)
    finally:
        db.conn.close()
    print(f"created {args.role} {args.name!r} in {config.database.path}")
    return 0
