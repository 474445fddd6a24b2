"""What `mgs-device score` writes: per-video CSVs, plot and annotated MP4; batch summaries.

Per video (folder named after the video): `windows.csv` has one row per box and window with the
fields of the live MQTT score window; `eyes.csv` (with --per-eye) one row per eye and frame;
`plot.png`; `annotated.mp4` (with --annotate); `result.json` with everything the summary and the
server import need. Over the batch: `summary.json`, `summary.csv` (one row per video and box) and
`groups.csv` (one row per group and time point of the animals file).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np

from device.aggregate import BoxWindow
from device.alerts import AlertConfig, AlertTracker
from device.localview import draw_preview
from device.results import FrameResult
from device.rois import Roi
from device.sidecar import Sidecar
from device.videoscore import VideoScore, window_index
from mgs_core.errors import MgsError
from mgs_core.messages import SCORE_COLUMNS, utc_iso

WINDOW_FIELDS = (
    "video",
    "box",
    "animal",
    "group",
    "timepoint",
    "window",
    "t_start_s",
    "t_end_s",
    *SCORE_COLUMNS,
    "version",
    "abstained_eyes",
)
EYE_FIELDS = ("video", "frame", "t_s", "box", "eye", "x", "y", "score", "quality_ok", "area_px", "sharpness")
SUMMARY_FIELDS = (
    "video",
    "box",
    "animal",
    "group",
    "timepoint",
    "windows",
    "face_windows",
    "coverage",
    "mean_score",
    "time_above_threshold_s",
    "threshold",
)
GROUP_FIELDS = (
    "group",
    "timepoint",
    "animals",
    "boxes",
    "mean_score",
    "sd_score",
    "time_above_threshold_s",
    "coverage",
)
ANNOTATED_CODEC = "mp4v"


def _num(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


class EyeRows:
    """Per-frame, per-eye CSV rows, written while the video is scored (nothing kept in memory)."""

    def __init__(self, path: Path, video: str, fps: float) -> None:
        self.video = video
        self.fps = fps
        self._file: TextIO = path.open("w", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        self._csv.writerow(EYE_FIELDS)

    def __call__(self, image: np.ndarray, result: FrameResult, closed: list[BoxWindow]) -> None:
        for box in result.boxes:
            for i, e in enumerate(box.eyes):
                self._csv.writerow(
                    (
                        self.video,
                        result.frame_index,
                        f"{result.frame_index / self.fps:.3f}",
                        box.box,
                        i,
                        f"{e.x:.1f}",
                        f"{e.y:.1f}",
                        f"{e.score:.3f}",
                        int(e.quality_ok),
                        e.area_px,
                        f"{e.sharpness:.1f}",
                    )
                )

    def close(self) -> None:
        self._file.close()


class AnnotatedVideo:
    """Every frame again, with boxes, eyes, the last window's scores and the alert state drawn on it.

    The drawing is the device's local preview (`draw_preview`), the picture of the paper's GUI; box
    state follows the live alert logic, so a box turns red where the device would have alerted.
    """

    def __init__(self, path: Path, fps: float, rois: Sequence[Roi], alerts: AlertConfig) -> None:
        self.path = path
        self.fps = fps
        self.rois = list(rois)
        self.tracker = AlertTracker(alerts)
        self.windows: dict[int, BoxWindow] = {}
        self._writer: cv2.VideoWriter | None = None

    def __call__(self, image: np.ndarray, result: FrameResult, closed: list[BoxWindow]) -> None:
        for w in closed:
            self.tracker.update(w)
            self.windows[w.box] = w
        canvas = draw_preview(
            image,
            self.rois,
            result,
            self.windows,
            self.tracker.raised_boxes(),
            f"t = {result.capture_time:7.2f} s  frame {result.frame_index}",
        )
        if self._writer is None:
            h, w = canvas.shape[:2]
            self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter.fourcc(*ANNOTATED_CODEC), self.fps, (w, h))
            if not self._writer.isOpened():
                raise MgsError(f"cannot write {self.path}; check the --out folder")
        self._writer.write(canvas)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


@dataclass(frozen=True)
class BoxSummary:
    box: int
    animal: str
    group: str
    timepoint: str
    windows: int
    face_windows: int
    mean_score: float | None
    time_above_threshold_s: float

    @property
    def coverage(self) -> float:
        return self.face_windows / self.windows if self.windows else 0.0


def summarise_box(
    box: int, windows: Sequence[BoxWindow], threshold: float, sidecar: Sidecar, video: Path
) -> BoxSummary:
    """Mean of the window scores, seconds at or above the threshold, share of windows with a face."""
    own = [w for w in windows if w.box == box]
    scored = [w for w in own if w.score is not None]
    who = sidecar.animal(video, box)
    return BoxSummary(
        box=box,
        animal=who.animal if who else "",
        group=who.group if who else "",
        timepoint=who.timepoint if who else "",
        windows=len(own),
        face_windows=len(scored),
        mean_score=statistics.fmean(w.score for w in scored) if scored else None,  # type: ignore[misc]
        time_above_threshold_s=sum(w.end - w.start for w in scored if w.score is not None and w.score >= threshold),
    )


def write_windows_csv(path: Path, result: VideoScore, sidecar: Sidecar, start: float | None) -> None:
    """One row per box and window, boxes one after another; wall-clock times only with a known start."""
    video = result.info.path
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(WINDOW_FIELDS)
        for w in sorted(result.windows, key=lambda w: (w.box, w.start)):
            who = sidecar.animal(video, w.box)
            out.writerow(
                (
                    video.name,
                    w.box,
                    who.animal if who else "",
                    who.group if who else "",
                    who.timepoint if who else "",
                    window_index(w, result.window_s),
                    f"{w.start:.3f}",
                    f"{w.end:.3f}",
                    utc_iso(start + w.start) if start is not None else "",
                    utc_iso(start + w.end) if start is not None else "",
                    w.frames,
                    w.valid_eyes,
                    _num(w.score),
                    _num(w.median),
                    _num(w.p90),
                    f"{w.face_visible_fraction:.4f}",
                    result.model_sha256,
                    result.version,
                    w.abstained_eyes,
                )
            )


def result_json(
    result: VideoScore, summaries: Sequence[BoxSummary], start: float | None, start_from: str, threshold: float
) -> dict[str, Any]:
    """Everything about one scored video, as written to result.json and sent to the server."""
    info = result.info
    return {
        "format": "mgs-video-scores",
        "version": 1,
        "video": info.path.name,
        "path": str(info.path),
        "fingerprint": result.fingerprint,
        "fps": info.fps,
        "frames": result.frames,
        "width": info.width,
        "height": info.height,
        "duration_s": round(result.frames / info.fps, 3),
        "start": utc_iso(start) if start is not None else None,
        "start_from": start_from,
        "window_s": result.window_s,
        "model_sha256": result.model_sha256,
        "software_version": result.version,
        "boxes_from": result.boxes_from,
        "rois": [r.as_list() for r in result.rois],
        "threshold": threshold,
        "warnings": result.warnings,
        "boxes": [
            {
                "box": s.box,
                "animal": s.animal,
                "group": s.group,
                "timepoint": s.timepoint,
                "windows": s.windows,
                "face_windows": s.face_windows,
                "coverage": round(s.coverage, 4),
                "mean_score": None if s.mean_score is None else round(s.mean_score, 3),
                "time_above_threshold_s": round(s.time_above_threshold_s, 3),
            }
            for s in summaries
        ],
        "windows": [
            {
                "box": w.box,
                "index": window_index(w, result.window_s),
                "t_start_s": round(w.start, 3),
                "t_end_s": round(w.end, 3),
                "frames": w.frames,
                "valid_eyes": w.valid_eyes,
                "score": _round(w.score),
                "median": _round(w.median),
                "p90": _round(w.p90),
                "face_visible_fraction": round(w.face_visible_fraction, 4),
                "abstained_eyes": w.abstained_eyes,
            }
            for w in sorted(result.windows, key=lambda w: (w.box, w.start))
        ],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write_summaries(out: Path, videos: Sequence[dict[str, Any]], failed: Sequence[dict[str, str]]) -> dict[str, Any]:
    """summary.json, summary.csv and groups.csv over every video that was scored."""
    rows = [
        {"video": v["video"], **{k: b[k] for k in b}, "threshold": v["threshold"]} for v in videos for b in v["boxes"]
    ]
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, SUMMARY_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    groups = group_summary(rows)
    with (out / "groups.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, GROUP_FIELDS)
        writer.writeheader()
        writer.writerows(groups)
    summary = {
        "format": "mgs-video-summary",
        "version": 1,
        "videos": [{k: v[k] for k in v if k != "windows"} for v in videos],
        "groups": groups,
        "failed": list(failed),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def group_summary(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group and time point: animals, mean and SD of the animals' mean scores, time above, coverage.

    Only boxes with an animal in the animals file count: an empty box is no member of any group.
    """
    by_key: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["animal"]:
            by_key.setdefault((r["group"], r["timepoint"]), []).append(r)
    out = []
    for (group, timepoint), members in sorted(by_key.items()):
        means = [m["mean_score"] for m in members if m["mean_score"] is not None]
        out.append(
            {
                "group": group,
                "timepoint": timepoint,
                "animals": len({m["animal"] for m in members}),
                "boxes": len(members),
                "mean_score": round(statistics.fmean(means), 3) if means else None,
                "sd_score": round(statistics.stdev(means), 3) if len(means) > 1 else None,
                "time_above_threshold_s": round(sum(m["time_above_threshold_s"] for m in members), 3),
                "coverage": round(statistics.fmean(m["coverage"] for m in members), 4),
            }
        )
    return out


def unique_folder(out: Path, video: Path, taken: set[str]) -> Path:
    """DIR/<video stem>, numbered when two videos of the batch share a stem."""
    name = video.stem or "video"
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}-{n}", n + 1
    taken.add(candidate)
    return out / candidate
