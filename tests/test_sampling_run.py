"""`mgs-device run` and `mgs-server run` as real processes: review samples wait on the device's disk
while the server is down, then arrive once each, and the device's queue empties."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from server.auth import create_device_token
from server.db import connect
from tests.conftest import Broker, free_port, wait_for
from tests.test_device_run import DEVICE, finish, rack_video, start, write_config  # noqa: F401
from tests.test_server_run import http_status
from tests.test_server_run import write_config as write_server_config


def queued(path: Path) -> list[str]:
    try:
        with sqlite3.connect(path) as db:
            return [r[0] for r in db.execute("SELECT sample_key FROM samples ORDER BY id")]
    except sqlite3.OperationalError:
        return []


def at_server(db: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT sample_key, (SELECT COUNT(*) FROM sample_images i WHERE i.sample_id = s.id) FROM samples s "
            "WHERE device = ?",
            (DEVICE,),
        ).fetchall()


def test_samples_queue_while_the_server_is_down_then_arrive_exactly_once(
    tmp_path: Path,
    broker: Broker,
    rack_video,  # noqa: F811
) -> None:
    video, rois = rack_video
    http_port = free_port()
    server_config = write_server_config(tmp_path, broker.port, http_port)
    db = connect(tmp_path / "server.sqlite")
    token_file = tmp_path / "server-token"
    token_file.write_text(create_device_token(db, DEVICE) + "\n")
    db.conn.close()
    queue = tmp_path / "samples.sqlite"
    extra = (
        f'[server]\nurl = "http://127.0.0.1:{http_port}"\ntoken_file = "{token_file}"\ntimeout_s = 5\n'
        f'[sampling]\nshare = 1.0\nmin_interval_s = 0\nretry_max_s = 1\npath = "{queue}"\n'
    )
    local = free_port()
    device = start(write_config(tmp_path, broker.port, video, rois, extra=extra, http_port=local))
    server = None
    try:
        wait_for(lambda: len(queued(queue)) >= 6 or device.poll() is not None, 60, what="samples queued on disk")
        assert device.poll() is None, (tmp_path / "device.log").read_text()
        waiting = queued(queue)
        server = subprocess.Popen(
            [sys.executable, "-m", "server.cli", "run", "--config", str(server_config)],
            stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / "server.log", "ab"),
        )
        wait_for(lambda: http_status(f"http://127.0.0.1:{http_port}/login") == 200, 30, what="the server")
        wait_for(
            lambda: set(waiting) <= {k for k, _ in at_server(tmp_path / "server.sqlite")} and not queued(queue),
            40,
            what="every queued sample at the server and the device queue empty",
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/health", timeout=5) as response:
            health = json.load(response)["samples"]
        assert health["uploaded"] >= len(waiting) and health["refused"] == 0 and health["last_error"] == ""
    finally:
        code = finish(device)
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    assert code == 0, (tmp_path / "device.log").read_text()[-3000:]
    stored = at_server(tmp_path / "server.sqlite")
    keys = [k for k, _ in stored]
    assert len(keys) == len(set(keys))  # exactly once
    assert all(images == 2 for _, images in stored)
    assert not set(keys) & set(queued(queue))  # nothing stored is still waiting to be sent again
    log = (tmp_path / "device.log").read_text()
    assert "review sampling on" in log and "sample upload failed, will retry" in log
    assert "sample upload works again" in log
