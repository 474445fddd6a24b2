"""The labelled-frame dataset format (docs/dataset.md), the same for synthetic and real data.

```
DATASET/
  dataset.json   {"format": "mgs-rack-dataset", "version": 1, "score_scale": [0, 9], "source": "..."}
  images/ID.png  full frames (.png or .jpg)
  masks/ID.png   optional class masks: 0 background, 1 animal, 2 ears, 3 eyes
  labels.jsonl   one JSON object per image and rater
```
`open_dataset` reads and checks the structure (cheap: image sizes come from file headers) and
`validate_dataset` additionally decodes every mask. Every problem names the file, and for
labels.jsonl the line, so a facility can fix its own labelled frames. Several raters label the
same image on several lines; `Dataset.frames` merges them into one frame per image with the mean
score per eye, which is what training and evaluation use.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mgs_core.errors import MgsError

FORMAT = "mgs-rack-dataset"
VERSION = 1
SCORE_MIN, SCORE_MAX = 0.0, 9.0
N_CLASSES = 4
SAME_EYE_PX = 12.0  # two raters' eyes closer than this are the same eye
DATASET_KEYS = {"format", "version", "score_scale", "source", "description", "generator"}
LINE_KEYS = {"image", "mask", "rater", "boxes", "conditions", "review"}  # review: provenance, not read
BOX_KEYS = {"box", "roi", "face_visible", "eyes", "conditions"}
# Conditions a frame or a box was recorded or rendered under ({"fur": "albino", "blur_px": 2.5}),
# so `evaluate` can break its metrics down by them. Flat, short keys; string, number or bool values.
MAX_CONDITIONS = 64
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
Condition = str | float | int | bool
EYE_KEYS = {"x", "y", "score", "visible"}
MAX_LISTED = 20


class DatasetError(MgsError):
    """The dataset does not follow the format; `problems` lists every finding."""

    def __init__(self, root: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = problems[:MAX_LISTED]
        more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
        super().__init__(
            f"dataset {root} has {len(problems)} problem(s) (format: docs/dataset.md):\n  " + "\n  ".join(shown) + more
        )


LABEL_DECIMALS = 2  # eye positions are written to 0.01 full-frame px


def label_point(x: float, y: float, bounds: tuple[int, int, int, int]) -> tuple[float, float] | None:
    """(x, y) as a label writes it, or None when that written position lies outside [x0, x1) x [y0, y1).

    Renderers test the rounded position, the one the format check reads: 1919.996 rounds to 1920.0,
    outside a 1920-px frame, and one such label failed a whole rendered set."""
    x0, y0, x1, y1 = bounds
    lx, ly = round(float(x), LABEL_DECIMALS), round(float(y), LABEL_DECIMALS)
    return (lx, ly) if x0 <= lx < x1 and y0 <= ly < y1 else None


@dataclass(frozen=True)
class Eye:
    x: float  # full-frame px
    y: float
    score: float | None  # orbital tightening 0-9; None = visible but not scored (e.g. a blink)
    visible: bool = True

    def to_json(self) -> dict:
        d: dict = {"x": self.x, "y": self.y, "visible": self.visible}
        if self.score is not None:
            d["score"] = self.score
        return d


@dataclass(frozen=True)
class Box:
    box: int
    roi: tuple[int, int, int, int]  # x, y, w, h in full-frame px
    face_visible: bool
    eyes: tuple[Eye, ...] = ()
    conditions: dict[str, Condition] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {
            "box": self.box,
            "roi": list(self.roi),
            "face_visible": self.face_visible,
            "eyes": [e.to_json() for e in self.eyes],
        }
        if self.conditions:
            d["conditions"] = dict(self.conditions)
        return d


@dataclass(frozen=True)
class Frame:
    """One image's labels: one rater's line, or all raters merged (`raters` then lists them)."""

    image: str  # path relative to the dataset folder
    mask: str | None
    boxes: tuple[Box, ...]
    raters: tuple[str, ...] = ()
    lines: tuple[int, ...] = ()  # labels.jsonl line numbers this frame came from
    size: tuple[int, int] = (0, 0)  # image (height, width)
    conditions: dict[str, Condition] = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {
            "image": self.image,
            "mask": self.mask,
            "rater": self.raters[0] if self.raters else "",
            "boxes": [b.to_json() for b in self.boxes],
        }
        if self.conditions:
            d["conditions"] = dict(self.conditions)
        return d


@dataclass(frozen=True)
class EyeSample:
    frame: int  # index into Dataset.frames (split folds by this, never by eye)
    image: np.ndarray  # the full frame, BGR uint8 (shared by the eyes of one frame)
    x: float
    y: float
    score: float


@dataclass(frozen=True)
class SegSample:
    frame: int
    image: np.ndarray  # full frame BGR
    mask: np.ndarray  # full frame class ids
    roi: tuple[int, int, int, int]
    box: int


@dataclass
class Dataset:
    root: Path
    info: dict
    labels: tuple[Frame, ...]  # one per labels.jsonl line
    frames: tuple[Frame, ...] = field(default=())  # one per image, raters merged

    def read_image(self, frame: Frame) -> np.ndarray:
        import cv2

        img = cv2.imread(str(self.root / frame.image), cv2.IMREAD_COLOR)
        if img is None:
            raise MgsError(
                f"{self.root / frame.image}: cannot decode the image; replace the file or remove its lines from labels.jsonl"
            )
        return img

    def read_mask(self, frame: Frame) -> np.ndarray | None:
        if frame.mask is None:
            return None
        import cv2

        mask = cv2.imread(str(self.root / frame.mask), cv2.IMREAD_UNCHANGED)
        if mask is None or mask.ndim != 2:
            raise MgsError(
                f"{self.root / frame.mask}: not a single-channel mask; write class ids 0-3 as an 8-bit grey PNG"
            )
        return mask

    def eye_samples(self) -> Iterator[EyeSample]:
        """Every visible, scored eye with its frame (each image decoded once)."""
        for index, frame in enumerate(self.frames):
            eyes = [e for b in frame.boxes for e in b.eyes if e.visible and e.score is not None]
            if eyes:
                image = self.read_image(frame)
                for e in eyes:
                    yield EyeSample(index, image, e.x, e.y, float(e.score))

    def seg_samples(self) -> Iterator[SegSample]:
        """Every box of every frame that has a mask (each image decoded once)."""
        for index, frame in enumerate(self.frames):
            if frame.mask is None or not frame.boxes:
                continue
            image, mask = self.read_image(frame), self.read_mask(frame)
            for b in frame.boxes:
                yield SegSample(index, image, mask, b.roi, b.box)

    def counts(self) -> dict[str, int]:
        eyes = [e for f in self.frames for b in f.boxes for e in b.eyes]
        return {
            "images": len(self.frames),
            "label_lines": len(self.labels),
            "raters": len({r for f in self.labels for r in f.raters}),
            "masks": sum(f.mask is not None for f in self.frames),
            "boxes": sum(len(f.boxes) for f in self.frames),
            "faces_visible": sum(b.face_visible for f in self.frames for b in f.boxes),
            "eyes": len(eyes),
            "scored_eyes": sum(e.score is not None for e in eyes),
        }


def describe_counts(counts: dict[str, int]) -> str:
    """'12 images, 12 label lines, ...' for command output."""
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())


def image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding; None if neither."""
    with open(path, "rb") as fh:
        head = fh.read(32)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            w, h = struct.unpack(">II", head[16:24])
            return h, w
        if head[:2] != b"\xff\xd8":
            return None
        fh.seek(2)
        while True:
            marker = fh.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                return None
            kind = marker[1]
            if kind in (0xD8, 0x01) or 0xD0 <= kind <= 0xD7:
                continue
            length_bytes = fh.read(2)
            if len(length_bytes) < 2:
                return None
            (length,) = struct.unpack(">H", length_bytes)
            if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):
                data = fh.read(5)
                if len(data) < 5:
                    return None
                h, w = struct.unpack(">HH", data[1:5])
                return h, w
            fh.seek(length - 2, 1)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class _Checker:
    """Collects problems while parsing; each problem is prefixed with its file (and line)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.problems: list[str] = []
        self.sizes: dict[str, tuple[int, int] | None] = {}

    def add(self, where: str, problem: str) -> None:
        self.problems.append(f"{where}: {problem}")

    def unknown_keys(self, where: str, d: dict, allowed: set[str], what: str) -> None:
        """A misspelt key is an error, not a silently ignored field."""
        for key in sorted(set(d) - allowed):
            self.add(where, f"unknown {what}{key!r} (allowed: {', '.join(sorted(allowed))})")

    def info(self) -> dict:
        path = self.root / "dataset.json"
        where = str(path)
        if not path.is_file():
            self.add(
                where, f'missing; create it with {{"format": "{FORMAT}", "version": {VERSION}, "score_scale": [0, 9]}}'
            )
            return {}
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            self.add(where, f"bad JSON ({exc})")
            return {}
        if not isinstance(info, dict):
            self.add(where, "must be a JSON object")
            return {}
        if info.get("format") != FORMAT:
            self.add(where, f"format is {info.get('format')!r}, expected {FORMAT!r}")
        if info.get("version") != VERSION:
            self.add(where, f"version is {info.get('version')!r}, this toolchain reads version {VERSION}")
        if "score_scale" in info and info["score_scale"] != [0, 9]:
            self.add(where, f"score_scale is {info['score_scale']!r}, only [0, 9] (orbital tightening) is supported")
        self.unknown_keys(where, info, DATASET_KEYS, "key ")
        return info

    def file(self, where: str, rel: object, what: str) -> str | None:
        if not isinstance(rel, str) or not rel:
            self.add(where, f"{what} must be a path relative to the dataset folder, got {rel!r}")
            return None
        p = Path(rel)
        if p.is_absolute() or ".." in p.parts:
            self.add(where, f"{what} {rel!r} must stay inside the dataset folder (relative, no '..')")
            return None
        if rel not in self.sizes:
            full = self.root / rel
            if not full.is_file():
                self.sizes[rel] = None
            else:
                self.sizes[rel] = image_size(full) or (-1, -1)
        size = self.sizes[rel]
        if size is None:
            self.add(where, f"{rel}: missing {what}")
            return None
        if size == (-1, -1):
            self.add(where, f"{rel}: {what} is not a PNG or JPEG file")
            return None
        return rel

    def eye(self, where: str, d: object, size: tuple[int, int] | None) -> Eye | None:
        if not isinstance(d, dict):
            self.add(where, f"eye must be an object, got {d!r}")
            return None
        self.unknown_keys(where, d, EYE_KEYS, "eye key ")
        x, y, score, visible = d.get("x"), d.get("y"), d.get("score"), d.get("visible", True)
        ok = True
        if not (_number(x) and _number(y)):
            self.add(where, f"eye x and y must be numbers (full-frame px), got x={x!r} y={y!r}")
            ok = False
        elif size is not None and not (0 <= x < size[1] and 0 <= y < size[0]):
            self.add(where, f"eye ({x}, {y}) is outside the {size[1]}x{size[0]} image")
            ok = False
        if score is not None and not (_number(score) and SCORE_MIN <= score <= SCORE_MAX):
            self.add(where, f"eye score {score!r} is outside 0-9 (leave it out for an unscored eye)")
            ok = False
        if not isinstance(visible, bool):
            self.add(where, f"eye visible must be true or false, got {visible!r}")
            ok = False
        return Eye(float(x), float(y), None if score is None else float(score), visible) if ok else None

    def conditions(self, where: str, d: object) -> dict[str, Condition] | None:
        if not isinstance(d, dict) or len(d) > MAX_CONDITIONS:
            self.add(where, f"conditions must be an object of at most {MAX_CONDITIONS} entries, got {d!r}")
            return None
        bad = [k for k, v in d.items() if not _NAME_RE.match(k) or not (isinstance(v, (str, bool)) or _number(v))]
        if bad:
            self.add(
                where, f"conditions {bad} need a short name (letters, digits, '_') and a string, number or bool value"
            )
            return None
        return dict(d)

    def box(self, where: str, d: object, size: tuple[int, int] | None) -> Box | None:
        if not isinstance(d, dict):
            self.add(where, f"box must be an object, got {d!r}")
            return None
        self.unknown_keys(where, d, BOX_KEYS, "box key ")
        ok = True
        n, roi, face, eyes = d.get("box"), d.get("roi"), d.get("face_visible", False), d.get("eyes", [])
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            self.add(where, f"box must be a box number >= 0, got {n!r}")
            ok = False
        if not (isinstance(roi, list) and len(roi) == 4 and all(_number(v) for v in roi) and roi[2] > 0 and roi[3] > 0):
            self.add(where, f"box {n} roi must be [x, y, w, h] with w, h > 0, got {roi!r}")
            ok = False
        elif size is not None and (roi[0] < 0 or roi[1] < 0 or roi[0] + roi[2] > size[1] or roi[1] + roi[3] > size[0]):
            self.add(where, f"box {n} roi {roi} is outside the {size[1]}x{size[0]} image")
            ok = False
        if not isinstance(face, bool):
            self.add(where, f"box {n} face_visible must be true or false, got {face!r}")
            ok = False
        if not isinstance(eyes, list):
            self.add(where, f"box {n} eyes must be a list, got {eyes!r}")
            return None
        parsed = [self.eye(where, e, size) for e in eyes]
        conditions = self.conditions(where, d.get("conditions", {}))
        if not ok or conditions is None or any(e is None for e in parsed):
            return None
        return Box(n, tuple(int(round(v)) for v in roi), face, tuple(parsed), conditions)

    def line(self, lineno: int, text: str) -> Frame | None:
        where = f"{self.root / 'labels.jsonl'}:{lineno}"
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            self.add(where, f"bad JSON ({exc})")
            return None
        if not isinstance(d, dict):
            self.add(where, "each line must be a JSON object")
            return None
        self.unknown_keys(where, d, LINE_KEYS, "key ")
        image = self.file(where, d.get("image"), "image")
        mask = d.get("mask")
        if mask is not None:
            mask = self.file(where, mask, "mask")
            if mask is not None and image is not None and self.sizes[mask] != self.sizes[image]:
                mh, mw = self.sizes[mask]
                ih, iw = self.sizes[image]
                self.add(where, f"{mask}: mask is {mw}x{mh} but the image {image} is {iw}x{ih}")
                mask = None
        rater = d.get("rater", "")
        if not isinstance(rater, str):
            self.add(where, f"rater must be a name (string), got {rater!r}")
        boxes = d.get("boxes")
        if not isinstance(boxes, list):
            self.add(where, f"boxes must be a list, got {boxes!r}")
            return None
        size = self.sizes.get(image) if image else None
        parsed = [self.box(where, b, size) for b in boxes]
        numbers = [b.box for b in parsed if b is not None]
        if len(numbers) != len(set(numbers)):
            self.add(where, f"box numbers repeat: {numbers}")
        conditions = self.conditions(where, d.get("conditions", {}))
        if not isinstance(d.get("review", {}), dict):
            self.add(where, f"review must be an object (written by mgs-server export-dataset), got {d['review']!r}")
        if image is None or conditions is None or any(b is None for b in parsed):
            return None
        return Frame(
            image,
            mask,
            tuple(parsed),
            (rater if isinstance(rater, str) else "",),
            (lineno,),
            size or (0, 0),
            conditions,
        )

    def labels(self) -> list[Frame]:
        path = self.root / "labels.jsonl"
        if not path.is_file():
            self.add(str(path), "missing; write one JSON object per image (see docs/dataset.md)")
            return []
        frames = []
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            self.add(str(path), f"not UTF-8 text ({exc})")
            return []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                f = self.line(lineno, line)
                if f is not None:
                    frames.append(f)
        return frames

    def mask_values(self, frames: list[Frame]) -> None:
        import cv2

        for rel in sorted({f.mask for f in frames if f.mask is not None}):
            mask = cv2.imread(str(self.root / rel), cv2.IMREAD_UNCHANGED)
            where = str(self.root / rel)
            if mask is None:
                self.add(where, "cannot decode the mask")
            elif mask.ndim != 2 or mask.dtype != np.uint8:
                self.add(where, f"mask must be 8-bit single channel (class ids), got shape {mask.shape} {mask.dtype}")
            elif int(mask.max(initial=0)) >= N_CLASSES:
                bad = sorted(int(v) for v in np.unique(mask) if v >= N_CLASSES)[:5]
                self.add(where, f"mask values {bad} outside 0-3 (0 background, 1 animal, 2 ears, 3 eyes)")


def _merge_eyes(groups: list[list[Eye]]) -> tuple[Eye, ...]:
    clusters: list[list[Eye]] = []
    for eyes in groups:
        for e in eyes:
            best = min(clusters, key=lambda c: math.hypot(c[0].x - e.x, c[0].y - e.y), default=None)
            if best is not None and math.hypot(best[0].x - e.x, best[0].y - e.y) <= SAME_EYE_PX:
                best.append(e)
            else:
                clusters.append([e])
    merged = []
    for c in clusters:
        scores = [e.score for e in c if e.score is not None]
        merged.append(
            Eye(
                round(sum(e.x for e in c) / len(c), LABEL_DECIMALS),
                round(sum(e.y for e in c) / len(c), LABEL_DECIMALS),
                round(sum(scores) / len(scores), 3) if scores else None,
                any(e.visible for e in c),
            )
        )
    return tuple(merged)


def merge_raters(labels: list[Frame] | tuple[Frame, ...]) -> tuple[Frame, ...]:
    """One frame per image: eyes matched by position across raters, mean score per eye."""
    by_image: dict[str, list[Frame]] = {}
    for f in labels:
        by_image.setdefault(f.image, []).append(f)
    out = []
    for image, group in by_image.items():
        if len(group) == 1:
            out.append(group[0])
            continue
        numbers = sorted({b.box for f in group for b in f.boxes})
        boxes = []
        for n in numbers:
            rated = [b for f in group for b in f.boxes if b.box == n]
            boxes.append(
                Box(
                    n,
                    rated[0].roi,
                    any(b.face_visible for b in rated),
                    _merge_eyes([list(b.eyes) for b in rated]),
                    rated[0].conditions,
                )
            )
        mask = next((f.mask for f in group if f.mask is not None), None)
        out.append(
            Frame(
                image,
                mask,
                tuple(boxes),
                tuple(r for f in group for r in f.raters),
                tuple(n for f in group for n in f.lines),
                group[0].size,
                group[0].conditions,
            )
        )
    return tuple(out)


def _check(root: Path, masks: bool) -> tuple[_Checker, dict, list[Frame]]:
    root = Path(root)
    checker = _Checker(root)
    if not root.is_dir():
        checker.add(str(root), "no such dataset folder")
        return checker, {}, []
    info = checker.info()
    frames = checker.labels()
    if masks:
        checker.mask_values(frames)
    return checker, info, frames


def open_dataset(root: Path | str) -> Dataset:
    """Read a dataset; raise DatasetError listing every structural problem (mask pixels are not decoded)."""
    root = Path(root)
    checker, info, frames = _check(root, masks=False)
    if checker.problems:
        raise DatasetError(root, checker.problems)
    if not frames:
        raise DatasetError(root, [f"{root / 'labels.jsonl'}: no labelled images"])
    return Dataset(root, info, tuple(frames), merge_raters(frames))


def combine_datasets(datasets: Sequence[Dataset]) -> Dataset:
    """Several datasets as one, for training on all of them (e.g. synthetic frames of two presets, or
    a facility's reviewed frames with synthetic ones).

    The combined root is the folders' common parent and every image and mask path is rewritten
    relative to it, so `read_image` and `read_mask` find the files where they are; nothing is copied.
    """
    if len(datasets) == 1:
        return datasets[0]
    roots = [d.root.resolve() for d in datasets]
    root = Path(os.path.commonpath(roots))

    def rebase(prefix: Path, frame: Frame) -> Frame:
        mask = None if frame.mask is None else str(prefix / frame.mask)
        return dataclasses.replace(frame, image=str(prefix / frame.image), mask=mask)

    prefixes = [r.relative_to(root) for r in roots]
    return Dataset(
        root,
        {"combined": [{"root": str(r), **d.info} for r, d in zip(roots, datasets)]},
        tuple(rebase(p, f) for p, d in zip(prefixes, datasets) for f in d.labels),
        tuple(rebase(p, f) for p, d in zip(prefixes, datasets) for f in d.frames),
    )


def validate_dataset(root: Path | str) -> tuple[list[str], dict[str, int]]:
    """All problems (also mask sizes and values) and, when there are none, the counts."""
    root = Path(root)
    checker, info, frames = _check(root, masks=True)
    if checker.problems:
        return checker.problems, {}
    if not frames:
        return [f"{root / 'labels.jsonl'}: no labelled images"], {}
    return [], Dataset(root, info, tuple(frames), merge_raters(frames)).counts()
