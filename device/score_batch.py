"""A batch of recorded videos, scored in parallel processes, with one progress line and a summary.

Each video is one job in a process pool (onnxruntime and OpenCV hold the GIL long enough that
threads would not scale); a worker loads the models once and reuses them for every video it gets.
A video that cannot be read fails alone: its error is collected and the batch goes on, and the
caller exits non-zero at the end with the list of failures.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.aggregate import AggregationConfig, BoxWindow
from device.alerts import AlertConfig
from device.inference import BackendConfig, Models, load_models
from device.pipeline import PipelineConfig
from device.results import FrameResult
from device.rois import MAX_ROIS, Roi
from device.score_outputs import (
    AnnotatedVideo,
    EyeRows,
    result_json,
    summarise_box,
    unique_folder,
    write_summaries,
    write_windows_csv,
)
from device.score_plot import draw_plot
from device.sidecar import EMPTY, Sidecar
from device.videoscore import VideoError, find_rois, probe, score_video
from mgs_core.errors import MgsError
from mgs_core.manifest import resolve_models_dir

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 0.5
PLAIN_PROGRESS_EVERY_S = 10.0


@dataclass
class ScoreOptions:
    """Everything a worker needs to score one video; picklable, so it crosses into the pool."""

    out: Path
    rois: list[Roi] = field(default_factory=list)
    expected: int = MAX_ROIS
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    alerts: AlertConfig = field(default_factory=AlertConfig)
    backend: BackendConfig = field(default_factory=BackendConfig)
    models_dir: Path | None = None
    sidecar: Sidecar = EMPTY
    per_eye: bool = False
    annotate: bool = False


@dataclass
class BatchResult:
    videos: list[dict[str, Any]]
    failed: list[dict[str, str]]
    summary: dict[str, Any]


_models: dict[tuple[Any, ...], Models] = {}


def worker_models(options: ScoreOptions) -> Models:
    """The models of this process, loaded on its first video."""
    key = (options.models_dir, options.backend.type, options.backend.precision, options.backend.threads)
    if key not in _models:
        _models[key] = load_models(resolve_models_dir(options.models_dir), options.backend.precision, options.backend)
    return _models[key]


def score_one(
    video: Path, folder: Path, options: ScoreOptions, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Score `video` into `folder` and return its result.json content (`VideoError` if unreadable)."""
    cv2.setNumThreads(1)
    info = probe(video)
    rois = options.rois or find_rois(video, options.expected)
    models = worker_models(options)
    folder.mkdir(parents=True, exist_ok=True)
    hooks: list[EyeRows | AnnotatedVideo] = []
    if options.per_eye:
        hooks.append(EyeRows(folder / "eyes.csv", video.name, info.fps))
    if options.annotate:
        hooks.append(AnnotatedVideo(folder / "annotated.mp4", info.fps, rois, options.alerts))

    def on_frame(image: np.ndarray, result: FrameResult, closed: list[BoxWindow]) -> None:
        for hook in hooks:
            hook(image, result, closed)

    try:
        result = score_video(
            video,
            models,
            rois,
            options.pipeline,
            options.aggregation,
            "config" if options.rois else "detected",
            on_frame if hooks else None,
            progress,
        )
    finally:
        for hook in hooks:
            hook.close()
    duration = result.frames / info.fps
    start, start_from = _start(video, options.sidecar, duration)
    threshold = options.alerts.threshold
    summaries = [summarise_box(b, result.windows, threshold, options.sidecar, video) for b in range(len(rois))]
    write_windows_csv(folder / "windows.csv", result, options.sidecar, start)
    labels = {s.box: f"box {s.box}: {s.animal}" if s.animal else f"box {s.box}" for s in summaries}
    plot = draw_plot(
        f"{video.name}  (MGS orbital tightening, {result.window_s:g} s windows)",
        result.windows,
        len(rois),
        duration,
        threshold,
        labels,
    )
    if not cv2.imwrite(str(folder / "plot.png"), plot):
        raise MgsError(f"cannot write {folder / 'plot.png'}; check the --out folder")
    data = result_json(result, summaries, start, start_from, threshold)
    data["folder"] = str(folder)
    (folder / "result.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    return data


def _start(video: Path, sidecar: Sidecar, duration_s: float) -> tuple[float, str]:
    """When the recording began: the animals file says so, else the file was written when it ended."""
    start = sidecar.start(video)
    if start is not None:
        return start, "animals file"
    return max(0.0, video.stat().st_mtime - duration_s), "file modification time minus duration"


# --- the pool -------------------------------------------------------------------------------------

_progress_queue: Any = None


def _init_worker(queue: Any, level: int) -> None:
    global _progress_queue
    _progress_queue = queue
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _pool_job(index: int, video: Path, folder: Path, options: ScoreOptions) -> dict[str, Any]:
    """One video in a worker: progress goes to the parent at most every PROGRESS_EVERY_S."""
    last = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PROGRESS_EVERY_S:
            last = now
            _progress_queue.put((index, done, total))

    data = score_one(video, folder, options, progress)
    _progress_queue.put((index, data["frames"], data["frames"]))
    return data


class Progress:
    """One line on stderr: videos done, frames, frames/s, speed against real time and time left.

    With `json_path`, every `show` also replaces that file with the counts as JSON, for a program
    that follows the batch (the server's video queue); the file is renamed into place, so a reader
    never sees half of it.
    """

    def __init__(self, total_videos: int, stream: Any = None, json_path: Path | None = None) -> None:
        self.stream = stream or sys.stderr
        self.json_path = json_path
        self.total_videos = total_videos
        self.done_videos = 0
        self.frames: dict[int, tuple[int, int]] = {}
        self.fps_of: dict[int, float] = {}
        self.started = time.monotonic()
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_print = 0.0

    def update(self, index: int, done: int, total: int, fps: float = 0.0) -> None:
        self.frames[index] = (done, max(total, done))
        if fps:
            self.fps_of[index] = fps

    def video_done(self) -> None:
        self.done_videos += 1

    def line(self) -> str:
        done = sum(d for d, _ in self.frames.values())
        known = sum(t for _, t in self.frames.values())
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = done / elapsed
        left = (known - done) / rate if rate > 0 and known >= done else None
        video_fps = statistics.fmean(self.fps_of.values()) if self.fps_of else 0.0
        speed = f"  {rate / video_fps:.2f}x real time" if video_fps else ""
        eta = f"  {_clock(left)} left" if left is not None and done else ""
        return f"[{self.done_videos}/{self.total_videos} videos] {done}/{known} frames  {rate:.1f} frames/s{speed}{eta}"

    def show(self, force: bool = False) -> None:
        if self.json_path is not None:
            self._save_json(self.json_path)
        now = time.monotonic()
        if not force and now - self._last_print < (PROGRESS_EVERY_S if self.tty else PLAIN_PROGRESS_EVERY_S):
            return
        self._last_print = now
        self.stream.write(("\r" + self.line() + "\033[K") if self.tty else self.line() + "\n")
        self.stream.flush()

    def _save_json(self, path: Path) -> None:
        state = {
            "videos_done": self.done_videos,
            "videos_total": self.total_videos,
            "frames_done": sum(d for d, _ in self.frames.values()),
            "frames_total": sum(t for _, t in self.frames.values()),
        }
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, path)

    def finish(self) -> None:
        self.show(force=True)
        if self.tty:
            self.stream.write("\n")


def _clock(seconds: float) -> str:
    s = round(seconds)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def run_batch(
    videos: Sequence[Path],
    options: ScoreOptions,
    jobs: int,
    on_result: Callable[[dict[str, Any]], object] | None = None,
    progress_json: Path | None = None,
) -> BatchResult:
    """Score every video (up to `jobs` at once), then write the summaries into `options.out`.

    `on_result` runs in this process for each scored video as it finishes (the server import); an
    `MgsError` it raises marks that video as failed too. `progress_json`: see `Progress`.
    """
    options.out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    folders = [unique_folder(options.out, v, taken) for v in videos]
    progress = Progress(len(videos), json_path=progress_json)
    for i, video in enumerate(videos):
        progress.update(i, 0, _frame_count(video), _fps(video))
    results: dict[int, dict[str, Any]] = {}
    failed: dict[int, dict[str, str]] = {}
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        with ProcessPoolExecutor(
            max_workers=max(1, min(jobs, len(videos))),
            mp_context=ctx,
            initializer=_init_worker,
            initargs=(queue, logging.getLogger().level or logging.WARNING),
        ) as pool:
            pending: dict[Future[dict[str, Any]], int] = {
                pool.submit(_pool_job, i, v, f, options): i for i, (v, f) in enumerate(zip(videos, folders))
            }
            while pending:
                finished, _ = wait(pending, timeout=PROGRESS_EVERY_S, return_when=FIRST_COMPLETED)
                _drain(queue, progress, videos)
                for future in finished:
                    i = pending.pop(future)
                    progress.video_done()
                    try:
                        data = future.result()
                        if on_result is not None:
                            on_result(data)
                        results[i] = data
                    except (MgsError, OSError) as exc:
                        failed[i] = {"video": str(videos[i]), "error": str(exc).removeprefix(f"{videos[i]}: ")}
                        log.error("%s: skipped: %s", videos[i], exc)
                    except Exception as exc:  # a bug or a crashed worker: report it, keep the batch going
                        failed[i] = {"video": str(videos[i]), "error": f"{type(exc).__name__}: {exc}"}
                        log.error("%s: failed:\n%s", videos[i], "".join(traceback.format_exception(exc)))
                progress.show()
            _drain(queue, progress, videos)
    progress.finish()
    ordered = [results[i] for i in sorted(results)]
    failures = [failed[i] for i in sorted(failed)]
    summary = write_summaries(options.out, ordered, failures)
    return BatchResult(ordered, failures, summary)


def _drain(queue: Any, progress: Progress, videos: Sequence[Path]) -> None:
    while not queue.empty():
        index, done, total = queue.get_nowait()
        progress.update(index, done, total, _fps(videos[index]))


_probed: dict[Path, tuple[float, int]] = {}


def _probe_quietly(video: Path) -> tuple[float, int]:
    """(fps, frame count) for the progress line; (0, 0) for a file the worker will report as unreadable."""
    if video not in _probed:
        try:
            info = probe(video)
            _probed[video] = (info.fps, info.frame_count)
        except VideoError:
            _probed[video] = (0.0, 0)
    return _probed[video]


def _fps(video: Path) -> float:
    return _probe_quietly(video)[0]


def _frame_count(video: Path) -> int:
    return _probe_quietly(video)[1]


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
