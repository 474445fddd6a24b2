"""`mgs-device score`: score recorded videos offline into CSVs, plots, summaries (and the server).

No broker and no server are needed: the videos go through the live pipeline, models and quality
gates, every frame, several videos at once. See docs/scoring-videos.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", type=Path, metavar="VIDEO", help="recorded rack videos (MP4, AVI...)")
    parser.add_argument("--out", type=Path, help="folder for the results (created if needed); required unless --probe")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="only check that each file is a readable video: one "
        "JSON line per file on stdout (fps, frames, size, or the error); exit 1 if any is not",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="device config: boxes from [rois] and its pipeline, backend, "
        "aggregation and alerts settings (default: boxes found in each video, default settings)",
    )
    parser.add_argument(
        "--animals",
        type=Path,
        help="CSV mapping video + box to animal, group, time point and recording start (see docs/scoring-videos.md)",
    )
    parser.add_argument("--jobs", type=int, help="videos scored at once, one process each (default: the CPU cores)")
    parser.add_argument("--per-eye", action="store_true", help="also write eyes.csv: every eye of every frame")
    parser.add_argument(
        "--annotate", action="store_true", help="also write annotated.mp4 with eyes, scores and box state"
    )
    parser.add_argument("--expected", type=int, help="boxes to look for when they are found in the video (default 4)")
    parser.add_argument(
        "--models", type=Path, help="models folder (default: [models] dir of the config, else the installed models)"
    )
    parser.add_argument(
        "--precision", choices=("int8", "fp32"), help="model precision (default: the config's, else int8)"
    )
    parser.add_argument("--server", help="also import the windows into this mgs-server (e.g. https://mgs.example.org)")
    parser.add_argument("--token", help="API token of an officer for --server (or set MGS_TOKEN)")
    parser.add_argument(
        "--threads",
        type=int,
        help="CPU threads each network may use (default: the cores shared out among the videos scored at once)",
    )
    parser.add_argument(
        "--start",
        help="when the recordings began (ISO-8601 UTC, e.g. 2026-03-04T09:15:00Z), for "
        "videos the animals file gives no start",
    )
    parser.add_argument(
        "--progress-json",
        type=Path,
        metavar="FILE",
        help="keep FILE up to date with the progress "
        "as JSON (videos_done, videos_total, frames_done, frames_total), replaced atomically",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import os

    from device.rois import MAX_ROIS
    from device.score_batch import ScoreOptions, default_jobs, run_batch
    from device.sidecar import EMPTY, Sidecar, load_sidecar
    from mgs_core.errors import MessageError, MgsError
    from mgs_core.messages import parse_utc_iso

    if args.probe:
        return _probe(args.videos)
    if args.out is None:
        raise MgsError("--out DIR is required: the folder for the results")
    cores = default_jobs()
    jobs = args.jobs if args.jobs is not None else cores
    if jobs < 1:
        raise MgsError(f"--jobs {jobs}: give at least 1")
    if args.expected is not None and not 1 <= args.expected <= MAX_ROIS:
        raise MgsError(f"--expected {args.expected}: a rack has 1 to {MAX_ROIS} boxes")
    if args.threads is not None and args.threads < 1:
        raise MgsError(f"--threads {args.threads}: give at least 1")
    token = args.token or os.environ.get("MGS_TOKEN", "")
    if args.server and not token:
        raise MgsError(
            "--server needs --token (or MGS_TOKEN): an API token of an officer, made with `mgs-server create-token`"
        )
    sidecar = load_sidecar(args.animals) if args.animals else EMPTY
    if args.start:
        try:
            start = parse_utc_iso(args.start)
        except MessageError as exc:
            raise MgsError(f"--start {args.start!r}: {exc}; write e.g. 2026-03-04T09:15:00Z") from None
        sidecar = Sidecar(sidecar.animals, {**{v.name: start for v in args.videos}, **sidecar.starts})
    options = ScoreOptions(
        out=args.out,
        expected=args.expected or MAX_ROIS,
        sidecar=sidecar,
        per_eye=args.per_eye,
        annotate=args.annotate,
        models_dir=args.models,
    )
    if args.config is not None:
        from device.config import load_device_config

        config = load_device_config(args.config)
        options.rois = config.rois.rois
        options.pipeline, options.aggregation, options.alerts = config.pipeline, config.aggregation, config.alerts
        options.backend = config.backend
        options.models_dir = args.models or config.models.dir
    if args.precision:
        options.backend = dataclasses.replace(options.backend, precision=args.precision)
    # Processes share the cores: the networks of each get an equal part instead of fighting over all.
    threads = args.threads or max(1, cores // min(jobs, len(args.videos)))
    options.backend = dataclasses.replace(options.backend, threads=threads)
    on_result = None
    if args.server:
        from device.import_client import ImportClient

        on_result = ImportClient(args.server, token).send
    result = run_batch(args.videos, options, jobs, on_result, args.progress_json)
    for v in result.videos:
        boxes = ", ".join(
            f"box {b['box']} " + ("no face" if b["mean_score"] is None else f"{b['mean_score']:.2f}")
            for b in v["boxes"]
        )
        print(f"{v['video']}: {v['frames']} frames, {boxes} -> {v['folder']}")
        if "import" in v:
            answer = v["import"]
            print(
                f"  imported into {args.server} as {answer['device']}: {answer['stored']} window(s) stored, "
                f"{answer['duplicates']} already there"
            )
            for warning in answer.get("warnings", []):
                print(f"  warning: {warning}")
    print(f"summary: {args.out / 'summary.csv'}, {args.out / 'groups.csv'}, {args.out / 'summary.json'}")
    if result.failed:
        print(f"{len(result.failed)} of {len(args.videos)} video(s) FAILED and were skipped:", file=sys.stderr)
        for f in result.failed:
            print(f"  {f['video']}: {f['error']}", file=sys.stderr)
        return 1
    return 0


def _probe(videos: list[Path]) -> int:
    """What each file says about itself, for a caller that must not load OpenCV (the server's upload)."""
    import json

    from device.videoscore import VideoError, probe

    unreadable = 0
    for video in videos:
        try:
            info = probe(video)
            line = {
                "video": str(video),
                "fps": info.fps,
                "frames": info.frame_count,
                "width": info.width,
                "height": info.height,
            }
        except VideoError as exc:
            unreadable += 1
            line = {"video": str(video), "error": str(exc).removeprefix(f"{video}: ")}
        print(json.dumps(line), flush=True)
    return 1 if unreadable else 0
