"""The demo's process handling, without the rest of the facility (tests/test_demo.py runs it all).

The clean-up tests check the promise of `make demo`: whatever happens, no process stays behind.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from server import demo
from server.cli import main
from server.demo import Facility
from tests.conftest import wait_for

# Stand-ins for demo parts: they run until a signal they do not ignore ends them.
SLEEPER = "import signal; print('ready', flush=True); signal.pause()"


def test_missing_mosquitto_asked_for_is_a_clear_message_before_any_work(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(demo, "MOSQUITTO_PATHS", (str(tmp_path / "no-such-mosquitto"),))
    cache = tmp_path / "cache"
    assert main(["demo", "--headless", "--broker", "mosquitto", "--cache-dir", str(cache)]) == 2
    err = capsys.readouterr().err
    assert "apt-get install mosquitto" in err and "Traceback" not in err
    assert not cache.exists()  # nothing rendered for a demo that cannot run


def test_without_mosquitto_the_demo_chooses_amqtt_and_mqtt_3_1_1(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo, "MOSQUITTO_PATHS", (str(tmp_path / "no-such-mosquitto"),))
    choice = demo.choose_broker("auto")
    assert (choice.kind, choice.protocol) == ("amqtt", "3.1.1")


def test_stop_kills_a_child_that_ignores_sigterm_and_its_own_children(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(demo, "STOP_TIMEOUT_S", 1.0)
    facility = Facility(tmp_path)
    script = textwrap.dedent(f"""
        import signal, subprocess, sys
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        grandchild = subprocess.Popen([sys.executable, "-c", {SLEEPER!r}])
        print("grandchild", grandchild.pid, flush=True)
        signal.pause()
    """)
    child = facility.spawn("stubborn", [sys.executable, "-c", script])
    grandchild = int(wait_for(lambda: _pid_in(child.log_path, "grandchild"), timeout=20, what="the grandchild's pid"))
    facility.stop()
    assert not child.alive()
    wait_for(lambda: not alive(grandchild), timeout=5, what="the grandchild to be killed with its group")


def test_children_die_with_a_demo_that_is_killed(tmp_path: Path) -> None:
    """SIGKILL gives the demo no chance to clean up; the kernel must stop its children (PDEATHSIG)."""
    script = textwrap.dedent(f"""
        import signal, sys
        from pathlib import Path
        from server.demo import Facility
        child = Facility(Path({str(tmp_path)!r})).spawn("sleeper", [sys.executable, "-c", {SLEEPER!r}])
        print("child", child.proc.pid, flush=True)
        signal.pause()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child_pid = int(parent.stdout.readline().split()[1])
        wait_for(lambda: "ready" in (tmp_path / "logs" / "sleeper.log").read_text(), timeout=20, what="the sleeper")
        assert alive(child_pid)
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not alive(child_pid), timeout=10, what="the orphaned child to be terminated")


def descendants(pid: int) -> set[int]:
    """All descendants of `pid`, from /proc (the demo starts them in sessions of their own)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    """A pid that still exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("kind", ["mosquitto", "amqtt"])
def test_broker_dies_with_a_demo_that_is_killed(tmp_path: Path, kind: str) -> None:
    """Either broker (Mosquitto started by root would switch user, which clears the death signal)."""
    script = textwrap.dedent(f"""
        import signal
        from pathlib import Path
        from server.demo import Facility, choose_broker, start_broker
        child, port = start_broker(Facility(Path({str(tmp_path)!r})), choose_broker({kind!r}))
        print("child", child.proc.pid, flush=True)
        signal.pause()
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline().split()[1])
        assert alive(broker_pid)
    finally:
        parent.kill()
        parent.wait()
    wait_for(lambda: not alive(broker_pid), timeout=10, what="the orphaned broker to be terminated")


def _pid_in(log: Path, label: str) -> int | None:
    for line in log.read_text().splitlines():
        if line.startswith(label + " "):
            return int(line.split()[1])
    return None
