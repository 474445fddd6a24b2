"""Overview benchmark: the triage page and its live updates at facility size.

    .venv/bin/python -m bench.bench_overview                # 500 boxes (125 racks x 4)
    .venv/bin/python -m bench.bench_overview --boxes 200 --no-browser

Builds a database through the real ingest write path (`IngestStore.store_windows`, the same calls
the ingest worker makes): every box has an animal and 30 minutes of windows, one every 10 s;
a few boxes have open device alerts. Serves it with waitress (as `mgs-server run` does) and times,
over HTTP with an API token:

- the full overview page (server time to the last byte, and its size);
- one refresh when nothing changed (`/overview/delta?v=<version>`);
- one refresh after 10 boxes got a new window with a different score;
- one refresh after every box got a new window (every score changed, the worst case);
- for comparison, the old way of refreshing: the whole tile fragment (`/?fragment=1`);
- unless --no-browser (and when Chromium is installed): the page load in headless Chromium, from
  the browser's navigation timing (response received, DOMContentLoaded, load event; every tile is
  in the page by then).

Prints a table and writes JSON (default artifacts/bench/bench_overview.json): body sizes, and the
bytes on the wire with gzip accepted as a browser does.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import re
import socket
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.report import synthetic_window
from mgs_core.messages import BoxAlert, utc_iso
from server import auth
from server.app import create_app
from server.config import DashboardConfig, DatabaseConfig, ServerConfig
from server.db import connect
from server.repository import Repository
from server.store import IngestStore

BOXES_PER_RACK = 4
HISTORY_S = 1800
STEP_S = 10
CHROMIUM = Path("/usr/bin/chromium")


def _score(rack: int, box: int, i: int) -> float | None:
    if (rack * 7 + box + i) % 23 == 0:
        return None
    return round(((rack * 13 + box * 5) % 70) / 10 + (i % 5) * 0.1, 2)


def build(path: Path, boxes: int) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """Animals, assignments, 30 minutes of windows per box and a few open alerts; returns the
    boxes and the next seq per device."""
    db = connect(path)
    repo = Repository(db)
    ingest = IngestStore(db)
    now = time.time()
    keys = [(f"rack-{i // BOXES_PER_RACK:03d}", i % BOXES_PER_RACK) for i in range(boxes)]
    experiment = repo.create_experiment("bench")
    for n, (device, box) in enumerate(keys):
        animal = repo.create_animal(f"B{n:04d}", "C57BL/6J", "", experiment)
        repo.create_assignment(animal, device, box, now - 2 * HISTORY_S)
    seqs: dict[str, int] = {}
    for step, t in enumerate(range(int(now - HISTORY_S), int(now) - 1, STEP_S)):
        batch = []
        for device, box in keys:
            seq = seqs.get(device, 0)
            seqs[device] = seq + 1
            batch.append(synthetic_window(device, box, seq, float(t), _score(int(device[5:]), box, step)))
        with ingest.write():
            ingest.store_windows(batch, time.time())
    alerts = [
        BoxAlert(
            device=d,
            box=b,
            seq=10_000_000 + i,
            event="raised",
            time=utc_iso(now - 300),
            threshold=6.0,
            duration_s=60.0,
            score=7.0,
        )
        for i, (d, b) in enumerate(keys[:: max(1, boxes // 8)])
    ]
    with ingest.write():
        ingest.store_device_alerts(alerts, time.time())
        for device in {d for d, _ in keys}:
            ingest.store_availability(device, "online", time.time())
    db.conn.close()
    return keys, seqs


def publish_new(path: Path, keys: list[tuple[str, int]], seqs: dict[str, int], shift: float) -> None:
    """One new window for each of `keys`, with a score different from before."""
    db = connect(path)
    ingest = IngestStore(db)
    t = time.time() - 1.0
    batch = []
    for device, box in keys:
        seq = seqs[device]
        seqs[device] = seq + 1
        batch.append(synthetic_window(device, box, seq, t, round(min(9.0, 1.0 + shift + box * 0.3), 2)))
    with ingest.write():
        ingest.store_windows(batch, time.time())
    db.conn.close()


def get(url: str, token: str) -> tuple[float, bytes, int]:
    """Time to the last byte, the body, and its size on the wire (gzip accepted, as a browser does)."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        wire = response.read()
        encoded = response.headers.get("Content-Encoding") == "gzip"
    return time.perf_counter() - t0, gzip.decompress(wire) if encoded else wire, len(wire)


def timed(url: str, token: str, repeat: int) -> dict[str, Any]:
    runs = [get(url, token) for _ in range(repeat)]
    return {
        "median_s": statistics.median(r[0] for r in runs),
        "max_s": max(r[0] for r in runs),
        "bytes": len(runs[-1][1]),
        "wire_bytes": runs[-1][2],
    }


def browser_load(base: str, token: str, boxes: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--headless=new", "--no-sandbox", "--disable-gpu"])
        try:
            runs, server, parsed = [], [], []
            for _ in range(3):
                context = b.new_context(extra_http_headers={"Authorization": f"Bearer {token}"})
                page = context.new_page()
                page.goto(base + "/", wait_until="load")
                tiles = page.locator("#tiles [data-box]").count()
                if tiles != boxes:
                    raise RuntimeError(f"the page shows {tiles} tiles, expected {boxes}")
                nav = page.evaluate("performance.getEntriesByType('navigation')[0].toJSON()")
                runs.append(nav["loadEventEnd"] / 1000)
                server.append(nav["responseEnd"] / 1000)
                parsed.append(nav["domContentLoadedEventEnd"] / 1000)
                context.close()
        finally:
            b.close()
    return {
        "median_s": statistics.median(runs),
        "max_s": max(runs),
        "response_end_s": statistics.median(server),
        "dom_content_loaded_s": statistics.median(parsed),
    }


def run(boxes: int, repeat: int, browser: bool) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-overview-"))
    db_path = tmp / "server.sqlite"
    t0 = time.perf_counter()
    keys, seqs = build(db_path, boxes)
    build_s = time.perf_counter() - t0
    db = connect(db_path)
    token = auth.create_token(db, auth.create_user(db, "bench", "bench password", "viewer"), "bench")
    db.conn.close()
    import waitress

    app = create_app(
        ServerConfig(database=DatabaseConfig(path=db_path), dashboard=DashboardConfig()),
        {"SECRET_KEY": "bench-" + "x" * 32},
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    base = f"http://127.0.0.1:{port}"
    try:
        get(base + "/", token)  # warm up
        page = timed(base + "/", token, repeat)
        _, body, _ = get(base + "/", token)
        version = re.search(rb'data-version="([0-9a-f]+)"', body).group(1).decode()  # type: ignore[union-attr]
        unchanged = timed(f"{base}/overview/delta?v={version}", token, repeat)
        publish_new(db_path, keys[:10], seqs, 6.5)
        ten = timed(f"{base}/overview/delta?v={version}", token, repeat)
        ten["tiles"] = len(json.loads(get(f"{base}/overview/delta?v={version}", token)[1])["tiles"])
        publish_new(db_path, keys, seqs, 2.0)
        every = timed(f"{base}/overview/delta?v={version}", token, repeat)
        every["tiles"] = len(json.loads(get(f"{base}/overview/delta?v={version}", token)[1])["tiles"])
        fragment = timed(base + "/?fragment=1", token, repeat)
        result: dict[str, Any] = {
            "boxes": boxes,
            "windows_stored": boxes * (HISTORY_S // STEP_S),
            "build_s": round(build_s, 1),
            "page": page,
            "delta_unchanged": unchanged,
            "delta_10_boxes": ten,
            "delta_every_box": every,
            "fragment_refresh": fragment,
            "repeat": repeat,
            "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine()},
        }
        if browser:
            result["browser_load"] = browser_load(base, token, boxes)
        return result
    finally:
        server.close()


def print_table(r: dict[str, Any]) -> None:
    print(
        f"overview with {r['boxes']} boxes ({r['windows_stored']:,} windows stored in {r['build_s']} s), "
        f"median of {r['repeat']}"
    )
    print(f"{'request':<52} {'median':>9} {'max':>9} {'bytes':>10} {'on wire':>9}")
    rows = [
        ("full page GET /", r["page"]),
        ("refresh, nothing changed (delta)", r["delta_unchanged"]),
        (f"refresh, 10 boxes changed (delta, {r['delta_10_boxes']['tiles']} tiles)", r["delta_10_boxes"]),
        (f"refresh, every box changed (delta, {r['delta_every_box']['tiles']} tiles)", r["delta_every_box"]),
        ("old refresh: whole fragment GET /?fragment=1", r["fragment_refresh"]),
    ]
    for name, m in rows:
        print(
            f"{name:<52} {m['median_s'] * 1000:>6.0f} ms {m['max_s'] * 1000:>6.0f} ms {m['bytes']:>10,} "
            f"{m['wire_bytes']:>9,}"
        )
    if "browser_load" in r:
        b = r["browser_load"]
        print(
            f"{'page load in Chromium (load event, navigation timing)':<52} {b['median_s'] * 1000:>6.0f} ms "
            f"{b['max_s'] * 1000:>6.0f} ms"
        )
        print(f"{'  of which: page received (responseEnd)':<52} {b['response_end_s'] * 1000:>6.0f} ms")
        print(f"{'  DOMContentLoaded':<52} {b['dom_content_loaded_s'] * 1000:>6.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--boxes", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-browser", action="store_true", help="skip the Chromium page-load timing")
    parser.add_argument("--json", type=Path, default=Path("artifacts/bench/bench_overview.json"))
    args = parser.parse_args()
    result = run(args.boxes, args.repeat, browser=CHROMIUM.exists() and not args.no_browser)
    result["load_average"] = os.getloadavg()
    print_table(result)
    print(f"load average during the run (1, 5, 15 min): {', '.join(f'{x:.1f}' for x in result['load_average'])}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
