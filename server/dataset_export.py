"""Reviewed samples -> a labelled dataset in the toolchain's format (docs/dataset.md).

A facility's own animals become training and test data here: every sample with enough scorable
ratings becomes one frame (its full-resolution ROI image, written as stored) and one label line.
The eyes are the raters' consensus: each rater's marked positions (face-crop pixels) are mapped
into the ROI image, matched across raters, and kept when at least half of the raters who scored the
sample marked them; each kept eye carries the mean of the raters' orbital tightening scores. The
line's `review` object keeps every rater's own scores (pseudonymised) so agreement can be studied
from the exported files alone.

The server does not import the toolchain (tests/test_imports.py), so the format is written with the
standard library; tests prove it with `mgs-export validate`. Planning reads no image data, so an
empty or impossible export is refused before any file or download starts, and the images are then
read one at a time while they are written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import sqlite_utils

from mgs_core.errors import MgsError

FORMAT = "mgs-rack-dataset"
VERSION = 1
CONSENSUS_RATER = "consensus"
DEFAULT_MIN_RATERS = 2
SAME_EYE_PX = 12.0  # raters' marks closer than this (ROI px) are one eye, as in the toolchain's merge
SAME_EYE_FACE_SHARE = 0.15  # ... or closer than this share of the face crop's width, on large faces
IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png"}
_MAGIC = {"jpg": b"\xff\xd8", "png": b"\x89PNG\r\n\x1a\n"}
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


class NothingToExport(MgsError):
    """No sample passes the filters; the message says why each candidate was left out."""


@dataclass(frozen=True)
class ExportFilter:
    since: float | None = None  # taken_at >= since (Unix seconds)
    until: float | None = None  # taken_at < until
    min_raters: int = DEFAULT_MIN_RATERS  # scorable ratings a sample needs
    device: str = ""  # "" = every device

    def check(self) -> None:
        if self.min_raters < 1:
            raise MgsError(f"--min-raters {self.min_raters}: a sample needs at least 1 scorable rating")
        if self.since is not None and self.until is not None and self.until <= self.since:
            raise MgsError("the export's --until must be after its --since")


@dataclass
class ExportCounts:
    """What happened to every sample the filters matched (reported in dataset.json and by the CLI)."""

    samples: int = 0  # matched by time and device
    exported: int = 0
    too_few_ratings: int = 0  # fewer ratings than min_raters so far: review them first
    not_scorable: int = 0  # rated by enough people, but fewer than min_raters found it scorable
    no_eyes: int = 0  # scorable, but the raters marked no eye position
    no_image: int = 0  # the ROI image is missing, or not the JPEG/PNG its type says
    eyes: int = 0
    scored_eyes: int = 0
    dropped_eye_marks: int = 0  # eyes marked by fewer than half of the raters

    def describe(self) -> str:
        return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in asdict(self).items())


@dataclass(frozen=True)
class PlannedFrame:
    sample_id: int
    image: str  # path inside the dataset
    label: dict[str, Any]  # the labels.jsonl line


@dataclass
class ExportPlan:
    filters: ExportFilter
    frames: list[PlannedFrame] = field(default_factory=list)
    counts: ExportCounts = field(default_factory=ExportCounts)


def parse_when(option: str, text: str | None, zone: str, end: bool = False) -> float | None:
    """A date or ISO date-time in `zone` (unless it carries an offset) -> Unix seconds; None for none.

    With `end`, a bare date means the end of that day, so "until 2026-11-30" includes the 30th.
    """
    if text is None or not text.strip():
        return None
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise MgsError(f"{option} {text!r} is not a date; write it like 2026-11-01 or 2026-11-01T08:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=ZoneInfo(zone))
    if end and len(text.strip()) == 10:
        when += timedelta(days=1)
    return when.timestamp()


def face_to_roi(x: float, y: float, face_box: list[float], face_size: tuple[int, int] | None) -> tuple[float, float]:
    """A position in the face crop (what raters click) -> ROI image pixels.

    `face_box` is [x, y, w, h] of the crop in the ROI (samples.meta_json); `face_size` (w, h) is the
    stored face image's size, so a crop that was resized before upload still maps correctly.
    """
    fx, fy, fw, fh = (float(v) for v in face_box)
    sx = fw / face_size[0] if face_size and face_size[0] else 1.0
    sy = fh / face_size[1] if face_size and face_size[1] else 1.0
    return fx + x * sx, fy + y * sy


def pseudonyms(usernames: list[str]) -> dict[str, str]:
    """R1, R2, ... in user-name order: stable within one export, never a login name in a shared file."""
    return {name: f"R{i}" for i, name in enumerate(sorted(set(usernames)), start=1)}


def _consensus_eyes(
    marks: list[list[tuple[float, float]]], radius: float, size: tuple[int, int]
) -> tuple[list[tuple[float, float]], int]:
    """Raters' eyes matched by distance; kept when at least half of the raters marked them.

    Returns the mean positions (inside the image) and how many marked eyes were dropped.
    """
    clusters: list[list[tuple[float, float]]] = []
    for rater_marks in marks:
        taken: set[int] = set()
        for x, y in rater_marks:
            free = [i for i in range(len(clusters)) if i not in taken]
            best = min(free, key=lambda i: math.dist(clusters[i][0], (x, y)), default=None)
            if best is not None and math.dist(clusters[best][0], (x, y)) <= radius:
                clusters[best].append((x, y))
                taken.add(best)
            else:
                clusters.append([(x, y)])
                taken.add(len(clusters) - 1)
    need = math.ceil(len(marks) / 2)
    kept, dropped = [], 0
    w, h = size
    for c in clusters:
        if len(c) < need:
            dropped += len(c)
            continue
        x = min(max(sum(p[0] for p in c) / len(c), 0.0), w - 0.01)
        y = min(max(sum(p[1] for p in c) / len(c), 0.0), h - 0.01)
        kept.append((round(x, 2), round(y, 2)))
    return kept, dropped


def _points(eyes_json: str) -> list[tuple[float, float]]:
    try:
        eyes = json.loads(eyes_json or "[]")
    except json.JSONDecodeError:
        return []
    out = []
    for e in eyes if isinstance(eyes, list) else []:
        if isinstance(e, dict) and all(isinstance(e.get(k), (int, float)) for k in ("x", "y")):
            out.append((float(e["x"]), float(e["y"])))
    return out


def _meta(text: str) -> dict[str, Any]:
    try:
        meta = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {}
    return meta if isinstance(meta, dict) else {}


def plan_export(db: sqlite_utils.Database, filters: ExportFilter) -> ExportPlan:
    """Decide every frame and label line without reading image data; raises NothingToExport."""
    filters.check()
    where, params = ["1 = 1"], []
    if filters.since is not None:
        where.append("s.taken_at >= ?")
        params.append(filters.since)
    if filters.until is not None:
        where.append("s.taken_at < ?")
        params.append(filters.until)
    if filters.device:
        where.append("s.device = ?")
        params.append(filters.device)
    samples = db.execute(
        "SELECT s.id, s.device, s.sample_key, s.box, s.taken_at, s.reason, s.model_version, s.model_score,"
        " s.meta_json, r.mime, r.width, r.height, f.width, f.height, substr(r.data, 1, 8)"
        " FROM samples s LEFT JOIN sample_images r ON r.sample_id = s.id AND r.kind = 'roi'"
        " LEFT JOIN sample_images f ON f.sample_id = s.id AND f.kind = 'face'"
        f" WHERE {' AND '.join(where)} ORDER BY s.taken_at, s.id",
        params,
    ).fetchall()
    ratings: dict[int, list[tuple]] = {}
    for row in db.execute(
        "SELECT sample_id, username, scorable, ot_score, mgs_score, eyes_json FROM sample_ratings"
        f" WHERE sample_id IN (SELECT s.id FROM samples s WHERE {' AND '.join(where)}) ORDER BY username",
        params,
    ).fetchall():
        ratings.setdefault(row[0], []).append(row[1:])
    names = pseudonyms([r[0] for s in samples for r in ratings.get(s[0], [])])
    plan = ExportPlan(filters)
    for s in samples:
        plan.counts.samples += 1
        frame = _plan_frame(s, ratings.get(s[0], []), names, filters.min_raters, plan.counts)
        if frame is not None:
            plan.frames.append(frame)
            plan.counts.exported += 1
    if not plan.frames:
        raise NothingToExport(_nothing_message(filters, plan.counts))
    return plan


def _nothing_message(filters: ExportFilter, counts: ExportCounts) -> str:
    if not counts.samples:
        return "no review samples match these filters; widen --since/--until or check --device"
    return (
        f"none of the {counts.samples} matching samples can be exported with --min-raters {filters.min_raters} "
        f"({counts.describe()}); rate more samples on the review page or lower --min-raters"
    )


def _plan_frame(
    sample: tuple, ratings: list[tuple], names: dict[str, str], min_raters: int, counts: ExportCounts
) -> PlannedFrame | None:
    (
        sid,
        device,
        key,
        box,
        taken_at,
        reason,
        model_version,
        model_score,
        meta_json,
        mime,
        w,
        h,
        face_w,
        face_h,
        head,
    ) = sample
    scorable = [r for r in ratings if r[1]]
    if len(scorable) < min_raters:
        if len(ratings) >= min_raters:
            counts.not_scorable += 1
        else:
            counts.too_few_ratings += 1
        return None
    ext = IMAGE_TYPES.get(mime or "")
    if ext is None or not w or not h or not bytes(head or b"").startswith(_MAGIC[ext]):
        counts.no_image += 1
        return None
    meta = _meta(meta_json)
    face_box = meta.get("face_box")
    if not (isinstance(face_box, list) and len(face_box) == 4 and all(isinstance(v, (int, float)) for v in face_box)):
        face_box = [0, 0, face_w or w, face_h or h]
    face_size = (face_w, face_h) if face_w and face_h else None
    marks = [[face_to_roi(x, y, face_box, face_size) for x, y in _points(r[4])] for r in scorable]
    radius = max(SAME_EYE_PX, SAME_EYE_FACE_SHARE * float(face_box[2]))
    eyes, dropped = _consensus_eyes(marks, radius, (w, h))
    counts.dropped_eye_marks += dropped
    if not eyes:
        counts.no_eyes += 1
        return None
    ot = [float(r[2]) for r in scorable if r[2] is not None]
    score = round(sum(ot) / len(ot), 3) if ot else None
    counts.eyes += len(eyes)
    counts.scored_eyes += len(eyes) if score is not None else 0
    image = f"images/{_SAFE.sub('-', device)}-{sid}.{ext}"
    label = {
        "image": image,
        "mask": None,
        "rater": CONSENSUS_RATER,
        "boxes": [
            {
                "box": int(box),
                "roi": [0, 0, int(w), int(h)],
                "face_visible": True,
                "eyes": [{"x": x, "y": y, **({"score": score} if score is not None else {})} for x, y in eyes],
            }
        ],
        "conditions": {"device": device, "reason": reason, "raters": len(scorable)},
        "review": {
            "sample_id": sid,
            "device": device,
            "sample_key": key,
            "taken_at": taken_at,
            "model_version": model_version,
            "model_score": model_score,
            "ratings": [
                {
                    "rater": names[r[0]],
                    "scorable": bool(r[1]),
                    "ot": r[2],
                    "mgs": r[3],
                    "eyes": [{"x": round(x, 2), "y": round(y, 2)} for x, y in mark],
                }
                for r, mark in zip(scorable, marks)
            ]
            + [
                {"rater": names[r[0]], "scorable": False, "ot": None, "mgs": None, "eyes": []}
                for r in ratings
                if not r[1]
            ],
        },
    }
    return PlannedFrame(sid, image, label)


def dataset_files(db: sqlite_utils.Database, plan: ExportPlan, server: str = "") -> Iterator[tuple[str, bytes]]:
    """(path, content) of every file of the dataset: the images one by one, then labels and description."""
    for frame in plan.frames:
        row = db.execute(
            "SELECT data FROM sample_images WHERE sample_id = ? AND kind = 'roi'", [frame.sample_id]
        ).fetchone()
        if row is None:
            raise MgsError(f"sample {frame.sample_id} was deleted during the export; export again")
        yield frame.image, bytes(row[0])
    labels = "".join(json.dumps(f.label, separators=(",", ":")) + "\n" for f in plan.frames).encode()
    yield "labels.jsonl", labels
    info = describe(plan, hashlib.sha256(labels).hexdigest(), server)
    yield "dataset.json", (json.dumps(info, indent=2) + "\n").encode()
    yield "README.md", readme(info).encode()


def describe(plan: ExportPlan, labels_sha256: str, server: str = "") -> dict[str, Any]:
    """dataset.json: the format header and, under `generator`, where and how the export was made."""
    f = plan.filters
    return {
        "format": FORMAT,
        "version": VERSION,
        "score_scale": [0, 9],
        "source": f"mgs-server review samples from {server or socket.gethostname()}",
        "description": "ROI images of reviewed samples; eyes and scores are the raters' consensus",
        "generator": {
            "tool": "mgs-server export-dataset",
            "server": server or socket.gethostname(),
            "exported_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "filters": {"since": f.since, "until": f.until, "min_raters": f.min_raters, "device": f.device or None},
            "counts": asdict(plan.counts),
            "labels_sha256": labels_sha256,
        },
    }


def readme(info: dict[str, Any]) -> str:
    g = info["generator"]
    c = g["counts"]
    return (
        "# Reviewed samples exported from mgs-server\n\n"
        f"Exported {g['exported_at']} from {g['server']} with filters {json.dumps(g['filters'])}.\n"
        f"{c['exported']} of {c['samples']} matching samples, {c['eyes']} eyes ({c['scored_eyes']} scored). Left out: "
        f"{c['too_few_ratings']} with too few ratings, {c['not_scorable']} not scorable, {c['no_eyes']} without eye "
        f"positions, {c['no_image']} without a usable image.\n\n"
        "Each line of labels.jsonl is one sample's ROI image with the raters' consensus eyes (mean score);\n"
        "`review.ratings` keeps each rater's own scores under a pseudonym (R1, R2, ... within this export).\n"
        f"labels.jsonl sha256: {g['labels_sha256']}\n\n"
        "Check it with `mgs-export validate THIS_FOLDER`; docs/training.md describes fine-tuning on it.\n"
    )


def prepare_folder(out: Path) -> None:
    """Create OUT (or accept it empty), refusing before any database work when it cannot be used."""
    if out.exists() and not out.is_dir():
        raise MgsError(f"{out} is a file; give a new or empty folder for the dataset")
    if out.is_dir() and any(out.iterdir()):
        raise MgsError(f"{out} is not empty; give a new or empty folder so no old frame is mixed into this export")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise MgsError(f"cannot write to {out} ({exc.strerror}); choose a folder you may write to") from None


def write_folder(db: sqlite_utils.Database, plan: ExportPlan, out: Path, server: str = "") -> dict[str, Any]:
    """Write the dataset into the (empty) folder `out`; returns what dataset.json says."""
    (out / "images").mkdir(exist_ok=True)
    info: dict[str, Any] = {}
    try:
        for name, data in dataset_files(db, plan, server):
            path = out / name
            tmp = path.with_name(path.name + ".part")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            if name == "dataset.json":
                info = json.loads(data)
    except OSError as exc:
        raise MgsError(
            f"writing the dataset into {out} failed ({exc.strerror}); free space or fix permissions and export again into an empty folder"
        ) from None
    return info
