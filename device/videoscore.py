"""Score one recorded video with the live pipeline: every frame, per-second windows, per-eye rows.

Recorded experiments need the same numbers the rack publishes live, so this module only drives the
device's own parts: `OpenCVSource` reads the file (as `mgs-device run` reads a video source),
`build_pipeline` scores each frame with the same models and quality gates, and `WindowAggregator`
cuts the same windows. Time here is the position in the video (frame index / fps), so windows are
aligned to whole seconds of the recording; the wall-clock time of a window is added only where the
recording's start is known (`score_outputs`, the server import).

Every frame is scored (no newest-frame-wins): offline there is no camera to keep up with.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from device import __version__
from device.aggregate import AggregationConfig, BoxWindow, WindowAggregator
from device.capture import CaptureConfig, OpenCVSource, SourceError
from device.inference import Models
from device.pipeline import PipelineConfig, build_pipeline
from device.results import FrameResult
from device.rois import MAX_ROIS, Roi, check_inside, detect_boxes, read_reference_frame
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 20
# A file that delivers fewer than this share of the frames its header announces is reported as cut.
TRUNCATED_SHARE = 0.95

FrameHook = Callable[[np.ndarray, FrameResult, list[BoxWindow]], None]
ProgressHook = Callable[[int, int], None]


class VideoError(MgsError):
    """A video cannot be scored (missing, unreadable, no boxes); the batch goes on without it."""


@dataclass(frozen=True)
class VideoInfo:
    """What the file says about itself before scoring."""

    path: Path
    fps: float
    frame_count: int
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps if self.fps else 0.0


@dataclass
class VideoScore:
    """The result of one video: its windows per box, and what was scored with what."""

    info: VideoInfo
    rois: list[Roi]
    boxes_from: str
    windows: list[BoxWindow]
    frames: int
    model_sha256: str
    fingerprint: str
    window_s: float
    version: str = __version__
    warnings: list[str] = field(default_factory=list)


def fingerprint(path: Path) -> str:
    """sha256 of the file's bytes: the same recording imported twice is recognised under any name."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def probe(path: Path) -> VideoInfo:
    """Open the file and read its header and first frame; `VideoError` says why a file is no video."""
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: the file is empty (0 bytes); copy the recording again")
    cap = cv2.VideoCapture(str(path))
    try:
        ok, image = cap.read() if cap.isOpened() else (False, None)
        if not ok or image is None:
            raise VideoError(
                f"{path}: not a video OpenCV can read (or corrupt); convert it to MP4 or AVI, "
                "e.g. `ffmpeg -i IN -c:v mpeg4 OUT.mp4`"
            )
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    finally:
        cap.release()
    if not 0 < fps <= 240:
        raise VideoError(f"{path}: the file declares {fps:g} frames/s; re-encode it with a frame rate")
    return VideoInfo(path, fps, max(count, 0), image.shape[1], image.shape[0])


def find_rois(path: Path, expected: int = MAX_ROIS) -> list[Roi]:
    """The boxes of this recording, found on the median of frames spread over it."""
    try:
        frame = read_reference_frame(str(path))
    except MgsError as exc:
        raise VideoError(str(exc)) from None
    rois = detect_boxes(frame, expected)
    if not rois:
        raise VideoError(
            f"{path}: no boxes found in the picture; give them with --config (see `mgs-device detect-boxes`)"
        )
    return rois


def score_video(
    path: Path,
    models: Models,
    rois: Sequence[Roi],
    pipeline: PipelineConfig,
    aggregation: AggregationConfig,
    boxes_from: str = "config",
    on_frame: FrameHook | None = None,
    on_progress: ProgressHook | None = None,
) -> VideoScore:
    """Score every frame of `path` in the boxes `rois` (from the config, or `find_rois`).

    `on_frame(image, result, closed_windows)` sees every frame (annotated video, per-eye rows);
    `on_progress(frames_done, frames_total)` is called after each frame.
    """
    info = probe(path)
    try:
        source = OpenCVSource(CaptureConfig(source=str(path), kind="file", realtime=False))
    except SourceError as exc:
        raise VideoError(f"{path}: {exc}") from None
    try:
        return _score(path, info, source, models, list(rois), boxes_from, pipeline, aggregation, on_frame, on_progress)
    finally:
        source.close()


def _score(
    path: Path,
    info: VideoInfo,
    source: OpenCVSource,
    models: Models,
    rois: list[Roi],
    boxes_from: str,
    pipeline_config: PipelineConfig,
    aggregation: AggregationConfig,
    on_frame: FrameHook | None,
    on_progress: ProgressHook | None,
) -> VideoScore:
    pipeline = build_pipeline(models, rois, pipeline_config)
    aggregator = WindowAggregator(range(len(rois)), aggregation.window_s)
    windows: list[BoxWindow] = []
    warnings: list[str] = []
    index = 0
    while (image := source.read()) is not None:
        if index == 0:
            try:
                check_inside(rois, image.shape)
            except MgsError as exc:
                raise VideoError(f"{path}: {exc}") from None
        result = pipeline(image, index, index / info.fps)
        closed = aggregator.add(result)
        windows.extend(closed)
        if on_frame is not None:
            on_frame(image, result, closed)
        index += 1
        if on_progress is not None:
            on_progress(index, info.frame_count)
    windows.extend(aggregator.flush())
    if index == 0:
        raise VideoError(f"{path}: no frame could be decoded; the file is corrupt")
    if info.frame_count and index < TRUNCATED_SHARE * info.frame_count:
        warnings.append(f"read {index} of the {info.frame_count} frames the file announces: it may be cut short")
        log.warning("%s: %s", path, warnings[-1])
    return VideoScore(
        info=info,
        rois=rois,
        boxes_from=boxes_from,
        windows=windows,
        frames=index,
        model_sha256=models.model_sha256,
        fingerprint=fingerprint(path),
        window_s=aggregation.window_s,
        warnings=warnings,
    )


def window_index(window: BoxWindow, window_s: float) -> int:
    """The window's position in the video (0 = the first `window_s` seconds): part of its import key."""
    return math.floor(window.start / window_s + 1e-6)
