"""Machinery for the MQTT fault runs: the shipped broker, a real server process, simulated devices
with real outboxes and publishers, and the exactly-once tally by (device, epoch, seq).

Everything is real and on loopback: Mosquitto started from systemd/mosquitto/mgs.conf and the ACL
that `server.provision` writes (persistence on, saved every 30 s as shipped), `mgs-server run` as a
process, and in-process devices made of `device.outbox.Outbox` and `device.publisher.Publisher`.

Each fault test ends with `Tally.check()`: every window a device produced is stored exactly once
(0 lost, 0 duplicated, by seq and by content). With MGS_FAULT_REPORT=<file> set, each test also
appends its row (fault, action, sent, stored, lost, duplicated, recovery time) to that JSON-lines
file; `python -m tests.fault_support <file>` prints the rows as the Markdown table of
docs/reliability.md.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from device.aggregate import BoxWindow
from device.outbox import Outbox, Pending
from device.publisher import MqttConfig, Publisher
from mgs_core.messages import DeviceStatus, score_topic, utc_iso
from server.provision import SERVER_USER, BrokerFiles, add_login
from tests.conftest import Broker, free_port, wait_for

SYSTEMD = Path(__file__).resolve().parent.parent / "systemd" / "mosquitto"
SHA = "cd" * 32
T0 = 1_760_000_000.0
REPORT_ENV = "MGS_FAULT_REPORT"


class ShippedBroker(Broker):
    """Mosquitto with the production mgs.conf and ACL (only port, file paths and the persistence
    folder changed), which a test can SIGKILL; logins are made with `server.provision`."""

    def __init__(self, workdir: Path, devices: tuple[str, ...] = ("rack0", "rack1", "poison")) -> None:
        super().__init__(workdir)
        self.files = BrokerFiles(workdir / "mgs.passwd", workdir / "mgs.acl")
        shutil.copy(SYSTEMD / "mgs.acl", self.files.acl_file)
        self.passwords = {SERVER_USER: add_login(self.files, SERVER_USER, "server")}
        self.passwords.update({name: add_login(self.files, name, "device") for name in devices})
        (workdir / "mosquitto-data").mkdir(exist_ok=True)
        conf = (SYSTEMD / "mgs.conf").read_text()
        conf = re.sub(r"^password_file .*$", f"password_file {self.files.password_file}", conf, flags=re.M)
        conf = re.sub(r"^acl_file .*$", f"acl_file {self.files.acl_file}", conf, flags=re.M)
        conf = re.sub(r"^listener 1883$", f"listener {self.port} 127.0.0.1", conf, flags=re.M)
        # `user` keeps a broker started by root (CI) able to read files in pytest's private tmp dir.
        self.config.write_text(
            conf + f"persistence_location {workdir / 'mosquitto-data'}/\n"
            f"user {getpass.getuser()}\nlog_dest stderr\nlog_type error\nlog_type warning\n"
        )

    def kill(self) -> None:
        """SIGKILL: whatever the broker has not saved yet (its queue, retained messages) is gone."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None


class ServerProcess:
    """`mgs-server run` as a real process, logged in to the broker as the server."""

    def __init__(self, workdir: Path, broker: ShippedBroker, max_request_kb: int | None = None) -> None:
        self.workdir = workdir
        self.db = workdir / "server.sqlite"
        self.log = workdir / "server.log"
        self.config = workdir / "server.toml"
        self.config.write_text(
            '[database]\npath = "server.sqlite"\n\n'
            f'[ingest]\nhost = "127.0.0.1"\nport = {broker.port}\nusername = "{SERVER_USER}"\n'
            f'password = "{broker.passwords[SERVER_USER]}"\nflush_interval_s = 0.05\n\n'
            f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n'
            + (f"max_request_kb = {max_request_kb}\n" if max_request_kb is not None else "")
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start and return once the ingest is connected and subscribed."""
        connections = self.log.read_text().count("ingest connected") if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server.cli", "run", "--config", str(self.config)],
                stdout=out,
                stderr=out,
                cwd=self.workdir,
            )

        def connected() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
            return self.log.read_text().count("ingest connected") > connections

        wait_for(connected, timeout=60, interval=0.1, what="the server to connect to the broker")

    def create_user(self, name: str, role: str, password: str) -> None:
        """`mgs-server create-user`, as an administrator would run it beside this server."""
        created = subprocess.run(
            [sys.executable, "-m", "server.cli", "create-user", name, "--role", role, "--password-stdin"]
            + ["--config", str(self.config)],
            input=password + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stderr

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.proc = None
        return code

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # not created yet
            return []


class SimDevice:
    """A device without camera or models: windows straight into a real outbox, sent by the real
    publisher under the device's own broker login. `sent` records every (epoch, seq, box, start)."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        password: str,
        workdir: Path,
        resend_after_s: float = 2.0,
        max_bytes: int = 0,
    ) -> None:
        self.name = name
        self.host, self.port, self.password = host, port, password
        self.outbox_path = workdir / f"{name}.outbox.sqlite"
        self.resend_after_s = resend_after_s
        self.max_bytes = max_bytes
        self.sent: dict[tuple[int, float], tuple[str, int] | None] = {}  # (box, start) -> (epoch, seq) once numbered
        self.t = T0
        self.outbox: Outbox | None = None
        self.publisher: Publisher | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        config = MqttConfig(
            host=self.host,
            port=self.port,
            username=self.name,
            password=self.password,
            reconnect_max_s=1,
            resend_after_s=self.resend_after_s,
        )
        with self._lock:
            self.outbox = Outbox(self.outbox_path, max_bytes=self.max_bytes)
            self.publisher = Publisher(self.name, config, self.outbox, self._status, status_interval_s=0.5)
            self.publisher.start()

    def _status(self) -> DeviceStatus:
        assert self.outbox is not None
        stats = self.outbox.stats()
        return DeviceStatus(
            device=self.name,
            time=utc_iso(time.time()),
            fps=5.0,
            target_fps=5.0,
            backend="local",
            camera="ok",
            queue_depth=stats.depth,
            uptime_s=1.0,
            version="fault-run",
            epoch=stats.epoch,
            first_seq=stats.first_seq,
        )

    def produce(self, windows: int) -> None:
        """Score `windows` more windows (box 0-3 in turn, one second apart per round)."""
        with self._lock:
            if self.outbox is None or self.publisher is None:  # stopped: a camera-less device scores nothing
                return
            items = []
            for _ in range(windows):
                box = len(self.sent) % 4  # one round of boxes 0-3 per second of device time
                start = self.t
                if box == 3:
                    self.t += 1.0
                w = BoxWindow(box, start, start + 1.0, 5, 2, 3.0, 3.0, 3.5, 1.0)
                items.append(Pending(score_topic(self.name, box), lambda seq, epoch, w=w: self._build(w, seq, epoch)))
                self.sent[(box, start)] = None
            self.outbox.enqueue(items)
            self.publisher.notify()

    def _build(self, w: BoxWindow, seq: int, epoch: str) -> bytes:
        """Called by the outbox when it numbers the window (later, if it waited for disk space)."""
        self.sent[(w.box, w.start)] = (epoch, seq)
        return replace(w.to_message(self.name, seq, SHA), epoch=epoch).to_json()

    def confirmed(self) -> bool:
        """Everything produced is confirmed stored by the server (the outbox is empty)."""
        return self.outbox is not None and self.outbox.stats().depth == 0

    def stop(self) -> None:
        with self._lock:
            if self.publisher is not None:
                self.publisher.stop(drain_timeout_s=0.5)
            if self.outbox is not None:
                self.outbox.close()
            self.publisher, self.outbox = None, None


class Producer:
    """Scores `per_tick` windows on each device every `interval_s` until stopped (a live stream)."""

    def __init__(self, devices: list[SimDevice], per_tick: int = 4, interval_s: float = 0.05) -> None:
        self.devices = devices
        self.per_tick = per_tick
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for d in self.devices:
                d.produce(self.per_tick)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Tally:
    """Windows produced against windows stored, for a set of devices (after the fault is over)."""

    fault: str
    action: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    recovery_s: float = 0.0

    @classmethod
    def of(
        cls, fault: str, action: str, server: ServerProcess, devices: list[SimDevice], recovery_s: float = 0.0
    ) -> Tally:
        tally = cls(fault, action, recovery_s=round(recovery_s, 1))
        for d in devices:
            produced = set(d.sent.values())
            rows = server.query("SELECT epoch, seq, box, window_start FROM score_windows WHERE device = ?", (d.name,))
            stored = {(e, s) for e, s, _, _ in rows}
            by_content: dict[tuple[int, float], int] = {}
            for _, _, box, start in rows:
                by_content[(box, start)] = by_content.get((box, start), 0) + 1
            tally.sent += len(d.sent)
            tally.stored += len(rows)
            tally.lost += len(produced - stored)
            tally.duplicated += len(rows) - len(stored) + sum(n - 1 for n in by_content.values())
        return tally

    def check(self) -> None:
        _report(self)
        assert (self.lost, self.duplicated) == (0, 0), self
        assert self.stored == self.sent, self


def all_stored(server: ServerProcess, devices: list[SimDevice]) -> bool:
    """Every device's outbox is confirmed stored, and the server holds as many windows as were made."""
    if not all(d.confirmed() for d in devices):
        return False
    marks = ",".join("?" * len(devices))
    rows = server.query(f"SELECT COUNT(*) FROM score_windows WHERE device IN ({marks})", tuple(d.name for d in devices))
    return bool(rows) and rows[0][0] >= sum(len(d.sent) for d in devices)


def wait_all_stored(server: ServerProcess, devices: list[SimDevice], timeout: float = 60) -> float:
    """Wait until everything is stored and confirmed; returns how long that took."""
    started = time.monotonic()
    wait_for(
        lambda: all_stored(server, devices),
        timeout=timeout,
        interval=0.1,
        what="every window stored and confirmed to its device",
    )
    return time.monotonic() - started


def _report(tally: Tally) -> None:
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(asdict(tally)) + "\n")


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| fault | what was done | sent | stored | lost | duplicated | recovery (s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['fault']} | {r['action']} | {r['sent']} | {r['stored']} | {r['lost']} | "
            f"{r['duplicated']} | {r['recovery_s']:.1f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table([json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]))
