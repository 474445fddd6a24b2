"""`mgs-device score` on generated rack videos with ground truth: CSVs, plot, annotated MP4, failures.

One batch (two good videos, a zero-length file, a corrupt file and a missing one) is scored once for
the module, in two worker processes, exactly as a researcher runs it; the tests read its outputs.
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import cv2
import pytest

from device.cli import main as device_main
from device.sidecar import load_sidecar
from export.cli import main as export_main
from mgs_core.errors import MgsError

SECONDS, FPS = 6, 10
# Per-second window means against the generator's per-second mean animal score, measured over
# 4 videos x 20 s x 4 boxes in docs/scoring-videos.md. The bounds leave about 1.8 times the measured
# MAE and 90th percentile, for the few dozen windows of this short batch.
MAX_MAE = 0.7
MAX_P90 = 1.5


def _truth_per_second(video: Path) -> dict[tuple[int, int], float]:
    """Mean true animal score per (box, second) over the frames with a visible face."""
    lines = video.with_name(video.name + ".truth.jsonl").read_text().splitlines()
    fps = json.loads(lines[0])["fps"]
    scores: dict[tuple[int, int], list[float]] = defaultdict(list)
    for line in lines[1:]:
        frame = json.loads(line)
        for b in frame["boxes"]:
            if b["face_visible"] and b["animal_score"] is not None:
                scores[(b["box"], int(frame["frame"] // fps))].append(b["animal_score"])
    return {k: statistics.fmean(v) for k, v in scores.items()}


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("score")
    videos = []
    for name, seed in (("rackA_day1.mp4", 11), ("rackB_day1.avi", 12)):
        path = root / name
        assert (
            export_main(
                [
                    "synth-video",
                    "--seconds",
                    str(SECONDS),
                    "--fps",
                    str(FPS),
                    "--out",
                    str(path),
                    "--seed",
                    str(seed),
                    "--quiet",
                ]
            )
            == 0
        )
        videos.append(path)
    empty = root / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(videos[0].read_bytes()[:2000])
    animals = root / "animals.csv"
    animals.write_text(
        "# two racks, one time point\n"
        "video,box,animal,group,timepoint,start\n"
        "rackA_day1.mp4,0,M01,carprofen,day1,2026-03-04T09:15:00Z\n"
        "rackA_day1.mp4,1,M02,saline,day1,\n"
        "rackB_day1.avi,0,M03,carprofen,day1,\n"
        "rackB_day1.avi,1,M04,saline,day1,\n"
    )
    out = root / "out"
    code = device_main(
        [
            "score",
            str(videos[0]),
            str(empty),
            str(corrupt),
            str(root / "missing.mp4"),
            str(videos[1]),
            "--out",
            str(out),
            "--animals",
            str(animals),
            "--annotate",
            "--per-eye",
            "--jobs",
            "2",
            "--progress-json",
            str(root / "progress.json"),
        ]
    )
    return {"code": code, "videos": videos, "out": out, "progress": root / "progress.json"}


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_window_means_follow_the_true_trajectory(batch: dict[str, Any]) -> None:
    errors = []
    for video in batch["videos"]:
        truth = _truth_per_second(video)
        rows = _rows(batch["out"] / video.stem / "windows.csv")
        assert {int(r["box"]) for r in rows} == {0, 1, 2, 3}
        assert len(rows) == 4 * SECONDS
        for r in rows:
            key = (int(r["box"]), int(r["window"]))
            if r["score"] and key in truth:
                errors.append(abs(float(r["score"]) - truth[key]))
    assert len(errors) >= 0.75 * 2 * 4 * SECONDS, "most windows must have a face and a score"
    mae = statistics.fmean(errors)
    p90 = sorted(errors)[int(0.9 * len(errors))]
    assert mae <= MAX_MAE, f"per-second MAE {mae:.2f}"
    assert p90 <= MAX_P90, f"90th percentile error {p90:.2f}"


def test_csv_carries_the_score_window_fields_and_the_animals(batch: dict[str, Any]) -> None:
    rows = _rows(batch["out"] / "rackA_day1" / "windows.csv")
    first = rows[0]
    for name in (
        "score",
        "median",
        "p90",
        "valid_eyes",
        "frames",
        "face_visible_fraction",
        "model_sha256",
        "version",
        "abstained_eyes",
    ):
        assert name in first
    assert all(int(r["abstained_eyes"]) >= 0 for r in rows)
    assert len(first["model_sha256"]) == 64 and first["frames"] == str(FPS)
    assert (first["animal"], first["group"], first["timepoint"]) == ("M01", "carprofen", "day1")
    assert first["window_start"] == "2026-03-04T09:15:00.000Z"
    for r in rows:  # no face is an empty score, never a 0
        assert (r["score"] == "") == (r["valid_eyes"] == "0")
    eyes = _rows(batch["out"] / "rackA_day1" / "eyes.csv")
    assert {int(e["frame"]) for e in eyes} <= set(range(SECONDS * FPS)) and len(eyes) >= SECONDS * FPS
    assert (batch["out"] / "rackA_day1" / "plot.png").stat().st_size > 10_000
    assert cv2.imread(str(batch["out"] / "rackA_day1" / "plot.png")) is not None


def test_annotated_video_opens_and_has_every_frame(batch: dict[str, Any]) -> None:
    for video in batch["videos"]:
        cap = cv2.VideoCapture(str(batch["out"] / video.stem / "annotated.mp4"))
        try:
            assert cap.isOpened()
            frames = 0
            while cap.read()[0]:
                frames += 1
        finally:
            cap.release()
        assert frames == SECONDS * FPS


def test_unreadable_files_are_reported_and_the_batch_finishes(batch: dict[str, Any], capsys) -> None:
    assert batch["code"] == 1
    summary = json.loads((batch["out"] / "summary.json").read_text())
    assert [v["video"] for v in summary["videos"]] == ["rackA_day1.mp4", "rackB_day1.avi"]
    failed = {Path(f["video"]).name: f["error"] for f in summary["failed"]}
    assert set(failed) == {"empty.mp4", "corrupt.mp4", "missing.mp4"}
    assert "empty" in failed["empty.mp4"] and "no such file" in failed["missing.mp4"]


def test_the_progress_file_ends_with_every_video_and_frame(batch: dict[str, Any]) -> None:
    progress = json.loads(batch["progress"].read_text())
    assert progress == {
        "videos_done": 5,
        "videos_total": 5,
        "frames_done": 2 * SECONDS * FPS,
        "frames_total": 2 * SECONDS * FPS,
    }
    assert not batch["progress"].with_name("progress.json.tmp").exists()


def test_probe_says_which_files_are_videos(batch: dict[str, Any], capsys) -> None:
    corrupt = batch["out"].parent / "corrupt.mp4"
    assert device_main(["score", "--probe", str(batch["videos"][0]), str(corrupt)]) == 1
    good, bad = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert good == {
        "video": str(batch["videos"][0]),
        "fps": FPS,
        "frames": SECONDS * FPS,
        "width": 1920,
        "height": 1080,
    }
    assert bad["video"] == str(corrupt) and "not a video OpenCV can read" in bad["error"]
    assert device_main(["score", "--probe", str(batch["videos"][1])]) == 0


def test_summaries_group_by_group_and_time_point(batch: dict[str, Any]) -> None:
    rows = _rows(batch["out"] / "summary.csv")
    assert len(rows) == 8
    m01 = next(r for r in rows if r["animal"] == "M01")
    windows = _rows(batch["out"] / "rackA_day1" / "windows.csv")
    scored = [float(w["score"]) for w in windows if w["box"] == "0" and w["score"]]
    assert float(m01["mean_score"]) == pytest.approx(statistics.fmean(scored), abs=0.002)
    assert float(m01["coverage"]) == pytest.approx(len(scored) / SECONDS)
    assert float(m01["time_above_threshold_s"]) == sum(1.0 for s in scored if s >= 6.0)
    groups = {(g["group"], g["timepoint"]): g for g in _rows(batch["out"] / "groups.csv")}
    assert set(groups) == {("carprofen", "day1"), ("saline", "day1")}
    assert groups[("carprofen", "day1")]["animals"] == "2"


def test_the_animals_file_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "animals.csv"
    bad.write_text("video,box,animal\nday1.mp4,7x,M01\n")
    with pytest.raises(MgsError, match="row 2: box '7x'"):
        load_sidecar(bad)
    bad.write_text("video,box,animal,start\nday1.mp4,0,M01,yesterday\n")
    with pytest.raises(MgsError, match="start 'yesterday'"):
        load_sidecar(bad)
    bad.write_text("video,cage,animal\n")
    with pytest.raises(MgsError, match="missing \\['box'\\]"):
        load_sidecar(bad)


def test_bad_arguments_stop_before_any_work(tmp_path: Path, capsys) -> None:
    assert device_main(["score", str(tmp_path / "a.mp4"), "--out", str(tmp_path), "--jobs", "0"]) == 2
    assert "--jobs 0" in capsys.readouterr().err
    assert device_main(["score", str(tmp_path / "a.mp4"), "--out", str(tmp_path), "--server", "http://x"]) == 2
    assert "--token" in capsys.readouterr().err
    assert device_main(["score", str(tmp_path / "a.mp4"), "--out", str(tmp_path), "--start", "09:15"]) == 2
    assert "--start '09:15'" in capsys.readouterr().err
    assert device_main(["score", str(tmp_path / "a.mp4"), "--out", str(tmp_path), "--threads", "0"]) == 2
    assert "--threads 0" in capsys.readouterr().err
    assert device_main(["score", str(tmp_path / "a.mp4")]) == 2
    assert "--out DIR is required" in capsys.readouterr().err
