"""Review samples for the tests: a sample row with a generated face crop, as a device upload stores it.

The columns and the `meta_json` keys are those of server/migrations/m006_samples.py and the agreed
meta convention (face_box, eyes in face-crop pixels, window_score, ...), written with plain SQL into
the real SQLite file, so the review pages read exactly what an upload leaves behind.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from server.db import connect, transaction
from server.review_store import Rating, save_rating

FACE_W, FACE_H = 160, 120
EYES = ({"x": 52.0, "y": 48.0}, {"x": 110.0, "y": 50.0})


def face_jpeg(seed: int = 0) -> bytes:
    """A grey head with two dark eyes, different per seed; a real JPEG a browser can show."""
    rng = np.random.default_rng(seed)
    image = np.full((FACE_H, FACE_W, 3), 150, np.uint8)
    image += rng.integers(0, 20, image.shape, dtype=np.uint8)
    cv2.ellipse(image, (80, 64), (70, 52), 0, 0, 360, (185, 180, 175), -1)
    for eye in EYES:
        cv2.ellipse(image, (int(eye["x"]), int(eye["y"])), (9, 4 + seed % 4), 0, 0, 360, (25, 20, 20), -1)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return data.tobytes()


def add_sample(
    db_path: str | Path,
    key: str,
    *,
    device: str = "rack1",
    box: int = 0,
    taken_at: float | None = None,
    reason: str = "random",
    model_version: str = "",
    model_score: float | None = 3.0,
    eyes: list[dict[str, Any]] | None = None,
    image: bool = True,
    meta_json: str | None = None,
) -> int:
    """Insert one sample (with its face crop unless `image` is False); returns its id."""
    eyes = [{**e, "score": model_score, "confidence": 0.9, "abstained": False} for e in EYES] if eyes is None else eyes
    meta = {
        "face_box": [40, 30, FACE_W, FACE_H],
        "eyes": eyes,
        "window_score": model_score,
        "window_seq": 7,
        "roi_box": [0, 0, 640, 480],
        "threshold": 6.0,
    }
    now = time.time()
    db = connect(db_path)
    try:
        with transaction(db) as conn:
            cursor = conn.execute(
                "INSERT INTO samples (device, sample_key, box, taken_at, reason, model_version, model_sha256, "
                "model_score, meta_json, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    device,
                    key,
                    box,
                    now if taken_at is None else taken_at,
                    reason,
                    model_version,
                    "0" * 64,
                    model_score,
                    json.dumps(meta) if meta_json is None else meta_json,
                    now,
                ],
            )
            sample_id = int(cursor.lastrowid or 0)
            if image:
                conn.execute(
                    "INSERT INTO sample_images (sample_id, kind, mime, width, height, data) VALUES (?, 'face', ?, ?, ?, ?)",
                    [sample_id, "image/jpeg", FACE_W, FACE_H, face_jpeg(sample_id)],
                )
        return sample_id
    finally:
        db.conn.close()


def add_rating(db_path: str | Path, sample_id: int, username: str, ot: float | None, mgs: int | None = None) -> None:
    """A rating stored by the review page's own code (ot None = 'not scorable')."""
    rating = Rating(True, ot, 1 if mgs is None else mgs) if ot is not None else Rating(False)
    db = connect(db_path)
    try:
        save_rating(db, sample_id, username, rating)
    finally:
        db.conn.close()
