"""What config validation costs on the device path: the stdlib rules in mgs_core.tomlconfig vs pydantic v2.

    .venv/bin/python -m bench.bench_config_validation            # 7 fresh interpreters per variant
    .venv/bin/python -m bench.bench_config_validation --runs 3

Each variant runs in a fresh interpreter that imports the device's config module and loads
device.example.toml, as `mgs-device run` does at start-up:
- `stdlib`: `load_device_config` (mgs_core.tomlconfig: type hints + Range/Length/Check rules);
- `pydantic`: the same, then pydantic v2 validates the same TOML table against the same dataclasses
  (`TypeAdapter(DeviceConfig)`), which is the least a pydantic-based loader would add (a real one would
  also declare extra="forbid" on every class; that does not change the cost).
Reported per variant (median over runs): `-X importtime` cumulative microseconds of mgs_core.tomlconfig
and of pydantic, wall time of import + load, and the resident set size at the end. Needs pydantic
installed (it is not a dependency of mgs-rack).

Prints a table and writes JSON (default artifacts/bench/bench_config_validation.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import time, tomllib
t0 = time.perf_counter()
from device.config import DeviceConfig, load_device_config
config = load_device_config({example!r})
if {pydantic!r}:
    import pydantic
    adapter = pydantic.TypeAdapter(DeviceConfig)
    with open({example!r}, "rb") as f:
        adapter.validate_python(tomllib.load(f))
elapsed = time.perf_counter() - t0
rss_kb = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS:"))
print("RESULT", elapsed, rss_kb)
"""


def run_once(use_pydantic: bool) -> dict[str, float]:
    code = CHILD.format(example=str(ROOT / "device.example.toml"), pydantic=use_pydantic)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    cumulative = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)$", line)
        if m and m.group(3) in ("mgs_core.tomlconfig", "pydantic"):
            cumulative[m.group(3)] = int(m.group(1))
    _, elapsed, rss_kb = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT")).split()
    return {
        "tomlconfig_import_us": cumulative.get("mgs_core.tomlconfig", 0),
        "pydantic_import_us": cumulative.get("pydantic", 0),
        "import_and_load_ms": float(elapsed) * 1000,
        "rss_mib": int(rss_kb) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts" / "bench" / "bench_config_validation.json")
    args = parser.parse_args()
    results = {}
    for name, use_pydantic in (("stdlib", False), ("pydantic", True)):
        runs = [run_once(use_pydantic) for _ in range(args.runs)]
        results[name] = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"{'variant':<10} {'tomlconfig import':>18} {'pydantic import':>16} {'import+load':>12} {'RSS':>9}")
    for name, r in results.items():
        print(
            f"{name:<10} {r['tomlconfig_import_us'] / 1000:>15.1f} ms {r['pydantic_import_us'] / 1000:>13.1f} ms "
            f"{r['import_and_load_ms']:>9.1f} ms {r['rss_mib']:>6.1f} MiB"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": args.runs, "python": sys.version.split()[0], "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
