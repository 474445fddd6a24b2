"""The app factory and `server.toml`: strict config, paths, the persisted session secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from mgs_core.errors import ConfigError
from server.app import create_app
from server.config import DatabaseConfig, ServerConfig, load_server_config, secret_key
from server.db import connect
from tests.web_support import add_user, csrf, login

REPO = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(text)
    return path


def test_the_example_config_loads() -> None:
    config = load_server_config(REPO / "server.example.toml")
    assert config.http.port == 8080
    assert config.database.path == Path("/var/lib/mgs-server/mgs-server.sqlite")


def test_an_unknown_key_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'http.prot'"):
        load_server_config(_config(tmp_path, "[http]\nprot = 80\n"))


def test_a_bad_value_names_key_value_and_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'dashboard.stale_after_s' = 1.0: must be from 5"):
        load_server_config(_config(tmp_path, "[dashboard]\nstale_after_s = 1\n"))


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    config = load_server_config(_config(tmp_path, '[database]\npath = "data/db.sqlite"\n'))
    assert config.database.path == tmp_path / "data" / "db.sqlite"


def test_a_session_secret_is_generated_once_next_to_the_database(tmp_path: Path) -> None:
    config = ServerConfig(database=DatabaseConfig(path=tmp_path / "db.sqlite"))
    first = secret_key(config)
    assert secret_key(config) == first
    path = tmp_path / "secret_key"
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_truncated_secret_file_is_an_error_not_a_weak_key(tmp_path: Path) -> None:
    (tmp_path / "secret_key").write_text("short\n")
    with pytest.raises(ConfigError, match="fewer than 32 characters"):
        secret_key(ServerConfig(database=DatabaseConfig(path=tmp_path / "db.sqlite")))


def test_create_app_migrates_a_new_database(tmp_path: Path) -> None:
    create_app(ServerConfig(database=DatabaseConfig(path=tmp_path / "new.sqlite")), {"SECRET_KEY": "k" * 40})
    tables = set(connect(tmp_path / "new.sqlite", migrate_schema=False).table_names())
    assert {"users", "api_tokens", "score_windows", "alerts"} <= tables


def test_logins_survive_a_server_restart(tmp_path: Path) -> None:
    config = ServerConfig(database=DatabaseConfig(path=tmp_path / "db.sqlite"))
    first = create_app(config)
    add_user(first, "alice", "viewer")
    client = first.test_client()
    assert login(client, "alice").status_code == 302
    cookie = client.get_cookie("mgs_session")
    assert cookie is not None
    restarted = create_app(config).test_client()
    restarted.set_cookie("mgs_session", cookie.value)
    assert restarted.get("/").status_code == 200


def test_the_session_cookie_is_http_only_and_same_site(tmp_path: Path) -> None:
    app = create_app(ServerConfig(database=DatabaseConfig(path=tmp_path / "db.sqlite")))
    add_user(app, "alice", "viewer")
    client = app.test_client()
    csrf(client)
    response = login(client, "alice")
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
