"""Where the model behind a box's scores changed: the marks a history chart draws.

A step in the scores must be told apart from a change of model, so every window keeps the model
(sha256 and registry version) that produced it, and `model_changes` keeps, per box, each window
whose model differs from the window before it. The ingest computes this from the rows a batch
added (one window-function pass over them, plus one look-up of the stored window before each
box's first new row), never by scanning a box's history; a chart then reads a handful of rows
whatever its time range. A window that arrives late, between two stored ones, is compared with
the window before it only.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from typing import Any

import sqlite_utils

_NEW_CHANGES = """
INSERT OR IGNORE INTO model_changes (device, box, t, model_id, model_version)
SELECT device, box, window_start, model_id, model_version FROM (
    SELECT n.device, n.box, n.window_start, n.model_id, n.model_version,
           ROW_NUMBER() OVER w AS k,
           LAG(n.model_id) OVER w AS prev_id, LAG(n.model_version) OVER w AS prev_version
    FROM score_windows n WHERE n.id > :after
    WINDOW w AS (PARTITION BY n.device, n.box ORDER BY n.window_start)
) x
WHERE (k > 1 AND (prev_id != model_id OR prev_version != model_version))
   OR (k = 1 AND NOT EXISTS (
        SELECT 1 FROM (
            SELECT p.model_id, p.model_version FROM score_windows p
            WHERE p.device = x.device AND p.box = x.box AND p.window_start < x.window_start AND p.id <= :after
            ORDER BY p.window_start DESC LIMIT 1
        ) q WHERE q.model_id = x.model_id AND q.model_version = x.model_version))
"""


def record_model_changes(conn: sqlite3.Connection, after_id: int) -> None:
    """Record the model changes among the windows with an id above `after_id` (just inserted)."""
    conn.execute(_NEW_CHANGES, {"after": after_id})


def model_changes(db: sqlite_utils.Database, device: str, box: int, start: float, end: float) -> list[dict[str, Any]]:
    """Changes of model in [start, end) of one box: t, version ('' = shipped models), sha256, and
    the model before (previous_version, previous_sha256). A box's first model is not a change."""
    rows = db.execute(
        "SELECT c.t, c.model_version, m.sha256 FROM model_changes c JOIN models m ON m.id = c.model_id "
        "WHERE c.device = ? AND c.box = ? AND c.t < ? AND c.t >= COALESCE("
        "(SELECT MAX(t) FROM model_changes WHERE device = ? AND box = ? AND t < ?), ?) ORDER BY c.t",
        [device, box, end, device, box, start, start],
    ).fetchall()
    out = []
    for (_t0, version0, sha0), (t, version, sha) in zip(rows, rows[1:], strict=False):
        if (version, sha) != (version0, sha0) and t >= start:
            out.append(
                {"t": t, "version": version, "sha256": sha, "previous_version": version0, "previous_sha256": sha0}
            )
    return out


def animal_model_changes(
    db: sqlite_utils.Database, spans: Iterable[dict[str, Any]], start: float, end: float
) -> list[dict[str, Any]]:
    """Model changes in the boxes an animal sat in (its assignments `spans`), each clipped to its span."""
    out = []
    for a in spans:
        lo = max(start, a["start_time"])
        hi = min(end, math.inf if a["end_time"] is None else a["end_time"])
        if hi > lo:
            out += [
                {**c, "device": a["device"], "box": a["box"]} for c in model_changes(db, a["device"], a["box"], lo, hi)
            ]
    return sorted(out, key=lambda c: c["t"])
