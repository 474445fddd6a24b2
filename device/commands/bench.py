"""`mgs-device bench`: throughput, stage costs, latency and accuracy on a generated rack video.

Without --video a rack video with ground truth is generated first (`mgs-export synth-video`, run
as a separate process: device code does not import the export toolchain). Rows: the fast pipeline
with the preferred precision for 1..N ROIs, then at N ROIs the other precision and the
full-resolution reference for each precision. Prints a table; --json writes everything.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

from device.bench import MATCH_PX, Accuracy, format_table, read_truth, results_json, run_variant, truth_rois
from device.inference import BackendConfig, Precision, load_models
from device.pipeline import REFERENCE_BOX_W, PipelineConfig
from device.rois import MAX_ROIS, detect_boxes, read_reference_frame
from mgs_core.errors import MgsError
from mgs_core.tomlconfig import validate

FULL_TIME_FACTOR = 3  # the slow reference gets this many times --seconds to cover the video at its stride


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rois", type=int, default=MAX_ROIS, help="largest number of ROIs to measure (1-4, default 4)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="seconds per pass and length of the generated video (default 10)"
    )
    parser.add_argument("--json", type=Path, help="write all figures to this JSON file")
    parser.add_argument(
        "--video",
        type=Path,
        help="rack video to use instead of generating one (ground truth from VIDEO.truth.jsonl if present)",
    )
    parser.add_argument(
        "--models", type=Path, help="models directory (default: $MGS_MODELS_DIR or the installed models/)"
    )
    parser.add_argument(
        "--precision",
        choices=("int8", "fp32", "both"),
        default="both",
        help="which shipped precisions to measure (default both)",
    )
    parser.add_argument("--no-full", action="store_true", help="skip the slow full-resolution reference")
    parser.add_argument(
        "--fine-crop",
        type=int,
        default=PipelineConfig.fine_crop,
        help="fast pipeline: side of the fine crops in pixels",
    )
    parser.add_argument(
        "--coarse-every",
        type=int,
        default=PipelineConfig.coarse_every,
        help="fast pipeline: frames between coarse passes",
    )
    parser.add_argument(
        "--fine-zoom-max",
        type=float,
        default=PipelineConfig.fine_zoom_max,
        help=f"fast pipeline: largest magnification of the fine crops of boxes narrower than {REFERENCE_BOX_W} px (1 = never)",
    )
    parser.add_argument(
        "--full-stride", type=int, default=10, help="full-resolution reference: analyse every Nth frame (default 10)"
    )
    parser.add_argument("--threads", type=int, default=BackendConfig.threads, help="onnxruntime threads per network")


def run(args: argparse.Namespace) -> int:
    import cv2

    cv2.setNumThreads(1)
    logging.getLogger("device.capture").setLevel(logging.WARNING)  # every pass ends its video on purpose
    if not 1 <= args.rois <= MAX_ROIS:
        raise MgsError(f"--rois {args.rois}: measure 1 to {MAX_ROIS} ROIs")
    if args.seconds <= 0:
        raise MgsError("--seconds must be more than 0")
    if args.full_stride < 1:
        raise MgsError("--full-stride must be 1 or more")
    config = PipelineConfig(
        fine_crop=args.fine_crop,
        coarse_every=args.coarse_every,
        lost_retry=min(3, args.coarse_every),
        fine_zoom_max=args.fine_zoom_max,
    )
    validate(config)
    precisions: list[Precision] = ["int8", "fp32"] if args.precision == "both" else [args.precision]
    models = {}
    skipped_precisions = {}
    for p in precisions:
        try:
            models[p] = load_models(args.models, p, BackendConfig(precision=p, threads=args.threads))
        except MgsError as exc:
            skipped_precisions[p] = str(exc)
            print(f"note: {p} models not measured: {exc}")
    if not models:
        raise MgsError("no models to measure; see the notes above")
    with tempfile.TemporaryDirectory(prefix="mgs-bench-") as tmp:
        video = args.video or _generate_video(Path(tmp) / "rack.avi", args.seconds)
        if not video.exists():
            raise MgsError(f"video {video} does not exist")
        truth = read_truth(video)
        rois = truth_rois(video) or detect_boxes(read_reference_frame(str(video)))
        if len(rois) < args.rois:
            raise MgsError(
                f"{video}: only {len(rois)} boxes known (from its truth file or detect-boxes); use --rois {len(rois)}"
            )
        load_before = os.getloadavg()
        results = []
        main_p = precisions[0] if precisions[0] in models else next(iter(models))
        plan = [("fast", main_p, n) for n in range(1, args.rois + 1)]
        plan += [("fast", p, args.rois) for p in models if p != main_p]
        if not args.no_full:
            plan += [("full", p, args.rois) for p in models]
        reference_frames: dict[str, set[int]] = {}
        accuracies: dict[tuple[str, str, int], Accuracy] = {}
        for kind, p, n in plan:
            print(f"measuring {kind}-{p} with {n} ROI(s) ...", flush=True)
            if kind == "full":
                result, accuracy = run_variant(
                    video,
                    models[p],
                    rois[:n],
                    kind,
                    p,
                    config,
                    FULL_TIME_FACTOR * args.seconds,
                    truth,
                    realtime=False,
                    stride=args.full_stride,
                )
            else:
                result, accuracy = run_variant(video, models[p], rois[:n], kind, p, config, args.seconds, truth)
            results.append(result)
            accuracies[(kind, p, n)] = accuracy
            if kind == "full":
                reference_frames[p] = set(accuracy.errors)
        for r in results:
            ref = reference_frames.get(r.precision)
            if ref is not None and r.rois == args.rois:
                r.mae_on_reference_frames = accuracies[(r.pipeline, r.precision, r.rois)].mae(ref)
        load_after = os.getloadavg()
        print()
        print(format_table(results))
        print(
            f"\nvideo {video.name}: {_describe_video(video)}; {args.seconds:g} s per pass; publish = window aggregation + "
            f"ScoreWindow JSON (no broker); lat = capture->publish at the video's own rate; MAE = per-eye mean absolute "
            f"error of matched valid eyes (within {MATCH_PX:g} px of a true eye); MAE ref = on the frames the full-resolution "
            f"reference of the same precision processed (every {args.full_stride}th frame; its fps is 1000 / its mean ms per frame); load average before {load_before[0]:.2f}, after {load_after[0]:.2f}"
        )
        if args.json:
            context = {
                "video": str(video),
                "video_info": _describe_video(video),
                "seconds": args.seconds,
                "machine": {
                    "cpu": _cpu_name(),
                    "cores": os.cpu_count(),
                    "python": platform.python_version(),
                    "onnxruntime": _ort_version(),
                    "opencv": cv2.__version__,
                },
                "load_average_before": load_before,
                "load_average_after": load_after,
                "pipeline_config": {
                    "fine_crop": config.fine_crop,
                    "coarse_every": config.coarse_every,
                    "lost_retry": config.lost_retry,
                    "fine_zoom_max": config.fine_zoom_max,
                },
                "models": {
                    p: {"sha256": m.model_sha256, "files": {k: str(v) for k, v in m.files.items()}}
                    for p, m in models.items()
                },
                "not_measured": skipped_precisions,
                "publish_measured_as": "WindowAggregator + ScoreWindow.to_json (no broker)",
            }
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results_json(results, context), indent=2) + "\n", encoding="utf-8")
            print(f"wrote {args.json}")
    return 0


def _generate_video(path: Path, seconds: float) -> Path:
    print(f"generating a {seconds:g} s rack video with ground truth ...", flush=True)
    cmd = [
        sys.executable,
        "-m",
        "export.cli",
        "synth-video",
        "--seconds",
        f"{seconds:g}",
        "--out",
        str(path),
        "--seed",
        "7",
        "--quiet",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise MgsError(
            f"could not generate a rack video ({done.stderr.strip() or done.stdout.strip()}); pass --video FILE"
        )
    return path


def _describe_video(video: Path) -> str:
    import cv2

    cap = cv2.VideoCapture(str(video))
    w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    fps, frames = cap.get(cv2.CAP_PROP_FPS), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace")
    cap.release()
    return f"{w}x{h} {fourcc} {fps:g} fps, {frames} frames"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
