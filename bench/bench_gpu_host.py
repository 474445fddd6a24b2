"""Offload vs local: round-trip latency per network call and pipeline throughput through a GPU host.

    .venv/bin/python bench/bench_gpu_host.py [--seconds S] [--precision int8|fp32] [--providers cuda,cpu]
                                             [--host-threads N] [--clients N] [--json FILE]
                                             [--transport triton --host-python PYTRITON_ENV/bin/python]

Starts `mgs-device gpu-host` as its own process on a free loopback port (ZeroMQ, or PyTriton with
--transport triton, run by --host-python because PyTriton needs numpy<2), or uses --endpoint of a
running host (tcp://... or http://..., e.g. a real GPU machine), then measures on the same
generated rack frames:
1. per network, the batch the pipeline sends (4 ROIs coarse, 8 head crops fine, 16 eye patches):
   local call vs offloaded call (median and p90 ms over --calls calls, alternating);
2. frames per second of the fast pipeline and of the full-resolution reference, local vs offloaded;
3. --clients devices at once (threads, each its own connection) sending fine-crop batches: total
   calls/s and the rows per host batch (the host's own counters), i.e. batching across devices.
The host's execution providers and this machine's CPU are recorded, so a GPU run compares with a CPU one.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import write_report  # noqa: E402
from device.commands.bench import _cpu_name  # noqa: E402
from device.inference import MODEL_NAMES, BackendConfig, Models, load_models  # noqa: E402
from device.offload import OffloadConfig, OffloadError, OffloadPolicy, OffloadSwitch, connect  # noqa: E402
from device.pipeline import FastPipeline, FullResolutionPipeline, images_to_batch  # noqa: E402
from device.rois import Roi  # noqa: E402
from mgs_core.manifest import sha256_file  # noqa: E402

CALL_BATCHES = {"seg_coarse": 4, "seg_fine": 8, "eye": 16}
FINE_CROP = 96


def start_host(args: argparse.Namespace) -> tuple[subprocess.Popen | None, str]:
    if args.endpoint:
        return None, args.endpoint
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    common = [
        "--precision",
        args.precision,
        "--providers",
        args.providers,
        "--threads",
        str(args.host_threads),
        "--max-wait-ms",
        str(args.max_wait_ms),
    ]
    if args.transport == "triton":
        if not args.host_python:
            raise SystemExit(
                "--transport triton needs --host-python: the Python of an environment with nvidia-pytriton"
            )
        endpoint = f"http://127.0.0.1:{port}"
        cmd = [
            args.host_python,
            "-m",
            "device.cli",
            "gpu-host",
            "--transport",
            "triton",
            "--http-port",
            str(port),
            *common,
        ]
    else:
        endpoint = f"tcp://127.0.0.1:{port}"
        cmd = [sys.executable, "-m", "device.cli", "gpu-host", "--bind", endpoint, *common]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env), endpoint


def wait_for_host(endpoint: str, process: subprocess.Popen | None, timeout_s: float = 180.0) -> dict:
    client = connect(endpoint, 2.0)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                return client.hello()
            except OffloadError:
                if process is not None and process.poll() is not None:
                    raise SystemExit(
                        f"the gpu-host process exited with {process.returncode}; run it by hand to see why"
                    )
                if time.monotonic() > deadline:
                    raise SystemExit(f"no gpu-host answered on {endpoint} within {timeout_s:g} s") from None
                time.sleep(0.2)
    finally:
        client.close()


def host_counters(endpoint: str) -> tuple[int, int] | None:
    """(rows, batches) the host ran so far for seg_fine: the gpu-host's hello, or Triton's statistics
    (None where the server restricts that API, as PyTriton does)."""
    if endpoint.startswith("http://"):
        import tritonclient.http as triton_http
        from tritonclient.utils import InferenceServerException

        client = triton_http.InferenceServerClient(endpoint.removeprefix("http://"))
        try:
            stats = client.get_inference_statistics("seg_fine")["model_stats"][0]
        except InferenceServerException:
            return None
        finally:
            client.close()
        return int(stats["inference_count"]), int(stats["execution_count"])
    stats = wait_for_host(endpoint, None)["stats"]
    return stats["rows"], stats["batches"]


def network_batches(models: Models, frame, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rois = [Roi(*b.roi) for b in frame.boxes]
    import cv2

    h, w = models.coarse_size
    coarse = images_to_batch(
        [cv2.resize(frame.image[r.y : r.y1, r.x : r.x1], (w, h), interpolation=cv2.INTER_AREA) for r in rois]
    )
    ys = rng.integers(0, frame.image.shape[0] - FINE_CROP, CALL_BATCHES["seg_fine"])
    xs = rng.integers(0, frame.image.shape[1] - FINE_CROP, CALL_BATCHES["seg_fine"])
    fine = images_to_batch([frame.image[y : y + FINE_CROP, x : x + FINE_CROP] for x, y in zip(xs, ys)])
    eye = images_to_batch([frame.image[y : y + 50, x : x + 50] for x, y in zip(xs.repeat(2), ys.repeat(2))])
    return {"seg_coarse": coarse, "seg_fine": fine, "eye": eye}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def time_calls(local: Models, switch: OffloadSwitch, batches: dict[str, np.ndarray], calls: int) -> list[dict]:
    rows = []
    for name in MODEL_NAMES:
        batch = batches[name]
        local_ms, offload_ms = [], []
        for i in range(calls + 2):
            for runner, out in ((getattr(local, name), local_ms), (getattr(switch.models, name), offload_ms)):
                t = time.perf_counter()
                runner(batch)
                if i >= 2:  # the first calls warm up sessions and the connection
                    out.append((time.perf_counter() - t) * 1000.0)
        rows.append(
            {
                "network": name,
                "batch": list(batch.shape),
                "payload_kb": round(batch.nbytes / 1024, 1),
                "local_ms_median": round(statistics.median(local_ms), 2),
                "local_ms_p90": round(percentile(local_ms, 90), 2),
                "offload_ms_median": round(statistics.median(offload_ms), 2),
                "offload_ms_p90": round(percentile(offload_ms, 90), 2),
            }
        )
    return rows


def pipeline_fps(kind: str, models: Models, frames, seconds: float) -> float:
    rois = [Roi(*b.roi) for b in frames[0].boxes]
    pipeline = FastPipeline(models, rois) if kind == "fast" else FullResolutionPipeline(models, rois)
    pipeline(frames[0].image)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        pipeline(frames[n % len(frames)].image, n)
        n += 1
    return n / (time.perf_counter() - start)


def many_clients(endpoint: str, sha: str, batch: np.ndarray, clients: int, seconds: float) -> dict:
    counts = [0] * clients
    errors: list[str] = []

    def hammer(i: int) -> None:
        client = connect(endpoint, 10.0)
        end = time.perf_counter() + seconds
        try:
            while time.perf_counter() < end:
                client.infer("seg_fine", sha, batch)
                counts[i] += 1
        except OffloadError as exc:
            errors.append(str(exc))
        finally:
            client.close()

    before = host_counters(endpoint)
    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = host_counters(endpoint)
    rows, batches = (after[0] - before[0], after[1] - before[1]) if before and after else (None, None)
    return {
        "clients": clients,
        "calls_per_s": round(sum(counts) / elapsed, 1),
        "crops_per_s": round(sum(counts) * len(batch) / elapsed, 1),
        "host_batches": batches,
        "rows_per_host_batch": round(rows / max(batches, 1), 1) if rows is not None else None,
        "errors": errors[:3],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per throughput pass (default 5)")
    parser.add_argument("--calls", type=int, default=30, help="timed calls per network and path (default 30)")
    parser.add_argument(
        "--precision", choices=("int8", "fp32"), default="int8", help="model precision on both sides (default int8)"
    )
    parser.add_argument(
        "--providers", default="cuda,cpu", help="host execution providers, best first (default cuda,cpu)"
    )
    parser.add_argument(
        "--threads", type=int, default=BackendConfig.threads, help="local onnxruntime threads (default 2, the edge box)"
    )
    parser.add_argument("--host-threads", type=int, default=2, help="host onnxruntime threads (default 2)")
    parser.add_argument("--max-wait-ms", type=float, default=2.0, help="host batching wait (default 2)")
    parser.add_argument("--clients", type=int, default=2, help="devices sending at once in pass 3 (default 2)")
    parser.add_argument(
        "--endpoint",
        help="use a running host at this endpoint (tcp://... gpu-host, http://... Triton) instead of starting one",
    )
    parser.add_argument(
        "--transport", choices=("zmq", "triton"), default="zmq", help="host to start here (default zmq)"
    )
    parser.add_argument("--host-python", help="--transport triton: Python of an environment with nvidia-pytriton")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args()

    import cv2

    from export.synth.rack import render_frame

    cv2.setNumThreads(1)
    process, endpoint = start_host(args)
    try:
        info = wait_for_host(endpoint, process)
        local = load_models(
            precision=args.precision, backend=BackendConfig(precision=args.precision, threads=args.threads)
        )
        shas = {name: sha256_file(local.files[name]) for name in MODEL_NAMES}
        policy = OffloadPolicy(OffloadConfig(host=endpoint, timeout_s=30.0, switch_after_s=0.0), target_fps=1.0)
        switch = OffloadSwitch(local, shas, connect(endpoint, 30.0), policy)
        switch.observe(fps=0.0)
        if policy.backend != "offload":
            raise SystemExit(f"cannot offload: {policy.reason}")
        frames = [render_frame(100 + i) for i in range(8)]
        calls = time_calls(local, switch, network_batches(local, frames[0], np.random.default_rng(0)), args.calls)
        throughput = []
        for kind, seconds in (("fast", args.seconds), ("full", args.seconds)):
            local_fps = pipeline_fps(kind, local, frames, seconds)
            offload_fps = pipeline_fps(kind, switch.models, frames, seconds)
            throughput.append(
                {"pipeline": kind, "local_fps": round(local_fps, 2), "offload_fps": round(offload_fps, 2)}
            )
        fine = network_batches(local, frames[0], np.random.default_rng(1))["seg_fine"]
        shared = [many_clients(endpoint, shas["seg_fine"], fine, n, args.seconds) for n in sorted({1, args.clients})]
        if switch.local_calls:
            print(f"note: {switch.local_calls} call(s) fell back to local: {policy.reason}")
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=120)  # PyTriton takes a while to unload its models
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    report = {
        "machine": {"cpu": _cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
        "host": {
            "endpoint": endpoint,
            "transport": "triton" if endpoint.startswith("http://") else "zmq",
            "providers": info["providers"],
            "started_here": process is not None,
            "threads": args.host_threads,
            "max_wait_ms": args.max_wait_ms,
        },
        "device": {"precision": args.precision, "threads": args.threads},
        "calls": calls,
        "pipelines": throughput,
        "clients": shared,
    }
    print(
        f"host {endpoint}: {', '.join(info['providers'])}; CPU {report['machine']['cpu']} ({os.cpu_count()} cores); {args.precision}"
    )
    print(f"\n{'network':<11}{'batch':<18}{'KiB':>8}{'local ms':>10}{'p90':>8}{'offload ms':>12}{'p90':>8}")
    for r in calls:
        print(
            f"{r['network']:<11}{'x'.join(map(str, r['batch'])):<18}{r['payload_kb']:>8}{r['local_ms_median']:>10}"
            f"{r['local_ms_p90']:>8}{r['offload_ms_median']:>12}{r['offload_ms_p90']:>8}"
        )
    print(f"\n{'pipeline':<11}{'local fps':>10}{'offload fps':>13}")
    for r in throughput:
        print(f"{r['pipeline']:<11}{r['local_fps']:>10}{r['offload_fps']:>13}")
    print(f"\n{'devices':<9}{'calls/s':>9}{'crops/s':>9}{'rows/host batch':>17}")
    for r in shared:
        print(
            f"{r['clients']:<9}{r['calls_per_s']:>9}{r['crops_per_s']:>9}{str(r['rows_per_host_batch'] or 'n/a'):>17}"
        )
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
