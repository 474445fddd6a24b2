"""`mgs-server run --config server.toml`: database migrations, MQTT ingest (with the alert rules)
and the dashboard/API served by waitress, in one process.

Waitress refuses every request body over `[http] max_request_kb` before the app sees it (it cannot
tell paths apart, and it reads or spools a whole body before any login check), so that limit stays
small for every request: a larger one would let anyone who reaches the port fill the disk. Videos and
model sets arrive in pieces under it instead (`server.chunked_upload`).

SIGTERM (systemd stop) and Ctrl-C stop the web server first, then the ingest worker, which writes
every message it has already received before the process exits.
"""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

from mgs_core.errors import MgsError
from server.config import ServerConfig, load_server_config

log = logging.getLogger("mgs-server")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="server.toml", help="server config file (default: server.toml)")


def run(args: argparse.Namespace) -> int:
    import waitress

    from server.app import create_app
    from server.ingest import IngestWorker

    config = load_server_config(args.config)
    app = create_app(config)
    _warn_if_no_admin(config, args.config)
    try:
        server = waitress.create_server(
            app,
            host=config.http.host,
            port=config.http.port,
            threads=config.http.threads,
            ident="mgs-rack",
            max_request_body_size=config.http.max_request_kb * 1024,
        )
    except OSError as exc:
        raise MgsError(
            f"cannot listen on {config.http.host}:{config.http.port}: {exc.strerror}; "
            "another program uses the port? change [http] port"
        ) from None
    worker = IngestWorker(config.ingest, config.database.path)
    app.extensions["mgs_ingest"] = worker  # the overview warns while it cannot reach the broker
    worker.start()
    previous = signal.signal(signal.SIGTERM, _stop)
    log.info(
        "dashboard and API on http://%s:%s/ (database %s, broker %s:%s)",
        config.http.host,
        server.effective_port,
        config.database.path,
        config.ingest.host,
        config.ingest.port,
    )
    try:
        server.run()  # returns after SIGTERM / Ctrl-C (waitress catches SystemExit and KeyboardInterrupt)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.close()
        log.info("web server stopped; writing what the ingest worker still holds")
        worker.stop()
        log.info("stopped cleanly (%s)", ", ".join(f"{k} {v}" for k, v in sorted(worker.stats().items())))
    return 0


def _stop(signum: int, frame: FrameType | None) -> None:
    log.info("received signal %d, stopping", signum)
    raise SystemExit(0)


def _warn_if_no_admin(config: ServerConfig, config_path: str) -> None:
    from server.auth import has_admin
    from server.db import connect

    db = connect(config.database.path, migrate_schema=False)
    try:
        if not has_admin(db):
            log.warning(
                "no admin user yet: create one with `mgs-server create-user NAME --role admin --config %s`", config_path
            )
    finally:
        db.conn.close()
