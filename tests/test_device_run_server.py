"""Device process -> Mosquitto -> server ingest -> SQLite: every window stored exactly once.

The whole delivery chain with its faults: a broker restart while the device scores, then the
device killed with SIGKILL and started again. The server's table must hold each (device, seq)
once, with no gap from 1 to the last seq the device handed out.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.conftest import Broker, wait_for
from tests.ingest_support import running_worker
from tests.test_device_run import DEVICE, finish, outbox_rows, rack_video, start, write_config  # noqa: F401


def stored(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [r[0] for r in conn.execute("SELECT seq FROM score_windows WHERE device = ? ORDER BY seq", (DEVICE,))]


def last_seq(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "outbox.sqlite") as conn:
        return conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0]


def test_broker_restart_and_device_kill_still_store_every_window_once(tmp_path: Path, rack_video) -> None:  # noqa: F811
    video, rois = rack_video
    (tmp_path / "mqtt").mkdir()
    # The broker keeps the server's persistent session across its restart, as Debian's mosquitto.conf does.
    broker = Broker(tmp_path, extra_config=f"persistence true\npersistence_location {tmp_path / 'mqtt'}/\nuser root\n")
    broker.start()
    db = tmp_path / "server.sqlite"
    config = write_config(tmp_path, broker.port, video, rois)
    try:
        with running_worker(broker, db):
            device = start(config)
            try:
                wait_for(lambda: len(stored(db)) >= 8, 60, what="windows stored by the server")
                broker.stop()
                seq_at_outage = last_seq(tmp_path)
                wait_for(lambda: last_seq(tmp_path) >= seq_at_outage + 8, 30, what="windows queued during the outage")
                broker.start()
                wait_for(
                    lambda: len(stored(db)) >= last_seq(tmp_path) - 4, 60, what="the backlog stored after the restart"
                )
            finally:
                device.kill()
                device.wait(timeout=10)
            killed_at = last_seq(tmp_path)
            device = start(config)
            try:
                wait_for(lambda: max(stored(db), default=0) > killed_at + 8, 60, what="new windows after the kill")
            finally:
                assert finish(device) == 0
            final = last_seq(tmp_path)
            wait_for(lambda: len(stored(db)) >= final, 30, what="every window at the server")
    finally:
        broker.stop()
    seqs = stored(db)
    assert seqs == list(range(1, final + 1))  # once each (the table is keyed by device and seq), no gap
    assert outbox_rows(tmp_path) == 0
