"""Helpers shared by the web tests: an app over a temporary SQLite file, users, logins, stored data."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from mgs_core.messages import BoxAlert, DeviceStatus, ScoreWindow, utc_iso
from server import auth
from server.app import create_app
from server.config import DashboardConfig, DatabaseConfig, ServerConfig
from server.db import connect
from server.repository import Repository
from server.store import IngestStore
from tests.ingest_support import SHA, window

PASSWORD = "correct horse battery"


def make_app(tmp_path: Path, **dashboard: Any) -> Flask:
    config = ServerConfig(
        database=DatabaseConfig(path=tmp_path / "server.sqlite"), dashboard=DashboardConfig(**dashboard)
    )
    return create_app(config, {"TESTING": True, "SECRET_KEY": "test-secret-" + "x" * 32})


def add_user(app: Flask, name: str, role: str, password: str = PASSWORD) -> int:
    db = connect(app.config["DATABASE"])
    try:
        return auth.create_user(db, name, password, role)
    finally:
        db.conn.close()


def add_token(app: Flask, user_id: int, name: str = "test script") -> str:
    db = connect(app.config["DATABASE"])
    try:
        return auth.create_token(db, user_id, name)
    finally:
        db.conn.close()


def add_device_token(app: Flask, device: str) -> str:
    db = connect(app.config["DATABASE"])
    try:
        return auth.create_device_token(db, device)
    finally:
        db.conn.close()


def csrf(client: FlaskClient) -> str:
    """The session's CSRF token, as a page would have embedded it."""
    page = client.get("/login").get_data(as_text=True)
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match, "pages must carry the CSRF token"
    return match.group(1)


def login(client: FlaskClient, name: str, password: str = PASSWORD) -> Any:
    return client.post("/login", data={"username": name, "password": password, "csrf_token": csrf(client)})


def logged_in(app: Flask, role: str, name: str | None = None) -> FlaskClient:
    """A test client logged in as a new user with `role` (named after the role unless given)."""
    name = name or role
    add_user(app, name, role)
    client = app.test_client()
    response = login(client, name)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def repo_call(app: Flask, method: str, *args: Any, **kwargs: Any) -> Any:
    """Run one Repository method on its own connection, as the ingest worker or a script would."""
    db = connect(app.config["DATABASE"])
    try:
        return getattr(Repository(db), method)(*args, **kwargs)
    finally:
        db.conn.close()


def store(
    app: Flask, *windows: ScoreWindow, alerts: tuple[BoxAlert, ...] = (), statuses: tuple[DeviceStatus, ...] = ()
) -> None:
    """Write through the ingest writer's own store calls (in one transaction, like a batch)."""
    db = connect(app.config["DATABASE"])
    try:
        ingest = IngestStore(db)
        with ingest.write():
            ingest.store_windows(list(windows), time.time())
            ingest.store_device_alerts(list(alerts), time.time())
            for status in statuses:
                ingest.store_status(status, time.time())
            ingest.store_availability(windows[0].device if windows else "rack1", "online", time.time())
    finally:
        db.conn.close()


def recent_window(
    device: str = "rack1", box: int = 0, seq: int = 0, age_s: float = 1.0, score: float | None = 3.0
) -> ScoreWindow:
    """A window that ended `age_s` seconds ago."""
    return window(device, box, seq, time.time() - age_s - 1.0, score)


def alert(
    device: str = "rack1", box: int = 0, seq: int = 1000, event: str = "raised", score: float | None = 7.5
) -> BoxAlert:
    return BoxAlert(
        device=device,
        box=box,
        seq=seq,
        event=event,
        time=utc_iso(time.time()),
        threshold=6.0,
        duration_s=60.0,
        score=score,
    )


def status(device: str = "rack1", fps: float = 21.5, queue_depth: int = 3) -> DeviceStatus:
    return DeviceStatus(
        device=device,
        time=utc_iso(time.time()),
        fps=fps,
        target_fps=20.0,
        backend="local",
        camera="ok",
        queue_depth=queue_depth,
        uptime_s=3600.0,
        version="0.1.0",
        models={"unet": SHA, "eye": SHA},
    )
