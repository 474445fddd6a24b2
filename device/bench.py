"""End-to-end measurements on a rack video: throughput, stage costs, latency, accuracy per variant.

Every variant runs the device's own parts: the capture thread decodes the video, the pipeline
scores the frames, and the per-box window aggregation builds and serialises the ScoreWindow
payloads the publisher would send ("publish" = aggregation + JSON, no broker, so the figure does not
depend on the network). Two passes per variant:

* offline: the capture thread hands over EVERY frame as fast as the pipeline takes them; frames/s
  is the throughput with decoding in its own thread, as on the device, and every frame is checked
  against the generator's ground truth (per-eye MAE of matched eyes, recall, false eyes);
* realtime (fast pipeline only): the video plays at its own frame rate with newest-frame-wins, as
  from a camera; capture->publish latency (p50/p95) and skipped frames are what the device would see.

The accuracy of a fast variant is also reported on exactly the frames the full-resolution
reference saw, so the two MAEs are compared on the same eyes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from device.aggregate import WindowAggregator
from device.capture import Capture, CaptureConfig, Frame
from device.inference import Models
from device.pipeline import FastPipeline, FullResolutionPipeline, PipelineConfig
from device.results import FrameResult
from device.rois import Roi
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

MATCH_PX = 12.0  # a found eye within this distance of a true eye is that eye
STAGES = ("decode", "resize", "unet_coarse", "unet_fine", "post", "regressor", "publish")

Pipeline = Callable[[np.ndarray, int, float], FrameResult]


@dataclass(frozen=True)
class TrueEye:
    x: float
    y: float
    score: float | None


def read_truth(video: Path) -> dict[int, list[list[TrueEye]]] | None:
    """Visible eyes per frame and box from the generator's `VIDEO.truth.jsonl`, or None without one."""
    path = video.with_name(video.name + ".truth.jsonl")
    if not path.exists():
        return None
    truth: dict[int, list[list[TrueEye]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        for line in lines[1:]:
            d = json.loads(line)
            truth[int(d["frame"])] = [
                [TrueEye(float(e["x"]), float(e["y"]), e.get("score")) for e in b["eyes"] if e.get("visible", True)]
                for b in d["boxes"]
            ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MgsError(
            f"cannot read the ground truth {path} ({exc}); regenerate the video with `mgs-export synth-video`"
        ) from None
    return truth


def truth_rois(video: Path) -> list[Roi] | None:
    path = video.with_name(video.name + ".truth.jsonl")
    if not path.exists():
        return None
    with path.open(encoding="utf-8") as f:
        header = json.loads(f.readline())
    return [Roi(*r) for r in header.get("rois", [])] or None


@dataclass
class Accuracy:
    """Matched eyes against the ground truth, kept per frame so subsets can be compared."""

    errors: dict[int, list[float]] = field(default_factory=dict)
    true_eyes: int = 0
    matched: int = 0
    found_valid: int = 0
    false_eyes: int = 0

    def add(self, result: FrameResult, truth: list[list[TrueEye]]) -> None:
        errors: list[float] = []
        for box, true in zip(result.boxes, truth):
            scored = [t for t in true if t.score is not None]
            self.true_eyes += len(scored)
            valid = list(box.valid_eyes)
            self.found_valid += len(valid)
            used: set[int] = set()
            for eye in valid:
                dists = [(np.hypot(eye.x - t.x, eye.y - t.y), i) for i, t in enumerate(true) if i not in used]
                d, i = min(dists, default=(np.inf, -1))
                if d > MATCH_PX:
                    self.false_eyes += 1
                    continue
                used.add(i)
                true_score = true[i].score
                if true_score is not None:
                    errors.append(abs(eye.score - true_score))
        self.matched += len(errors)
        self.errors[result.frame_index] = errors

    def mae(self, frames: set[int] | None = None) -> float | None:
        values = [e for f, errs in self.errors.items() if frames is None or f in frames for e in errs]
        return float(np.mean(values)) if values else None


@dataclass
class VariantResult:
    name: str
    pipeline: str
    precision: str
    rois: int
    frames: int = 0
    fps: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    pipeline_ms_p95: float = 0.0
    realtime_fps: float | None = None
    latency_ms_p50: float | None = None
    latency_ms_p95: float | None = None
    skipped: int | None = None
    coarse_passes: int | None = None
    crops_per_frame: float | None = None
    mae: float | None = None
    mae_on_reference_frames: float | None = None
    matched_eyes: int = 0
    true_eyes: int = 0
    recall: float | None = None
    false_eyes: int = 0

    def row(self) -> list[str]:
        def f(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        return [
            self.name,
            str(self.rois),
            str(self.frames),
            f(self.fps, ".1f"),
            f(self.crops_per_frame, ".1f"),
            *(f(self.stage_ms.get(s), ".1f") for s in STAGES),
            f(self.latency_ms_p95, ".0f"),
            f(self.skipped, "d"),
            f(self.mae, ".3f"),
            f(self.mae_on_reference_frames, ".3f"),
            f(self.recall, ".2f"),
            str(self.false_eyes),
        ]


HEADER = [
    "variant",
    "rois",
    "frames",
    "fps",
    "crops",
    *STAGES,
    "lat p95",
    "skipped",
    "MAE",
    "MAE ref",
    "recall",
    "false",
]


def make_pipeline(kind: str, models: Models, rois: Sequence[Roi], config: PipelineConfig):
    return FullResolutionPipeline(models, rois, config.eyes) if kind == "full" else FastPipeline(models, rois, config)


class _Publisher:
    """What the device does after the pipeline, short of the network: windows -> JSON payloads."""

    def __init__(self, boxes: int, model_sha256: str) -> None:
        self.aggregator = WindowAggregator(range(boxes))
        self.model_sha256 = model_sha256
        self.seq = 0
        self.payload_bytes = 0

    def __call__(self, result: FrameResult) -> None:
        for window in self.aggregator.add(result):
            self.payload_bytes += len(window.to_message("bench", self.seq, self.model_sha256).to_json())
            self.seq += 1


def run_variant(
    video: Path,
    models: Models,
    rois: Sequence[Roi],
    kind: str,
    precision: str,
    config: PipelineConfig,
    seconds: float,
    truth: dict[int, list[list[TrueEye]]] | None,
    realtime: bool = True,
    stride: int = 1,
) -> tuple[VariantResult, Accuracy]:
    """Offline pass (throughput, stages, accuracy) and, if asked, a realtime pass (latency, skipped).

    `stride` > 1 analyses every stride-th frame only (the slow reference: its frames then spread over
    the whole video instead of covering its first seconds).
    """
    name = f"{kind}-{precision}"
    out = VariantResult(name, kind, precision, len(rois))
    accuracy = Accuracy()
    warm = make_pipeline(kind, models, rois, config)
    warm_frame = _first_frame(video)
    for _ in range(2):
        warm(warm_frame, 0, 0.0)

    pipeline = make_pipeline(kind, models, rois, config)
    publish = _Publisher(len(rois), models.model_sha256)
    totals = {s: 0.0 for s in STAGES}
    per_frame: list[float] = []
    stats: dict[str, float] = {}
    for frame in _play(video, realtime=False, seconds=seconds, stats=stats):
        if frame.index % stride:
            continue
        t0 = time.perf_counter()
        result = pipeline(frame.image, frame.index, frame.time)
        t1 = time.perf_counter()
        publish(result)
        t2 = time.perf_counter()
        for stage, ms in result.stage_ms.items():
            totals[stage] = totals.get(stage, 0.0) + ms
        totals["publish"] += (t2 - t1) * 1000
        per_frame.append((t2 - t0) * 1000)
        if truth is not None and frame.index in truth:
            accuracy.add(result, [truth[frame.index][b] for b in range(len(rois))])
        out.frames += 1
    out.fps = (
        out.frames / stats["elapsed"] if stride == 1 else 1000.0 / max(float(np.mean(per_frame)), stats["decode_ms"])
    )
    out.stage_ms = {s: v / max(out.frames, 1) for s, v in totals.items()}
    out.stage_ms["decode"] = stats["decode_ms"]
    out.pipeline_ms_p95 = float(np.percentile(per_frame, 95)) if per_frame else 0.0
    if isinstance(pipeline, FastPipeline):
        out.coarse_passes = pipeline.coarse_passes
        out.crops_per_frame = pipeline.crops_run / max(out.frames, 1)
    out.mae = accuracy.mae()
    out.matched_eyes, out.true_eyes, out.false_eyes = accuracy.matched, accuracy.true_eyes, accuracy.false_eyes
    out.recall = accuracy.matched / accuracy.true_eyes if accuracy.true_eyes else None
    if realtime:
        _realtime_pass(video, models, rois, kind, config, seconds, out)
    return out, accuracy


def _realtime_pass(
    video: Path,
    models: Models,
    rois: Sequence[Roi],
    kind: str,
    config: PipelineConfig,
    seconds: float,
    out: VariantResult,
) -> None:
    pipeline = make_pipeline(kind, models, rois, config)
    publish = _Publisher(len(rois), models.model_sha256)
    latencies: list[float] = []
    stats: dict[str, float] = {}
    for frame in _play(video, realtime=True, seconds=seconds, stats=stats):
        publish(pipeline(frame.image, frame.index, frame.time))
        latencies.append((time.time() - frame.time) * 1000)
    out.realtime_fps = len(latencies) / stats["elapsed"] if stats["elapsed"] else 0.0
    out.skipped = int(stats["skipped"])
    if latencies:
        out.latency_ms_p50 = float(np.percentile(latencies, 50))
        out.latency_ms_p95 = float(np.percentile(latencies, 95))


def _play(video: Path, realtime: bool, seconds: float, stats: dict[str, float]) -> Iterator[Frame]:
    """Frames from the capture thread for at most `seconds`; fills `stats` when done."""
    with Capture(CaptureConfig(source=str(video), kind="file", realtime=realtime)) as cap:
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            frame = cap.get(timeout=10)
            if frame is None:
                break
            yield frame
        stats.update(elapsed=time.perf_counter() - started, decode_ms=cap.decode_ms, skipped=cap.skipped)


def _first_frame(video: Path) -> np.ndarray:
    import cv2

    cap = cv2.VideoCapture(str(video))
    ok, image = cap.read()
    cap.release()
    if not ok:
        raise MgsError(f"cannot read a frame from {video}; give a readable video file")
    return image


def format_table(results: Sequence[VariantResult]) -> str:
    rows = [HEADER] + [r.row() for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def results_json(results: Sequence[VariantResult], context: dict) -> dict:
    return {"format": "mgs-device-bench", "version": 1, **context, "variants": [asdict(r) for r in results]}
