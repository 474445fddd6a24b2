"""Shared fixtures: a real Mosquitto on a free port, and deadline-based waiting.

MQTT tests never mock the broker: `mosquitto` starts from Debian's package on a free loopback port
with a throw-away config; `broker.stop()` / `broker.start()` simulate an outage on the same port.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> object:
    """Poll `predicate` until it returns something truthy; fail the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A real Mosquitto process that a test can stop and start again on the same port."""

    def __init__(self, workdir: Path, extra_config: str = "") -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.workdir = workdir
        self.config = workdir / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence false\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\n"
            "log_type warning\n" + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert MOSQUITTO, "mosquitto is not installed"
        log = open(self.workdir / "mosquitto.log", "ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        wait_for(lambda: _port_open(self.port) or self.proc.poll() is not None, timeout=10, what="mosquitto to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        wait_for(lambda: not _port_open(self.port), timeout=5, what="mosquitto to close its port")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not MOSQUITTO:
        pytest.skip("mosquitto is not installed (make test installs it when run as root)")
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


# Modules that train, export, quantize or evaluate real networks: minutes of CPU, so `make check` skips them.
SLOW_MODULES = {"test_quantize", "test_onnx_export", "test_evaluate", "test_train", "test_cifar", "test_device_bench"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start Mosquitto get the `broker` marker and those in SLOW_MODULES `slow`, so `make check`
    can leave them out."""
    for item in items:
        module = getattr(item, "module", None)
        if "broker" in getattr(item, "fixturenames", ()) or hasattr(module, "Broker") or hasattr(module, "MOSQUITTO"):
            item.add_marker(pytest.mark.broker)
        if module is not None and module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
