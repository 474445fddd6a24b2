"""`mgs-device bench` smoke run: a tiny generated video, every row measured, JSON written."""

from __future__ import annotations

import json
from pathlib import Path

from device.cli import main as device_main
from export.cli import main as export_main


def test_bench_cli_writes_table_and_json(tmp_path: Path, capsys) -> None:
    video = tmp_path / "rack.avi"
    assert export_main(["synth-video", "--seconds", "0.5", "--out", str(video), "--seed", "3", "--quiet"]) == 0
    out_json = tmp_path / "bench.json"
    code = device_main(
        [
            "bench",
            "--video",
            str(video),
            "--rois",
            "2",
            "--seconds",
            "0.4",
            "--precision",
            "fp32",
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "fast-fp32" in printed and "full-fp32" in printed and "lat p95" in printed
    data = json.loads(out_json.read_text())
    assert data["format"] == "mgs-device-bench"
    rows = [(v["name"], v["rois"]) for v in data["variants"]]
    assert rows == [("fast-fp32", 1), ("fast-fp32", 2), ("full-fp32", 2)]
    for v in data["variants"]:
        assert v["frames"] >= 1 and v["fps"] > 0
        assert v["true_eyes"] > 0  # the generator's truth was read and matched against
        assert set(v["stage_ms"]) >= {"decode", "resize", "unet_fine", "post", "regressor", "publish"}
    fast = data["variants"][0]
    assert fast["latency_ms_p95"] is not None and fast["skipped"] is not None
    assert data["variants"][-1]["latency_ms_p95"] is None  # the slow reference gets no realtime pass
    assert data["publish_measured_as"].startswith("WindowAggregator")


def test_bench_cli_rejects_bad_arguments(tmp_path: Path, capsys) -> None:
    assert device_main(["bench", "--rois", "5"]) == 2
    assert "--rois 5" in capsys.readouterr().err
    assert device_main(["bench", "--video", str(tmp_path / "none.avi"), "--precision", "fp32", "--seconds", "0.1"]) == 2
    assert "does not exist" in capsys.readouterr().err
