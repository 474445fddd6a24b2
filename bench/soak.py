"""Soak run of the MQTT data path: N simulated devices against real Mosquitto and `mgs-server run`.

    .venv/bin/python -m bench.soak                          # 4 devices, 10 minutes
    .venv/bin/python -m bench.soak --devices 8 --minutes 60 --rate 4

Starts Mosquitto with the shipped config and ACL (tests/fault_support.py), the server as a process,
and each device as its own process (a real outbox and publisher under its own broker login, no
camera or models) scoring `--rate` windows a second. After `--minutes`, the devices stop scoring
and wait until the server has confirmed everything stored; then every device's windows are
counted against the server's table by (epoch, seq) and by content: sent, stored, lost, duplicated.
The resident memory of the server and of each device process is sampled throughout (largest value).

Prints a table and writes JSON (default artifacts/bench/soak.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.conftest import MOSQUITTO, wait_for
from tests.fault_support import ServerProcess, ShippedBroker, SimDevice, Tally

OUT = Path("artifacts/bench/soak.json")


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@dataclass
class Sent:
    """What one device process reports: its name and (box, start) -> (epoch, seq) of every window."""

    name: str
    sent: dict[tuple[int, float], tuple[str, int] | None] = field(default_factory=dict)


def run_device(workdir: Path, port: int, password: str, name: str, rate: float, seconds: float, out: Path) -> None:
    """Child process: one simulated device scoring `rate` windows a second for `seconds`, then
    waiting until the server has confirmed everything stored."""
    device = SimDevice(name, "127.0.0.1", port, password, workdir, resend_after_s=10.0)
    device.start()
    started = time.monotonic()
    produced = 0
    while time.monotonic() - started < seconds:
        due = int((time.monotonic() - started) * rate) - produced
        if due > 0:
            device.produce(due)
            produced += due
        time.sleep(min(0.25, 1 / rate))  # the scoring clock of a simulated camera
    wait_for(device.confirmed, timeout=600, interval=0.5, what=f"{name}'s windows confirmed stored")
    device.stop()
    out.write_text(json.dumps([[b, t, *(v or ("", -1))] for (b, t), v in device.sent.items()]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=4.0, help="windows per second per device (4 boxes at 1 s = 4)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        workdir, port, password, name, seconds, out = args.child
        run_device(Path(workdir), int(port), password, name, args.rate, float(seconds), Path(out))
        return 0
    if not MOSQUITTO:
        print("mosquitto is not installed", file=sys.stderr)
        return 2
    names = tuple(f"soak{i:02d}" for i in range(args.devices))
    workdir = Path(tempfile.mkdtemp(prefix="mgs-soak-"))
    broker = ShippedBroker(workdir, devices=names)
    broker.start()
    server = ServerProcess(workdir, broker)
    server.start()
    assert server.proc is not None
    children = {}
    for name in names:
        cmd = [
            sys.executable,
            "-m",
            "bench.soak",
            "--rate",
            str(args.rate),
            "--child",
            str(workdir),
            str(broker.port),
            broker.passwords[name],
            name,
            str(args.minutes * 60),
            str(workdir / f"{name}.sent.json"),
        ]
        children[name] = subprocess.Popen(cmd, stdout=open(workdir / f"{name}.log", "ab"), stderr=subprocess.STDOUT)
    started = time.monotonic()
    peak = {"server": 0.0, **{n: 0.0 for n in names}}
    try:
        while any(c.poll() is None for c in children.values()):
            peak["server"] = max(peak["server"], rss_mb(server.proc.pid))
            for name, child in children.items():
                peak[name] = max(peak[name], rss_mb(child.pid))
            time.sleep(1.0)  # sampling period of the memory figures
        elapsed = time.monotonic() - started
        failed = [n for n, c in children.items() if c.returncode != 0]
        if failed:
            print(f"device process(es) {failed} failed; see {workdir}", file=sys.stderr)
            return 1
        devices = []
        for name in names:
            rows = json.loads((workdir / f"{name}.sent.json").read_text())
            devices.append(Sent(name, {(b, t): (e, s) if s >= 0 else None for b, t, e, s in rows}))
        tally = Tally.of(
            "soak", f"{args.devices} devices x {args.rate:g} windows/s for {args.minutes:g} min", server, devices
        )  # type: ignore[arg-type]
        counters = dict(server.query("SELECT name, value FROM counters"))
    finally:
        server.stop()
        broker.stop()
    result = {
        "devices": args.devices,
        "minutes": args.minutes,
        "rate_per_device": args.rate,
        "elapsed_s": round(elapsed, 1),
        **asdict(tally),
        "server_rss_mb": round(peak["server"], 1),
        "device_rss_mb": {n: round(peak[n], 1) for n in names},
        "ingest_counters": counters,
        "workdir": str(workdir),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    device_rss = sorted(result["device_rss_mb"].values())
    print("| devices | minutes | sent | stored | lost | duplicated | server RSS (MB) | device RSS (MB, min-max) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {args.devices} | {args.minutes:g} | {tally.sent} | {tally.stored} | {tally.lost} | {tally.duplicated} | "
        f"{peak['server']:.0f} | {device_rss[0]:.0f}-{device_rss[-1]:.0f} |"
    )
    print(f"duplicates received and dropped by the server: {counters.get('duplicates', 0)}; JSON: {args.out}")
    return 0 if (tally.lost, tally.duplicated) == (0, 0) else 1


if __name__ == "__main__":
    sys.exit(main())
