"""`mgs-server create-token USER --name WHAT`: an API token for a script, acting as USER.

The token is printed once; the database keeps only its SHA-256. Revoke it on the dashboard's
Users & tokens page.
"""

from __future__ import annotations

import argparse

from mgs_core.errors import MgsError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user", help="existing login the token acts as (its role decides what the token may do)")
    parser.add_argument("--name", required=True, help="what uses the token, e.g. 'alerting script'")
    parser.add_argument("--config", default="server.toml", help="server config file (default: server.toml)")


def run(args: argparse.Namespace) -> int:
    from server.auth import create_token
    from server.config import load_server_config
    from server.db import connect

    config = load_server_config(args.config)
    db = connect(config.database.path)
    try:
        row = db.execute("SELECT id FROM users WHERE username = ?", [args.user]).fetchone()
        if row is None:
            raise MgsError(f"user {args.user!r} does not exist; create it first with `mgs-server create-user`")
        token = create_token(db, row[0], args.name)
    finally:
        db.conn.close()
    print(token)
    return 0
