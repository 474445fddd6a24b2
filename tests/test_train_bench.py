"""One step of bench/bench_train.py per case and precision: the bench keeps working and writes its table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.bench_train import CASES, main


def test_training_bench_times_every_network_in_both_precisions(tmp_path: Path) -> None:
    out = tmp_path / "bench_train.json"
    assert main(["--steps", "1", "--threads", "1", "--batch", "4", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["case"] for r in report["results"]] == [c.name for c in CASES]
    for row in report["results"]:
        assert row["fp32_s_per_step"] > 0 and row["bf16_s_per_step"] > 0
        assert row["shape"][0] == 4
        assert row["speedup"] == pytest.approx(row["fp32_s_per_step"] / row["bf16_s_per_step"], rel=0.05)
