"""A synthetic rack video: four mice moving smoothly, scores following a trajectory, exact truth.

The video is what a device reads as its "camera" in the demo and in end-to-end tests; the sidecar
`VIDEO.truth.jsonl` says, frame by frame, where every visible eye is, its score, and the true
score of every animal, so a pipeline's output can be compared with what it should have seen.
First line: a header with the layout (box ROIs), fps and frame count; then one line per frame:
`{"frame": i, "t": s, "boxes": [{"box", "roi", "face_visible", "eyes": [...], "animal_score"}]}`
(the eye records are those of the dataset format; a blinking eye is visible without a score).

Codec, by file suffix: .mp4 = mp4v (recommended: decodes in about half the time of MJPG and is
much smaller, while eye patches stay as close to the rendered frame as MJPG's), .avi = MJPG at quality 90 (every frame a JPEG, easy to seek). This OpenCV
build has no H.264 encoder. Figures: bench/bench_synth.py and docs/synth.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from export.dataset import Box, Eye
from export.synth.layout import RackLayout
from export.synth.mouse import FURS, Animal, MousePose, project
from export.synth.nuisance import BoxNuisance, Nuisance
from export.synth.progress import FrameProgress
from export.synth.rack import Renderer, one_opencv_thread
from export.synth.trajectory import TRAJECTORIES, ramp, scores, smooth_noise
from mgs_core.errors import MgsError

TRUTH_FORMAT = "mgs-rack-video-truth"
CODECS = {".avi": "MJPG", ".mp4": "mp4v"}
MJPG_QUALITY = 90
BLINK_EVERY_S, BLINK_S = 6.0, 0.2
AWAY_EVERY_S, AWAY_S = 40.0, 5.0


def truth_path(video: Path | str) -> Path:
    video = Path(video)
    return video.with_name(video.name + ".truth.jsonl")


@dataclass(frozen=True)
class FrameTruth:
    frame: int
    t: float
    boxes: tuple[Box, ...]
    animal_scores: tuple[float | None, ...]


@dataclass(frozen=True)
class VideoTruth:
    header: dict
    frames: tuple[FrameTruth, ...]

    @property
    def rois(self) -> list[tuple[int, int, int, int]]:
        return [tuple(r) for r in self.header["rois"]]


def read_video_truth(path: Path | str) -> VideoTruth:
    """Read a `.truth.jsonl` sidecar (pass the video path or the sidecar path)."""
    path = Path(path)
    if not path.name.endswith(".truth.jsonl"):
        path = truth_path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MgsError(f"cannot read the ground truth {path}: {exc.strerror}") from exc
    header = json.loads(lines[0])
    if header.get("format") != TRUTH_FORMAT:
        raise MgsError(f"{path}:1: not a {TRUTH_FORMAT} file")
    frames = []
    for line in lines[1:]:
        d = json.loads(line)
        boxes = tuple(
            Box(
                b["box"],
                tuple(b["roi"]),
                b["face_visible"],
                tuple(Eye(e["x"], e["y"], e.get("score"), e["visible"]) for e in b["eyes"]),
            )
            for b in d["boxes"]
        )
        frames.append(FrameTruth(d["frame"], d["t"], boxes, tuple(b.get("animal_score") for b in d["boxes"])))
    return VideoTruth(header, tuple(frames))


@dataclass(frozen=True)
class _Motion:
    """Smooth pose signals of one animal over the whole video (arrays over frames)."""

    fur: str
    eye_width: float
    yaw: np.ndarray
    pitch: np.ndarray
    roll: np.ndarray
    body_yaw: np.ndarray
    tail: np.ndarray
    ux: np.ndarray  # 0..1 position within the feasible range
    uy: np.ndarray
    blink: np.ndarray  # bool


def _episodes(rng: np.random.Generator, t: np.ndarray, every: float, length: float) -> np.ndarray:
    """0..1 envelope of short episodes at random times (a turn away, a blink)."""
    env = np.zeros_like(t)
    total = float(t[-1]) if len(t) else 0.0
    start = rng.exponential(every)
    while start < total:
        dur = length * rng.uniform(0.6, 1.4)
        edge = min(dur / 3, 1.0)
        env = np.maximum(env, ramp(t, start, start + edge) * (1 - ramp(t, start + dur - edge, start + dur)))
        start += dur + rng.exponential(every)
    return env


def _motion(rng: np.random.Generator, t: np.ndarray, fur: str) -> _Motion:
    face = 0.5 * math.pi + 1.9 * smooth_noise(rng, t, (8.0, 40.0))
    away = _episodes(rng, t, AWAY_EVERY_S, AWAY_S)
    yaw = face * (1 - away) + (-0.5 * math.pi) * away
    blink = _episodes(rng, t, BLINK_EVERY_S, BLINK_S) > 0.5
    return _Motion(
        fur=fur,
        eye_width=float(rng.uniform(18.0, 26.0)),
        yaw=yaw,
        pitch=0.25 * smooth_noise(rng, t, (5.0, 20.0)),
        roll=0.3 * smooth_noise(rng, t, (8.0, 30.0)),
        body_yaw=0.4 * smooth_noise(rng, t, (10.0, 30.0)),
        tail=smooth_noise(rng, t, (3.0, 10.0)),
        ux=0.5 + 0.5 * smooth_noise(rng, t, (15.0, 60.0)),
        uy=1.0 - 0.35 * np.abs(smooth_noise(rng, t, (20.0, 60.0))),
        blink=blink,
    )


def _pose(m: _Motion, i: int, layout: RackLayout, box: int) -> MousePose:
    pose = MousePose(
        0.0,
        0.0,
        m.eye_width,
        3.0,
        float(m.yaw[i]),
        float(m.pitch[i]),
        float(m.roll[i]),
        float(m.body_yaw[i]),
        float(m.tail[i]),
    )
    x0, y0, x1, y1 = project(pose).bounds()
    _, _, w, h = layout.rois[box]
    left, top, right, bottom = layout.interior(box)
    lo_x, hi_x = left - x0, w - right - x1
    lo_y, hi_y = top - y0, h - bottom - y1
    x = lo_x + m.ux[i] * (hi_x - lo_x) if hi_x >= lo_x else (lo_x + hi_x) / 2
    y = lo_y + m.uy[i] * (hi_y - lo_y) if hi_y >= lo_y else (lo_y + hi_y) / 2
    return replace(pose, x=float(x), y=float(y))


def write_video(
    path: Path | str,
    seconds: float,
    fps: float = 30.0,
    seed: int = 0,
    trajectory: str = "postop",
    codec: str | None = None,
    furs: tuple[str, ...] = ("black", "black", "black", "black"),
    progress: bool = False,
) -> Path:
    """Render the video and its `.truth.jsonl` sidecar; returns the video path.

    codec: a FourCC ("MJPG", "mp4v", "XVID"); None picks by suffix (.avi MJPG, .mp4 mp4v).
    """
    path = Path(path)
    if trajectory not in TRAJECTORIES:
        raise MgsError(f"unknown trajectory {trajectory!r}; choose one of {', '.join(TRAJECTORIES)}")
    if seconds <= 0 or fps <= 0:
        raise MgsError(f"seconds and fps must be positive, got {seconds} s at {fps} fps")
    fourcc = codec or CODECS.get(path.suffix.lower())
    if fourcc is None:
        raise MgsError(f"cannot tell the codec from {path.name!r}; use a .avi (MJPG) or .mp4 (mp4v) file name")
    unknown = [f for f in furs if f not in FURS]
    if unknown:
        raise MgsError(f"unknown fur {unknown[0]!r}; choose from {', '.join(FURS)}")
    if not path.parent.is_dir():
        raise MgsError(f"folder {path.parent} does not exist; create it first")

    n = max(int(round(seconds * fps)), 1)
    t = np.arange(n) / fps
    rng = np.random.default_rng([int(seed), 0x71DE0])
    layout = RackLayout.random(int(seed))
    renderer = Renderer(layout)
    n_boxes = len(layout.rois)
    true_scores = scores(trajectory, t, n_boxes, rng)
    motions = [_motion(rng, t, furs[i % len(furs)]) for i in range(n_boxes)]
    nuisance = Nuisance(gain=float(rng.uniform(0.9, 1.1)), gamma=float(rng.uniform(0.9, 1.1)), noise=1)

    h, w = layout.height, layout.width
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), float(fps), (w, h))
    if not writer.isOpened():
        raise MgsError(f"OpenCV cannot write {fourcc} to {path}; use a .avi (MJPG) or .mp4 (mp4v) file")
    if fourcc == "MJPG":
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, MJPG_QUALITY)
    header = {
        "format": TRUTH_FORMAT,
        "version": 1,
        "video": path.name,
        "fps": float(fps),
        "frames": n,
        "width": w,
        "height": h,
        "seed": int(seed),
        "trajectory": trajectory,
        "codec": fourcc,
        "rois": [list(r) for r in layout.rois],
        "furs": list(furs),
    }
    bar = FrameProgress(n, 30, progress)
    prev = [None] * n_boxes
    try:
        with open(truth_path(path), "w", encoding="utf-8") as sidecar, one_opencv_thread():
            sidecar.write(json.dumps(header) + "\n")
            for i in range(n):
                animals, boxes_n = [], []
                for b, m in enumerate(motions):
                    pose = _pose(m, i, layout, b)
                    speed = 0.0 if prev[b] is None else math.hypot(pose.x - prev[b].x, pose.y - prev[b].y)
                    angle = 0.0 if prev[b] is None else math.degrees(math.atan2(pose.y - prev[b].y, pose.x - prev[b].x))
                    prev[b] = pose
                    animals.append(
                        Animal(
                            FURS[m.fur],
                            pose,
                            float(true_scores[i, b]),
                            blink=bool(m.blink[i]),
                            texture_seed=int(seed) * 16 + b,
                        )
                    )
                    boxes_n.append(
                        BoxNuisance(motion=min(speed * 0.8, 10.0) if speed > 2.5 else 0.0, motion_angle=-angle)
                    )
                frame = renderer.render(
                    animals, replace(nuisance, boxes=tuple(boxes_n)), np.random.default_rng([int(seed), i])
                )
                writer.write(frame.image)
                line = {
                    "frame": i,
                    "t": round(float(t[i]), 4),
                    "boxes": [
                        {**b.to_json(), "animal_score": round(float(true_scores[i, b.box]), 3)} for b in frame.boxes
                    ],
                }
                sidecar.write(json.dumps(line, separators=(",", ":")) + "\n")
                bar.update(i + 1)
    except OSError as exc:
        raise MgsError(f"could not write {truth_path(path)}: {exc.strerror} (disk full?)") from exc
    finally:
        writer.release()
    bar.close()
    if not path.is_file() or path.stat().st_size == 0:
        raise MgsError(f"OpenCV wrote nothing to {path} (disk full or codec {fourcc} unavailable)")
    return path
