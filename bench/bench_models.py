"""FP32 vs INT8 latency of the shipped networks on this CPU, as the device runs them.

    .venv/bin/python bench/bench_models.py [--runs N] [--json FILE] [--models DIR]

Sessions are opened by the device's own runner (device.inference.OnnxRunner: 2 intra-op threads,
spinning off) from the hash-checked files of models/manifest.json. Cases are the batches the
pipelines send: 4 ROIs for seg_coarse at its input size, 4 head crops (128x128) and 4 whole boxes
at full resolution for seg_fine, 8 eye patches for the regressor. FP32 and INT8 alternate run by
run, so a noisy neighbour slows both alike and the INT8/FP32 ratio stays fair.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, print_load_average, write_report  # noqa: E402
from device.inference import OnnxRunner  # noqa: E402
from mgs_core.manifest import DEFAULT_MODELS_DIR, load_manifest, read_verified_model  # noqa: E402

#: A synthetic-rack box ROI is 402x561 px; seg_fine pads it to multiples of 8.
WHOLE_ROI_HW = (568, 408)
NAMES = ("seg_coarse", "seg_fine", "eye")


@dataclass(frozen=True)
class Case:
    name: str
    model: str
    shape: tuple[int, int, int, int]


def cases(coarse_hw: tuple[int, int], fine_crop: int, roi_hw: tuple[int, int]) -> list[Case]:
    return [
        Case(f"seg_coarse {coarse_hw[0]}x{coarse_hw[1]} x4", "seg_coarse", (4, 3, *coarse_hw)),
        Case(f"seg_fine {fine_crop}x{fine_crop} x4", "seg_fine", (4, 3, fine_crop, fine_crop)),
        Case(f"seg_fine {roi_hw[0]}x{roi_hw[1]} x4 (whole ROI)", "seg_fine", (4, 3, *roi_hw)),
        Case("eye 50x50 x8", "eye", (8, 3, 50, 50)),
    ]


def timed(runner: OnnxRunner, x: np.ndarray) -> float:
    t = time.perf_counter()
    runner(x)
    return (time.perf_counter() - t) * 1000.0


def measure(runners: dict[str, OnnxRunner], x: np.ndarray, runs: int, warmup: int = 3) -> dict[str, list[float]]:
    for _ in range(warmup):
        for r in runners.values():
            r(x)
    times: dict[str, list[float]] = {p: [] for p in runners}
    for _ in range(runs):
        for p, r in runners.items():
            times[p].append(timed(r, x))
    return times


def stats(ms: list[float], batch: int) -> dict[str, float]:
    a = np.asarray(ms)
    median = float(np.median(a))
    return {
        "median_ms": round(median, 3),
        "p95_ms": round(float(np.percentile(a, 95)), 3),
        "items_per_s": round(batch * 1000.0 / median, 1),
        "runs": len(ms),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--runs",
        type=int,
        default=30,
        help="timed runs per case and precision (default 30; whole-ROI case uses a third)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results here as JSON")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODELS_DIR, help="models folder with manifest.json")
    parser.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default 2, the edge box)")
    parser.add_argument("--fine-crop", type=int, default=128)
    args = parser.parse_args(argv)

    manifest = load_manifest(args.models)
    # Speed is measured whatever `mgs-export verify` decided, so entries are taken by status-blind lookup.
    entries = {(e.name, e.precision): e for e in manifest.entries}
    runners = {
        n: {
            p: OnnxRunner(entries[n, p].path, threads=args.threads, data=read_verified_model(entries[n, p]))
            for p in ("fp32", "int8")
        }
        for n in NAMES
    }
    coarse_hw = tuple(entries["seg_coarse", "fp32"].input_size)
    rng = np.random.default_rng(0)
    results = []
    print(f"{'case':<36} {'FP32 med':>9} {'p95':>7} {'INT8 med':>9} {'p95':>7} {'INT8/FP32':>9} {'speed-up':>8}")
    for case in cases(coarse_hw, args.fine_crop, WHOLE_ROI_HW):
        x = rng.random(case.shape, dtype=np.float32)
        runs = max(5, args.runs // 3) if case.shape[2] * case.shape[3] > 200_000 else args.runs
        times = measure(runners[case.model], x, runs)
        f, i = stats(times["fp32"], case.shape[0]), stats(times["int8"], case.shape[0])
        ratio = i["median_ms"] / f["median_ms"]
        results.append(
            {
                "case": case.name,
                "model": case.model,
                "shape": list(case.shape),
                "fp32": f,
                "int8": i,
                "int8_over_fp32": round(ratio, 3),
                "speedup": round(1 / ratio, 2),
            }
        )
        print(
            f"{case.name:<36} {f['median_ms']:>9.2f} {f['p95_ms']:>7.2f} {i['median_ms']:>9.2f} {i['p95_ms']:>7.2f} "
            f"{ratio:>9.2f} {1 / ratio:>7.2f}x"
        )
    import onnxruntime

    report = {
        "machine": machine(onnxruntime=onnxruntime.__version__),
        "threads": args.threads,
        "allow_spinning": 0,
        "models": {
            n: {
                p: {
                    "sha256": entries[n, p].sha256,
                    "model_version": entries[n, p].model_version,
                    "network_config": entries[n, p].network_config,
                    "status": entries[n, p].status,
                }
                for p in ("fp32", "int8")
            }
            for n in NAMES
        },
        "results": results,
    }
    if args.json:
        write_report(args.json, report)
    print_load_average("other processes slow both precisions alike")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
