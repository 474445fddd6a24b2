"""Synthetic data generator speed on ONE core: frames/s per stage, as a table and as JSON.

    .venv/bin/python bench/bench_synth.py [--frames N] [--json FILE]

Stages (each includes the ones above it):
  render + GT      render_frame(): 1080x1920 image, class mask and truth records
  + label line     the labels.jsonl line (JSON)
  + write jpg/png  image as JPEG q95 or PNG level 1, mask as PNG
  randomise P      render + GT of a dataset's first frames with preset P (`mgs-export synth`
                   uses `default`), scene builds of its camera placements included; + write jpg
                   is what `mgs-export synth` does per frame
  synth-video      write_video(): smooth motion, encode mp4v or MJPG, truth sidecar
and the decode cost of one 1080p frame of each video (what a device pays per frame).
The static scene of a camera placement is built once and reported separately.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from export.dataset import Frame  # noqa: E402
from export.synth.layout import RackLayout
from export.synth.rack import render_frame  # noqa: E402
from export.synth.randomise import Randomisation  # noqa: E402
from export.synth.scenery import scene  # noqa: E402
from export.synth.video import write_video  # noqa: E402


def rate(fn, n: int) -> float:
    """Frames per CPU-second of this (single-threaded) process: other load on a shared machine does not count."""
    start = time.process_time()
    for i in range(n):
        fn(i)
    return n / (time.process_time() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="frames per stage (default 60)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    layout = RackLayout.random(12345)
    t0 = time.perf_counter()
    scene(layout)
    scene_s = time.perf_counter() - t0
    render_frame(0, layout=layout)
    n = args.frames
    results: dict[str, float] = {}
    results["render + GT"] = rate(lambda i: render_frame(i, layout=layout), n)

    def with_label(i: int) -> None:
        f = render_frame(i, layout=layout)
        json.dumps(Frame("images/x.jpg", "masks/x.png", f.boxes, ("synthetic",)).to_json())

    results["+ label line"] = rate(with_label, n)
    with tempfile.TemporaryDirectory() as tmp:
        for ext, params in (("jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), ("png", [cv2.IMWRITE_PNG_COMPRESSION, 1])):

            def write(i: int, ext: str = ext, params: list[int] = params) -> None:
                f = render_frame(i, layout=layout)
                json.dumps(Frame("images/x.jpg", "masks/x.png", f.boxes, ("synthetic",)).to_json())
                cv2.imwrite(f"{tmp}/{i}.{ext}", f.image, params)
                cv2.imwrite(f"{tmp}/{i}_mask.png", f.mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])

            results[f"+ write {ext} image + png mask"] = rate(write, n)

        for preset in ("default", "hardest"):
            randomise = Randomisation(preset)
            results[f"randomise {preset}: render + GT"] = rate(
                lambda i, r=randomise: render_frame(10_000_000 + i, randomise=r), n
            )

        def write_default(i: int) -> None:
            f = render_frame(20_000_000 + i, randomise=Randomisation("default"))
            json.dumps(Frame("images/x.jpg", "masks/x.png", f.boxes, ("synthetic",), conditions=f.conditions).to_json())
            cv2.imwrite(f"{tmp}/{i}.jpg", f.image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(f"{tmp}/{i}_mask.png", f.mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])

        results["randomise default: + write jpg + png mask"] = rate(write_default, n)

        decode_ms = {}
        for fourcc, ext in (("mp4v", "mp4"), ("MJPG", "avi")):
            path = Path(tmp) / f"v.{ext}"
            start = time.process_time()
            write_video(path, seconds=n / 30.0, fps=30.0, seed=1, trajectory="demo")
            results[f"synth-video {fourcc}"] = n / (time.process_time() - start)
            cap = cv2.VideoCapture(str(path))
            times = []
            while True:
                s = time.perf_counter()
                ok, _ = cap.read()
                if not ok:
                    break
                times.append(time.perf_counter() - s)
            decode_ms[fourcc] = 1000 * float(np.median(times))
            results[f"video {fourcc} MB per minute at 30 fps"] = path.stat().st_size / 1e6 / n * 1800

    print(
        f"synthetic rack generator, 1080x1920, one core ({platform.processor() or platform.machine()}), {n} frames per stage"
    )
    print(f"  scene build (once per camera placement): {scene_s * 1000:.0f} ms")
    print(f"  {'stage (CPU time of one core)':<40} {'frames/s':>9} {'ms/frame':>9}")
    for k, v in results.items():
        if k.startswith("video"):
            continue
        print(f"  {k:<40} {v:>9.1f} {1000 / v:>9.1f}")
    for fourcc, ms in decode_ms.items():
        print(
            f"  decode one 1080p {fourcc} frame: {ms:.2f} ms; {results[f'video {fourcc} MB per minute at 30 fps']:.0f} MB per minute at 30 fps"
        )
    if args.json:
        payload = {
            "frames": n,
            "scene_build_ms": scene_s * 1000,
            "frames_per_s": {k: v for k, v in results.items() if not k.startswith("video")},
            "decode_ms": decode_ms,
            "video_mb_per_min_30fps": {f: results[f"video {f} MB per minute at 30 fps"] for f in decode_ms},
            "cv2": cv2.__version__,
            "machine": platform.machine(),
        }
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
