"""Server data benchmark: sustained MQTT ingest, and a 30-day history query on a month-sized database.

    .venv/bin/python -m bench.bench_ingest                  # full: 200,000 messages, 8 boxes x 30 days
    .venv/bin/python -m bench.bench_ingest --smoke          # 2,000 messages, 1 day (seconds)

(a) Starts a real Mosquitto on a free port and the server's `IngestWorker`, then several publisher
    processes send score windows at QoS 1 as fast as the broker takes them. The figure is windows
    stored per second from the first publish to the last row committed; loss and duplicates are
    counted per device by seq (every device must hold exactly seq 0..n-1).
(b) Generates a database with one window per second per box (8 boxes x 30 days = 20.7 million rows,
    plus minute/hour rollups) in SQL, caches it under artifacts/bench/, and times the dashboard's
    30-day history request for one box through the repository (resolution picked automatically).

Prints a table and writes JSON (default artifacts/bench/bench_ingest.json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.report import SHA, synthetic_window
from mgs_core.messages import score_topic
from server.db import connect, transaction
from server.ingest import IngestConfig, IngestWorker
from server.repository import Repository
from tests.conftest import MOSQUITTO, Broker, wait_for

CACHE = Path("artifacts/bench")
DAY = 86400
# A fixed epoch keeps the cached database valid across runs: 2026-01-01T00:00:00Z.
HISTORY_START = 1_767_225_600


def _payloads(device: str, count: int, boxes: int, t0: float) -> list[tuple[str, bytes]]:
    out = []
    for seq in range(count):
        box = seq % boxes
        t = t0 + seq // boxes
        score = None if seq % 17 == 0 else round((seq * 7 % 90) / 10, 2)
        w = synthetic_window(device, box, seq, t, score)
        out.append((score_topic(device, box), w.to_json()))
    return out


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + _varint(len(body)) + body


def _string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


class RawPublisher:
    """A device simulator that costs the machine almost nothing: MQTT 3.1.1 PUBLISH packets at QoS 1
    are encoded before the clock starts, sent in large writes, and their PUBACKs counted.

    On a real site the publishers are other machines; with paho in Python here, the publishers
    would take more of this machine's CPU than the server under test. Packet ids wrap at 65535,
    so at most WINDOW messages are unacknowledged at any time."""

    WINDOW = 20_000
    CHUNK = 2_000

    def __init__(self, host: str, port: int, client_id: str) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.sendall(
            _packet(0x10, _string(b"MQTT") + bytes([4, 0x02]) + (60).to_bytes(2, "big") + _string(client_id.encode()))
        )
        connack = self._recv_exactly(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"broker refused the bench publisher: {connack!r}")
        self._pending = b""

    def _recv_exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise RuntimeError("broker closed the connection")
            data += chunk
        return data

    @staticmethod
    def encode(messages: list[tuple[str, bytes]]) -> list[bytes]:
        return [
            _packet(0x32, _string(topic.encode()) + ((i % 65535) + 1).to_bytes(2, "big") + payload)
            for i, (topic, payload) in enumerate(messages)
        ]

    def _read_acks(self) -> int:
        data = self._pending + self.sock.recv(1 << 16)
        count, rest = divmod(len(data), 4)
        if any(data[i] != 0x40 for i in range(0, count * 4, 4)):
            raise RuntimeError("expected only PUBACK packets from the broker")
        self._pending = data[count * 4 :] if rest else b""
        return count

    def publish_all(self, packets: list[bytes]) -> int:
        """Send every packet; return how many the broker acknowledged (all of them, or an error)."""
        sent = acked = 0
        while sent < len(packets):
            room = min(self.CHUNK, self.WINDOW - (sent - acked), len(packets) - sent)
            if room > 0:
                self.sock.sendall(b"".join(packets[sent : sent + room]))
                sent += room
            if sent - acked >= self.WINDOW - self.CHUNK or sent == len(packets):
                acked += self._read_acks()
        while acked < len(packets):
            acked += self._read_acks()
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()
        return acked


def _publisher(host: str, port: int, device: str, count: int, ready: Any, start: Any, acked: Any) -> None:
    publisher = RawPublisher(host, port, f"bench-{device}")
    packets = RawPublisher.encode(_payloads(device, count, 4, time.time()))
    ready.put(device)
    start.wait()
    acked.put(publisher.publish_all(packets))


def bench_ingest(messages: int, publishers: int, workdir: Path, backlog: bool) -> dict[str, Any]:
    """Live: the worker stores while publishers publish. Backlog: everything is published while the
    worker is away (its persistent session collects it in the broker), then the worker catches up."""
    if not MOSQUITTO:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    broker = Broker(workdir, extra_config="max_queued_messages 0\nmax_inflight_messages 0\n")
    broker.start()
    db_path = workdir / "ingest.db"
    config = IngestConfig(host=broker.host, port=broker.port, client_id="bench-ingest")
    worker = IngestWorker(config, db_path)
    per = messages // publishers
    total = per * publishers
    ctx = mp.get_context("spawn")
    ready, start, acked = ctx.Queue(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_publisher, args=(broker.host, broker.port, f"bench{i}", per, ready, start, acked))
        for i in range(publishers)
    ]
    try:
        worker.start()
        wait_for(worker.connected.is_set, timeout=10, what="ingest to subscribe")
        for p in procs:
            p.start()
        for _ in procs:  # publishers build their payloads and connect before the clock starts
            ready.get(timeout=300)
        if backlog:
            worker.stop()
            start.set()
            acknowledged = sum(acked.get(timeout=600) for _ in procs)
            worker = IngestWorker(config, db_path)
            t0, cpu0 = time.perf_counter(), time.process_time()
            worker.start()
        else:
            t0, cpu0 = time.perf_counter(), time.process_time()
            start.set()
        wait_for(
            lambda: worker.stats().get("stored", 0) + worker.stats().get("rejected", 0) >= total,
            timeout=600,
            interval=0.01,
            what=f"{total} windows stored",
        )
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        if not backlog:
            acknowledged = sum(acked.get(timeout=60) for _ in procs)
        for p in procs:
            p.join(60)
        stats = worker.stats()
    finally:
        worker.stop()
        broker.stop()
        for p in procs:
            if p.is_alive():
                p.terminate()
    db = connect(db_path)
    per_device = db.execute(
        "SELECT device, COUNT(*), COUNT(DISTINCT seq), MIN(seq), MAX(seq) FROM score_windows GROUP BY device"
    ).fetchall()
    complete = len(per_device) == publishers and all(
        n == per and distinct == per and lo == 0 and hi == per - 1 for _, n, distinct, lo, hi in per_device
    )
    stored = sum(n for _, n, *_ in per_device)
    db.conn.close()
    return {
        "mode": "backlog" if backlog else "live",
        "messages": total,
        "publishers": publishers,
        "acknowledged_by_broker": acknowledged,
        "stored": stored,
        "lost": total - stored,
        "duplicates_rejected": stats.get("duplicates", 0),
        "rejected": stats.get("rejected", 0),
        "complete_by_seq": complete,
        "seconds": round(elapsed, 3),
        "windows_per_s": round(stored / elapsed, 1),
        "ingest_cpu_us_per_window": round(cpu / total * 1e6, 1),
        "ingest_windows_per_cpu_s": round(total / cpu, 1),
        "load_average": os.getloadavg()[0],
    }


def build_history(path: Path, boxes: int, days: int) -> float:
    """Fill `path` with one window per second per box (and rollups) in SQL; return seconds taken."""
    t = time.perf_counter()
    db = connect(path)
    seconds = days * DAY
    with transaction(db) as conn:
        conn.execute("INSERT INTO models (sha256) VALUES (?)", [SHA])
        conn.execute("DROP INDEX score_windows_box_time")
        for box in range(boxes):
            # A slow daily rhythm plus noise, a face missing one window in 13: shaped like real data.
            conn.execute(
                """
                WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :n - 1)
                INSERT INTO score_windows (device, box, seq, window_start, window_end, frames, valid_eyes, score,
                                           median, p90, face_visible_fraction, model_id, received_at)
                SELECT 'rack' || (:box / 4), :box % 4, i * 4 + (:box % 4), :t0 + i, :t0 + i + 1, 12,
                       CASE WHEN i % 13 = 0 THEN 0 ELSE 2 END,
                       CASE WHEN i % 13 = 0 THEN NULL ELSE (abs(random()) % 300) / 100.0 + (i / 3600) % 24 / 4.0 END,
                       NULL, NULL, CASE WHEN i % 13 = 0 THEN 0.0 ELSE 0.9 END, 1, :t0 + i + 1.2
                FROM s
                """,
                {"n": seconds, "box": box, "t0": HISTORY_START},
            )
        conn.execute("CREATE INDEX score_windows_box_time ON score_windows(device, box, window_start)")
        for table, size in (("rollup_minute", 60), ("rollup_hour", 3600)):
            conn.execute(
                f"INSERT INTO {table} (device, box, bucket, windows, face_windows, score_sum, score_min, score_max) "
                f"SELECT device, box, CAST(window_start / {size} AS INTEGER) * {size}, COUNT(*), COUNT(score), "
                f"COALESCE(SUM(score), 0), MIN(score), MAX(score) FROM score_windows GROUP BY 1, 2, 3"
            )
        conn.execute(
            "INSERT INTO boxes (device, box, last_seq, last_window_end) SELECT device, box, MAX(seq), MAX(window_end) "
            "FROM score_windows GROUP BY device, box"
        )
    db.execute("ANALYZE")
    db.conn.close()
    return time.perf_counter() - t


def bench_history(boxes: int, days: int, repeats: int, cache: Path = CACHE) -> dict[str, Any]:
    """Time the 30-day request twice: straight through the repository, and as the dashboard's
    plot asks for it (HTTP GET through the Flask app with an API token, JSON encoding included)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"history-{boxes}x{days}d.db"
    built_s = None
    if not path.exists():
        partial = path.with_suffix(".partial")
        for p in partial.parent.glob(partial.name + "*"):
            p.unlink()
        built_s = build_history(partial, boxes, days)
        partial.rename(path)
    db = connect(path)
    repo = Repository(db)
    rows = db.execute("SELECT MAX(id) FROM score_windows").fetchone()[0]
    end = HISTORY_START + days * DAY
    device, box = "rack0", min(2, boxes - 1)
    repo_ms, result = [], {}
    for _ in range(repeats):
        t = time.perf_counter()
        result = repo.box_scores(device, box, HISTORY_START, end)
        json.dumps(result)
        repo_ms.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    raw_hour = repo.box_scores(device, box, end - 3600, end)
    raw_ms = (time.perf_counter() - t) * 1000
    db.conn.close()
    api_ms, points = _time_api(path, device, box, HISTORY_START, end, repeats)
    return {
        "boxes": boxes,
        "days": days,
        "rows": rows,
        "db_bytes": path.stat().st_size,
        "built_s": None if built_s is None else round(built_s, 1),
        "cached": built_s is None,
        "resolution": result["resolution"],
        "points": len(result["points"]),
        "history_ms_median": round(statistics.median(repo_ms), 2),
        "history_ms_max": round(max(repo_ms), 2),
        "api_ms_median": round(statistics.median(api_ms), 2),
        "api_ms_max": round(max(api_ms), 2),
        "api_points": points,
        "last_hour_raw_ms": round(raw_ms, 2),
        "last_hour_points": len(raw_hour["points"]),
    }


def _time_api(path: Path, device: str, box: int, start: float, end: float, repeats: int) -> tuple[list[float], int]:
    from server import auth
    from server.app import create_app
    from server.config import DatabaseConfig, ServerConfig

    app = create_app(ServerConfig(database=DatabaseConfig(path=path)), {"SECRET_KEY": "bench-" + "x" * 32})
    db = connect(path)
    user = db.execute("SELECT id FROM users WHERE username = 'bench'").fetchone()
    user_id = user[0] if user else auth.create_user(db, "bench", "bench-password", "viewer")
    token = auth.create_token(db, user_id, "bench_ingest")
    db.conn.close()
    client = app.test_client()
    url = f"/api/v1/boxes/{device}/{box}/scores?start={start}&end={end}&resolution=auto"
    timings, points = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        response = client.get(url, headers={"Authorization": f"Bearer {token}"})
        points = len(response.get_json()["points"])
        timings.append((time.perf_counter() - t) * 1000)
        if response.status_code != 200:
            raise SystemExit(f"history API answered {response.status_code}: {response.get_data(as_text=True)}")
    return timings, points


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2,000 messages and 1 day: checks the bench runs")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--boxes", type=int, default=8)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-history", action="store_true")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where generated history databases are kept")
    parser.add_argument("--json", type=Path, default=CACHE / "bench_ingest.json")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.boxes, args.days, args.repeats = 2000, 2, 1, 3
    report: dict[str, Any] = {"machine": platform.platform(), "cpus": mp.cpu_count()}
    if not args.skip_ingest:
        for mode in ("live", "backlog"):
            with tempfile.TemporaryDirectory(prefix="mgs-bench-") as tmp:
                report[f"ingest_{mode}"] = bench_ingest(args.messages, args.publishers, Path(tmp), mode == "backlog")
    if not args.skip_history:
        report["history"] = bench_history(args.boxes, args.days, args.repeats, args.cache)
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.json}")
    ok = True
    for mode in ("live", "backlog"):
        if f"ingest_{mode}" in report:
            i = report[f"ingest_{mode}"]
            ok &= i["complete_by_seq"] and (args.smoke or i["windows_per_s"] >= 10_000)
    if "history" in report:
        ok &= report["history"]["history_ms_median"] < 300 and report["history"]["api_ms_median"] < 300
    return 0 if ok else 1


def print_table(report: dict[str, Any]) -> None:
    rows = []
    for mode, what in (("live", "while publishing"), ("backlog", "catching up a broker backlog")):
        if f"ingest_{mode}" not in report:
            continue
        i = report[f"ingest_{mode}"]
        rows += [
            (f"ingest {mode}: windows published (QoS 1)", f"{i['messages']:,} from {i['publishers']} publishers"),
            (
                f"ingest {mode}: windows stored",
                f"{i['stored']:,} (lost {i['lost']}, complete by seq: {i['complete_by_seq']})",
            ),
            (
                f"ingest {mode}: rate {what}",
                f"{i['windows_per_s']:,.0f} windows/s over {i['seconds']:.1f} s (load average {i['load_average']:.1f})",
            ),
            (
                f"ingest {mode}: ingest process CPU",
                f"{i['ingest_cpu_us_per_window']:.0f} us/window = "
                f"{i['ingest_windows_per_cpu_s']:,.0f} windows per CPU-second",
            ),
        ]
    if any(k.startswith("ingest") for k in report):
        rows.append(("ingest: requirement", ">= 10,000 windows/s, no loss"))
    if "history" in report:
        h = report["history"]
        built = "cached" if h["cached"] else f"built in {h['built_s']:.0f} s"
        rows += [
            (
                "history: database",
                f"{h['boxes']} boxes x {h['days']} days = {h['rows']:,} windows, "
                f"{h['db_bytes'] / 1e9:.2f} GB ({built})",
            ),
            (
                f"history: {h['days']}-day request, one box (repository)",
                f"{h['history_ms_median']:.1f} ms median, {h['history_ms_max']:.1f} ms max "
                f"({h['resolution']}, {h['points']} points)",
            ),
            (
                f"history: {h['days']}-day request, one box (HTTP API)",
                f"{h['api_ms_median']:.1f} ms median, {h['api_ms_max']:.1f} ms max ({h['api_points']} points)",
            ),
            ("history: last hour, raw", f"{h['last_hour_raw_ms']:.1f} ms ({h['last_hour_points']} points)"),
            ("history: requirement", "< 300 ms"),
        ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    raise SystemExit(main())
