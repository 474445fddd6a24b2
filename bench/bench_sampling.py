"""What review sampling costs the frame loop: frames/s of the device loop with and without the sampler.

    .venv/bin/python bench/bench_sampling.py [--seconds S] [--rounds N] [--json FILE]

A generated 1080p rack video (four boxes) is decoded into memory once; then the same frames go
through the device's fast pipeline (INT8 models) and window aggregation, alternately without and
with the sampler (`Sampler.observe` on every frame, `window_closed` on every closed window), round
after round, so both variants see the same load on a shared machine (after one untimed warm-up pass). The time spent in the
sampler's own calls is measured too: on a busy machine it is the steadier figure. The sampler keeps every
window (share 1, no interval): the worst case for the frame loop. Cropping and encoding a kept
sample run on the upload thread on the device; their cost per sample is reported separately.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_score import make_videos  # noqa: E402
from bench.report import print_load_average, write_report  # noqa: E402
from device.aggregate import WindowAggregator  # noqa: E402
from device.bench import truth_rois  # noqa: E402
from device.inference import load_models  # noqa: E402
from device.pipeline import FastPipeline, PipelineConfig  # noqa: E402
from device.sampling import Sampler, SamplingConfig, build_body  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the video (default 4 s)")
    parser.add_argument("--fps", type=float, default=10.0, help="frame rate (default 10: 10 frames per window)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per variant (default 3)")
    parser.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="bench-sampling-") as tmp:
        (video,) = make_videos(Path(tmp), 1, args.seconds, args.fps)
        rois = truth_rois(video)
        assert rois is not None
        capture = cv2.VideoCapture(str(video))
        frames = []
        while (ok_frame := capture.read())[0]:
            frames.append(ok_frame[1])
        capture.release()
    models = load_models()
    config = PipelineConfig()
    sampling = SamplingConfig(share=1.0, min_interval_s=0)
    totals = {"without": 0.0, "with": 0.0}
    sampler_s = 0.0
    kept = []
    warm = FastPipeline(models, rois, config)
    for i, image in enumerate(frames):  # untimed: the first runs of an ONNX session are slower
        warm(image, i, 0.0)
    for _ in range(args.rounds):
        for variant in ("without", "with"):
            pipeline = FastPipeline(models, rois, config)
            aggregator = WindowAggregator(range(len(rois)), 1.0)
            sampler = Sampler(sampling, rois, config.fine_crop, config.eyes.min_confidence, 6.0, 1.0)
            sampler.model_sha256 = "0" * 64
            started = time.perf_counter()
            for i, image in enumerate(frames):
                result = pipeline(image, i, 1000.0 + i / args.fps)
                windows = aggregator.add(result)
                if variant == "with":
                    t0 = time.perf_counter()
                    kept.extend(j for w in windows if (j := sampler.window_closed(w, None)) is not None)
                    sampler.observe(image, result)
                    sampler_s += time.perf_counter() - t0
            totals[variant] += time.perf_counter() - started
    encode_started = time.perf_counter()
    for job in kept:
        build_body(job, sampling)
    encode_ms = (time.perf_counter() - encode_started) * 1000 / max(1, len(kept))
    n = len(frames) * args.rounds
    fps = {v: n / t for v, t in totals.items()}
    report = {
        "frames": len(frames),
        "rounds": args.rounds,
        "fps_without_sampler": round(fps["without"], 2),
        "fps_with_sampler": round(fps["with"], 2),
        "ratio_with_over_without": round(fps["with"] / fps["without"], 4),
        "sampler_ms_per_frame": round(sampler_s * 1000 / n, 4),
        "pipeline_ms_per_frame": round(totals["without"] * 1000 / n, 2),
        "samples_kept": len(kept),
        "encode_ms_per_sample_on_upload_thread": round(encode_ms, 2),
    }
    print(json.dumps(report, indent=2))
    print_load_average("the machine is shared: compare the two variants of this run, not across runs")
    if args.json:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
