"""Offline scoring speed: seconds of 1080p 30 fps rack video scored per second, `mgs-device score` style.

    .venv/bin/python bench/bench_score.py [--videos N] [--seconds S] [--jobs 1,2] [--json FILE]

Generated rack videos (`mgs-export synth-video`, 1920x1080, mp4v) go through the batch scorer of
`mgs-device score` (device.score_batch.run_batch: worker processes, the fast pipeline, INT8 models,
windows, CSVs, plots); the wall time includes process start, model loading and the outputs, as a
researcher would see it. "x real time" above 1 means a recording is scored faster than it lasted.
Each --jobs value runs the whole batch once; network threads per process = cores / jobs, as the
command sets them.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, print_load_average, write_report  # noqa: E402
from device.score_batch import ScoreOptions, default_jobs, run_batch  # noqa: E402
from export.cli import main as export_main  # noqa: E402


def make_videos(folder: Path, count: int, seconds: float, fps: float) -> list[Path]:
    videos = []
    for i in range(count):
        path = folder / f"rack{i}.mp4"
        if (
            export_main(
                [
                    "synth-video",
                    "--seconds",
                    str(seconds),
                    "--fps",
                    str(fps),
                    "--out",
                    str(path),
                    "--seed",
                    str(100 + i),
                    "--quiet",
                    "--force",
                ]
            )
            != 0
        ):
            raise SystemExit(f"could not generate {path}")
        videos.append(path)
    return videos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=2, help="videos in the batch (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10 s)")
    parser.add_argument("--fps", type=float, default=30.0, help="frame rate of the videos (default 30)")
    parser.add_argument("--jobs", default=None, help="comma-separated --jobs values to measure (default 1,CORES)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cores = default_jobs()
    jobs_list = [int(j) for j in args.jobs.split(",")] if args.jobs else sorted({1, cores})

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        folder = Path(tmp)
        print(f"generating {args.videos} x {args.seconds:g} s of 1080p {args.fps:g} fps video ...", file=sys.stderr)
        videos = make_videos(folder, args.videos, args.seconds, args.fps)
        video_s = args.videos * args.seconds
        print(
            f"{'jobs':>4} {'threads':>7} {'videos':>6} {'video s':>8} {'wall s':>7} {'frames/s':>9} {'x real time':>11}"
        )
        for jobs in jobs_list:
            options = ScoreOptions(out=folder / f"out-{jobs}")
            threads = max(1, cores // min(jobs, len(videos)))
            options.backend = dataclasses.replace(options.backend, threads=threads)
            t0 = time.perf_counter()
            result = run_batch(videos, options, jobs)
            wall = time.perf_counter() - t0
            if result.failed:
                raise SystemExit(f"scoring failed: {result.failed}")
            frames = sum(v["frames"] for v in result.videos)
            row = {
                "jobs": jobs,
                "threads_per_process": threads,
                "videos": len(videos),
                "video_s": video_s,
                "frames": frames,
                "wall_s": round(wall, 2),
                "frames_per_s": round(frames / wall, 2),
                "x_real_time": round(video_s / wall, 3),
            }
            rows.append(row)
            print(
                f"{jobs:>4} {threads:>7} {len(videos):>6} {video_s:>8.0f} {wall:>7.1f} {row['frames_per_s']:>9.1f} "
                f"{row['x_real_time']:>10.2f}x"
            )
    report = {
        "format": "mgs-bench-score",
        "version": 1,
        "machine": machine(cores=cores),
        "video": {"width": 1920, "height": 1080, "fps": args.fps, "seconds": args.seconds, "codec": "mp4v"},
        "pipeline": "fast",
        "precision": "int8",
        "results": rows,
    }
    if args.json:
        write_report(args.json, report)
    print_load_average("other processes on this machine slow every row")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
