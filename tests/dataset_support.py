"""Review samples and ratings written straight into a real server database, for the dataset-export tests.

`rack_samples` cuts the boxes of a generated rack frame into ROI images with known eye positions,
so an exported dataset holds real-looking eyes the shipped models can find and score.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from server.db import connect


@dataclass(frozen=True)
class RoiSample:
    image: np.ndarray  # BGR ROI
    eyes: list[tuple[float, float, float]]  # (x, y, true score) in ROI px
    face_box: list[int]  # [x, y, w, h] in ROI px, containing every eye


def rack_samples(dataset: Path) -> list[RoiSample]:
    """Every box with scored eyes of a synthetic dataset, as the ROI image a device would upload."""
    from export.dataset import open_dataset

    data = open_dataset(dataset)
    out = []
    for frame in data.frames:
        image = data.read_image(frame)
        for b in frame.boxes:
            x0, y0, w, h = b.roi
            eyes = [(e.x - x0, e.y - y0, float(e.score)) for e in b.eyes if e.visible and e.score is not None]
            if not eyes:
                continue
            xs, ys = [e[0] for e in eyes], [e[1] for e in eyes]
            fx, fy = max(int(min(xs)) - 40, 0), max(int(min(ys)) - 40, 0)
            fw, fh = min(int(max(xs)) + 40, w) - fx, min(int(max(ys)) + 40, h) - fy
            out.append(RoiSample(image[y0 : y0 + h, x0 : x0 + w].copy(), eyes, [fx, fy, fw, fh]))
    return out


def add_sample(
    db_path: Path,
    roi: np.ndarray,
    face_box: list[int],
    *,
    device: str = "rack1",
    key: str | None = None,
    box: int = 0,
    taken_at: float | None = None,
    mime: str = "image/jpeg",
) -> int:
    """One uploaded sample (ROI and face crop images, meta_json as the device writes it); returns its id."""
    db = connect(db_path)
    try:
        taken = time.time() if taken_at is None else taken_at
        fx, fy, fw, fh = face_box
        meta = {"face_box": face_box, "eyes": [], "window_score": None, "window_seq": 1, "roi_box": [0, 0, 1, 1]}
        ext = ".png" if mime == "image/png" else ".jpg"
        with db.conn:
            cur = db.conn.execute(
                "INSERT INTO samples (device, sample_key, box, taken_at, reason, model_version, model_sha256,"
                " model_score, meta_json, received_at) VALUES (?, ?, ?, ?, 'random', '', 'abc', 3.5, ?, ?)",
                [device, key or f"k{time.monotonic_ns()}", box, taken, json.dumps(meta), taken + 1],
            )
            sid = int(cur.lastrowid or 0)
            for kind, img in (("roi", roi), ("face", roi[fy : fy + fh, fx : fx + fw])):
                db.conn.execute(
                    "INSERT INTO sample_images (sample_id, kind, mime, width, height, data) VALUES (?, ?, ?, ?, ?, ?)",
                    [sid, kind, mime, img.shape[1], img.shape[0], cv2.imencode(ext, img)[1].tobytes()],
                )
        return sid
    finally:
        db.conn.close()


def add_rating(
    db_path: Path,
    sample_id: int,
    username: str,
    *,
    scorable: bool = True,
    ot: float | None = None,
    mgs: int | None = None,
    eyes: Sequence[tuple[float, float]] = (),
) -> None:
    """One rater's verdict; `eyes` in face-crop pixels, as the review page stores them."""
    db = connect(db_path)
    try:
        with db.conn:
            db.conn.execute(
                "INSERT INTO sample_ratings (sample_id, username, rated_at, scorable, ot_score, mgs_score, eyes_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    sample_id,
                    username,
                    time.time(),
                    int(scorable),
                    ot,
                    mgs,
                    json.dumps([{"x": x, "y": y} for x, y in eyes]),
                ],
            )
    finally:
        db.conn.close()
