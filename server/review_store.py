"""The review queue and the raters' scores in SQLite (`samples`, `sample_images`, `sample_ratings`).

Queue rules, in SQL so that every page and test sees the same ones: a sample waits for a rater
while it has fewer ratings than `[review] raters_per_sample` and that rater has not rated it; the
device's reasons come first in the order of `SAMPLE_REASONS` (alert windows, then uncertain eyes,
then borderline scores, then the random share, since those tell most about the model's mistakes),
oldest first within a reason (taken_at, then id). `UNIQUE (sample_id, username)` makes a second rating of the
same sample by the same person impossible even from two tabs at once; that case is reported as
`AlreadyRated`, not as a database error.

Blindness: nothing here hands one rater's scores to another while the sample still waits. The
agreement data are read only from samples that have all their raters (`agreement_data`), and the
audit entry of a rating names who rated which sample, not the score, because officers can read
the audit log.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlite_utils

from mgs_core.errors import MgsError
from mgs_core.messages import SAMPLE_REASONS
from server import audit
from server.agreement import Ratings
from server.db import transaction
from server.repository import NotFound

OT_MAX = 9
MGS_SCORES = (0, 1, 2)
MAX_EYES = 2
SHIPPED_LABEL = "shipped models"


class AlreadyRated(MgsError):
    """The same person rated this sample before (another tab, or a page opened twice)."""


@dataclass(frozen=True)
class Rating:
    scorable: bool
    ot_score: float | None = None
    mgs_score: int | None = None
    eyes: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Progress:
    total: int
    need_more: int
    for_you: int
    rated_by_you: int


_REASON_RANK = (
    "CASE s.reason "
    + " ".join(f"WHEN '{reason}' THEN {rank}" for rank, reason in enumerate(SAMPLE_REASONS))
    + f" ELSE {len(SAMPLE_REASONS)} END"
)


def _waiting_sql(extra: str = "") -> str:
    return (
        "FROM samples s WHERE (SELECT COUNT(*) FROM sample_ratings r WHERE r.sample_id = s.id) < :target "
        "AND NOT EXISTS (SELECT 1 FROM sample_ratings r WHERE r.sample_id = s.id AND r.username = :user)" + extra
    )


def next_sample(
    db: sqlite_utils.Database, username: str, target: int, skipped: Sequence[int] = ()
) -> dict[str, Any] | None:
    """The first sample waiting for `username` (by reason, then oldest), leaving out the ones skipped
    in this session."""
    skip = ",".join(str(int(i)) for i in skipped)
    extra = f" AND s.id NOT IN ({skip})" if skip else ""
    row = db.execute(
        "SELECT s.id " + _waiting_sql(extra) + f" ORDER BY {_REASON_RANK}, s.taken_at, s.id LIMIT 1",
        {"target": target, "user": username},
    ).fetchone()
    return None if row is None else sample(db, int(row[0]))


def progress(db: sqlite_utils.Database, username: str, target: int) -> Progress:
    total = db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
    need_more = db.execute(
        "SELECT COUNT(*) FROM samples s WHERE (SELECT COUNT(*) FROM sample_ratings r WHERE r.sample_id = s.id) < ?",
        [target],
    ).fetchone()[0]
    for_you = db.execute("SELECT COUNT(*) " + _waiting_sql(), {"target": target, "user": username}).fetchone()[0]
    mine = db.execute("SELECT COUNT(*) FROM sample_ratings WHERE username = ?", [username]).fetchone()[0]
    return Progress(int(total), int(need_more), int(for_you), int(mine))


def sample(db: sqlite_utils.Database, sample_id: int) -> dict[str, Any]:
    """A sample with its parsed meta (unknown keys kept, bad JSON read as empty) and the size of
    the image a rater sees (the face crop, or the ROI image when there is no crop)."""
    rows = list(db.query("SELECT * FROM samples WHERE id = ?", [sample_id]))
    if not rows:
        raise NotFound(f"sample {sample_id} does not exist (deleted?)")
    row = rows[0]
    try:
        meta = json.loads(row["meta_json"] or "{}")
    except ValueError:
        meta = {}
    row["meta"] = meta if isinstance(meta, dict) else {}
    image = _image_row(db, sample_id, "kind, width, height")
    row["image"] = None if image is None else {"kind": image[0], "width": image[1], "height": image[2]}
    return row


def device_eyes(meta: Mapping[str, Any], width: float, height: float) -> list[dict[str, Any]]:
    """The device's eye positions from a sample's meta, the starting markers on the review page.

    Entries without finite x and y, or off the `width` x `height` crop, are left out: a marker the
    rater cannot see would be submitted unseen and refused."""
    eyes = meta.get("eyes")
    out = []
    for eye in eyes if isinstance(eyes, list) else []:
        if not isinstance(eye, dict):
            continue
        x, y = _number(eye.get("x")), _number(eye.get("y"))
        if x is not None and y is not None and 0 <= x <= width and 0 <= y <= height:
            out.append({"x": x, "y": y, "score": _number(eye.get("score"))})
    return out[:MAX_EYES]


def _number(value: Any) -> float | None:
    """A finite JSON number as float, else None (booleans are not numbers here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _image_row(db: sqlite_utils.Database, sample_id: int, columns: str) -> tuple[Any, ...] | None:
    row: tuple[Any, ...] | None = db.execute(
        f"SELECT {columns} FROM sample_images WHERE sample_id = ? ORDER BY kind = 'face' DESC LIMIT 1", [sample_id]
    ).fetchone()
    return row


def review_image(db: sqlite_utils.Database, sample_id: int) -> tuple[str, bytes]:
    """(mime, bytes) of the image a rater scores: the face crop, else the ROI image."""
    row = _image_row(db, sample_id, "mime, data")
    if row is None:
        raise NotFound(f"sample {sample_id} has no stored image")
    return str(row[0]), bytes(row[1])


def parse_rating(form: Mapping[str, str], width: int, height: int) -> Rating:
    """A rating from the review form; every refusal says what to fix."""
    scorable = form.get("scorable", "1") != "0"
    eyes = _parse_eyes(form.get("eyes", "[]"), width, height)
    if not scorable:
        return Rating(False, None, None, eyes)
    ot_text, mgs_text = form.get("ot_score", "").strip(), form.get("mgs_score", "").strip()
    if not ot_text:
        raise MgsError("give an orbital tightening score from 0 to 9 (keys 0-9), or mark the sample not scorable (N)")
    try:
        ot = float(ot_text)
    except ValueError:
        raise MgsError(f"orbital tightening score {ot_text!r} must be a number from 0 to 9") from None
    if not 0 <= ot <= OT_MAX:
        raise MgsError(f"orbital tightening score {ot_text!r} must be from 0 to 9")
    if mgs_text not in {str(v) for v in MGS_SCORES}:
        raise MgsError("give an MGS orbital tightening score of 0, 1 or 2 (keys Z, X, C), or mark it not scorable (N)")
    return Rating(True, ot, int(mgs_text), eyes)


def _parse_eyes(text: str, width: int, height: int) -> list[dict[str, float]]:
    try:
        eyes = json.loads(text or "[]")
    except ValueError:
        raise MgsError("the eye positions could not be read; reload the page and mark the eyes again") from None
    if not isinstance(eyes, list) or len(eyes) > MAX_EYES:
        raise MgsError(f"mark at most {MAX_EYES} eyes")
    out = []
    for eye in eyes:
        x = _number(eye.get("x")) if isinstance(eye, dict) else None
        y = _number(eye.get("y")) if isinstance(eye, dict) else None
        if x is None or y is None or not (0 <= x <= width and 0 <= y <= height):
            raise MgsError(f"an eye position must lie on the image ({width} x {height} pixels); mark it again")
        out.append({"x": round(x, 1), "y": round(y, 1)})
    return out


def save_rating(
    db: sqlite_utils.Database, sample_id: int, username: str, rating: Rating, now: float | None = None
) -> int:
    """Store one person's rating of one sample, with its audit entry, in one transaction."""
    try:
        with transaction(db) as conn:
            if conn.execute("SELECT 1 FROM samples WHERE id = ?", [sample_id]).fetchone() is None:
                raise NotFound(f"sample {sample_id} does not exist (deleted?)")
            cursor = conn.execute(
                "INSERT INTO sample_ratings (sample_id, username, rated_at, scorable, ot_score, mgs_score, eyes_json) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    sample_id,
                    username,
                    time.time() if now is None else now,
                    int(rating.scorable),
                    rating.ot_score,
                    rating.mgs_score,
                    json.dumps(rating.eyes),
                ],
            )
            audit.record_in(conn, username, "rate sample", f"sample:{sample_id}", now=now)
    except sqlite3.IntegrityError as exc:
        if "UNIQUE" not in str(exc):
            raise
        raise AlreadyRated(
            f"you already rated sample {sample_id} (in another tab?); your first rating stands"
        ) from None
    return int(cursor.lastrowid or 0)


# --- agreement -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgreementData:
    ot: Ratings
    mgs: Ratings
    model: dict[int, float | None]
    version: dict[int, str]
    raters: list[str]


def model_versions(db: sqlite_utils.Database, target: int) -> list[str]:
    """Model versions of the samples that have all their raters ('' = the shipped models)."""
    return [
        str(row[0])
        for row in db.execute(
            "SELECT DISTINCT s.model_version FROM samples s "
            "WHERE (SELECT COUNT(*) FROM sample_ratings r WHERE r.sample_id = s.id) >= ? ORDER BY s.model_version",
            [target],
        )
    ]


def agreement_data(db: sqlite_utils.Database, target: int, version: str | None = None) -> AgreementData:
    """Ratings of the samples that have all their raters (none still waits for someone, so no
    rater can read a score here before giving their own), optionally of one model version."""
    sql = (
        "SELECT s.id, s.model_version, s.model_score, r.username, r.scorable, r.ot_score, r.mgs_score "
        "FROM samples s JOIN sample_ratings r ON r.sample_id = s.id "
        "WHERE (SELECT COUNT(*) FROM sample_ratings c WHERE c.sample_id = s.id) >= ?"
    )
    params: list[Any] = [target]
    if version is not None:
        sql += " AND s.model_version = ?"
        params.append(version)
    ot: Ratings = {}
    mgs: Ratings = {}
    model: dict[int, float | None] = {}
    versions: dict[int, str] = {}
    raters: set[str] = set()
    rows = db.execute(sql + " ORDER BY s.id", params)
    for sample_id, model_version, model_score, username, scorable, ot_score, mgs_score in rows:
        raters.add(username)
        model[sample_id] = model_score
        versions[sample_id] = model_version
        ot.setdefault(sample_id, {})[username] = ot_score if scorable else None
        mgs.setdefault(sample_id, {})[username] = float(mgs_score) if scorable and mgs_score is not None else None
    return AgreementData(ot, mgs, model, versions, sorted(raters))
