"""`mgs-server run`, `create-user` and `create-token` as real processes against a real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.conftest import Broker, free_port, wait_for
from tests.ingest_support import publish, score_message
from tests.web_support import PASSWORD, recent_window

CLI = [sys.executable, "-m", "server.cli"]


def write_config(tmp_path: Path, broker_port: int, http_port: int) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(
        '[database]\npath = "server.sqlite"\n\n'
        f'[ingest]\nhost = "127.0.0.1"\nport = {broker_port}\nclient_id = "test-server-{http_port}"\n'
        "flush_interval_s = 0.05\n\n"
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n\n'
        "[dashboard]\nrefresh_s = 1.0\n"
    )
    return path


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(CLI + list(args), input=stdin, capture_output=True, text=True, timeout=60)


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def test_create_user_reads_the_password_from_stdin(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1883, 8080)
    result = cli(
        "create-user", "olga", "--role", "officer", "--password-stdin", "--config", str(config), stdin=PASSWORD + "\n"
    )
    assert result.returncode == 0, result.stderr
    assert "created officer 'olga'" in result.stdout


def test_create_user_twice_is_a_one_line_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, 1883, 8080)
    cli("create-user", "olga", "--password-stdin", "--config", str(config), stdin=PASSWORD + "\n")
    result = cli("create-user", "olga", "--password-stdin", "--config", str(config), stdin=PASSWORD + "\n")
    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert "Traceback" not in result.stderr


def test_create_token_for_an_unknown_user_says_what_to_do(tmp_path: Path) -> None:
    result = cli("create-token", "ghost", "--name", "script", "--config", str(write_config(tmp_path, 1883, 8080)))
    assert result.returncode == 2
    assert "create-user" in result.stderr


def test_run_serves_ingests_warns_without_broker_and_stops_cleanly(tmp_path: Path, broker: Broker) -> None:
    http_port = free_port()
    config = write_config(tmp_path, broker.port, http_port)
    cli("create-user", "script", "--password-stdin", "--config", str(config), stdin=PASSWORD + "\n")
    token = cli("create-token", "script", "--name", "test", "--config", str(config)).stdout.strip()
    base = f"http://127.0.0.1:{http_port}"
    server = subprocess.Popen(
        CLI + ["run", "--config", str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(
            lambda: http_status(f"{base}/login") == 200 or server.poll() is not None,
            timeout=30,
            what="the dashboard to answer",
        )
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        assert http_status(f"{base}/api/v1/boxes", token="mgs_wrong") == 401
        publish(broker, [score_message(recent_window(device="rack9", score=4.5))])

        def stored() -> bool:
            request = urllib.request.Request(f"{base}/api/v1/boxes", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return "rack9" in json.dumps(json.load(response))

        wait_for(stored, timeout=20, what="the published window to reach the API")
        broker.stop()

        def warns() -> bool:
            request = urllib.request.Request(f"{base}/", headers={"Authorization": f"Bearer {token}"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return "The server is not receiving data" in response.read().decode()

        wait_for(warns, timeout=20, what="the overview to say the broker is unreachable")
        server.send_signal(signal.SIGTERM)
        _, stderr = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    assert server.returncode == 0, stderr
    assert "stopped cleanly" in stderr
    assert http_status(f"{base}/login") == 0


def test_run_with_a_bad_config_exits_2_with_the_key(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text("[http]\nport = 0\n")
    result = cli("run", "--config", str(config))
    assert result.returncode == 2
    assert "'http.port' = 0" in result.stderr


def test_unknown_role_is_refused_by_the_argument_parser() -> None:
    result = cli("create-user", "x", "--role", "root")
    assert result.returncode == 2
    assert "invalid choice: 'root'" in result.stderr
