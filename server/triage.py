"""Triage for a facility: which animals need a look first, how bad a score is, and what changed.

Order on the overview: an open or unacknowledged alert episode first, then the current score
(highest first), then the minutes of the last half hour spent at or above the warning score. Boxes
with no current score (stale, no face, empty) come after every scored box, animals before empty
boxes.

The colour scale has five steps set by `[dashboard] severity_steps`, so 4.0 and 7.9 never look
alike, and a score in the top step is red whether or not an alert rule exists.

Live updates send only what changed: the server keeps the per-tile digests of recent versions of
the overview (`SnapshotStore`); a page that polls with the version it shows gets back the tiles
whose rendering differs, and the order only when it changed. An unknown version (server restart,
a page left asleep) gets everything.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

LEVEL_NAMES = ("calm", "slight", "moderate", "marked", "severe")
LEVEL_MEANINGS = (
    "eye open and round: no sign of pain in the eye",
    "eye slightly narrowed: note it",
    "eye clearly narrowed: look at the animal on this round",
    "eye half closed: check the animal now and consider analgesia",
    "eye closed to a slit: act now (vet, humane endpoint criteria)",
)


def level(score: float | None, steps: Sequence[float]) -> int | None:
    """Severity step 0-4 of a score; None when there is no score."""
    if score is None:
        return None
    return sum(1 for s in steps if score >= s)


def legend(steps: Sequence[float]) -> list[dict[str, Any]]:
    """The legend rows: level, name, score range text, meaning."""
    bounds = [0.0, *steps, 9.0]
    rows = []
    for i, name in enumerate(LEVEL_NAMES):
        hi = f"< {bounds[i + 1]:g}" if i < len(LEVEL_NAMES) - 1 else f"– {bounds[i + 1]:g}"
        rows.append(
            {"level": i, "name": name, "range": f"{bounds[i]:g} {hi}" if i else f"{hi}", "meaning": LEVEL_MEANINGS[i]}
        )
    return rows


def rank(tile: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key, smallest first: attention, then score, then time above the warning score."""
    episode = tile.get("episode")
    attention = 0 if episode is not None and (episode.open or not episode.acknowledged) else 1
    scored = tile["state"] in ("ok", "high", "alert") and tile["last_score"] is not None
    score = tile["last_score"] if scored else -1.0
    occupied = 0 if tile.get("animal_id") is not None else 1
    return (attention, 0 if scored else 1, -score, -tile.get("minutes_above", 0), occupied, tile["device"], tile["box"])


def minutes_above(points: list[dict[str, Any]], score: float) -> int:
    """Minute means at or above `score` in the sparkline window."""
    return sum(1 for p in points if p["mean"] is not None and p["mean"] >= score)


@dataclass(frozen=True)
class Snapshot:
    digests: dict[str, str]
    order: tuple[str, ...]


def digest(html: str) -> str:
    return hashlib.blake2b(html.encode(), digest_size=8).hexdigest()


class SnapshotStore:
    """Recent overview versions (version -> tile digests and order), shared by the request threads."""

    def __init__(self, keep: int = 64) -> None:
        self.keep = keep
        self._versions: OrderedDict[str, Snapshot] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, tiles: dict[str, str], order: Sequence[str], extra: str = "") -> str:
        """Remember this rendering of the overview; return its version (a digest of everything shown)."""
        digests = {key: digest(html) for key, html in tiles.items()}
        version = digest(extra + "|" + "|".join(f"{k}={digests[k]}" for k in order))
        with self._lock:
            self._versions[version] = Snapshot(digests, tuple(order))
            self._versions.move_to_end(version)
            while len(self._versions) > self.keep:
                self._versions.popitem(last=False)
        return version

    def get(self, version: str) -> Snapshot | None:
        with self._lock:
            return self._versions.get(version)


def delta(before: Snapshot | None, tiles: dict[str, str], order: Sequence[str]) -> dict[str, Any]:
    """What a page showing `before` needs: changed or new tiles' HTML, removed keys, and the order
    when it differs (`full` when the page's version is unknown)."""
    if before is None:
        return {"full": True, "tiles": tiles, "removed": [], "order": list(order)}
    changed = {k: html for k, html in tiles.items() if before.digests.get(k) != digest(html)}
    return {
        "full": False,
        "tiles": changed,
        "removed": [k for k in before.order if k not in tiles],
        "order": list(order) if tuple(order) != before.order else None,
    }


def spark_points(db: Any, start: float, end: float) -> dict[tuple[str, int], list[dict[str, Any]]]:
    """Minute means of every box in [start, end), one indexed query (per-box range on the rollup key)."""
    cursor = db.execute(
        "SELECT r.device, r.box, r.bucket, CASE WHEN r.face_windows > 0 THEN r.score_sum / r.face_windows END "
        "FROM boxes b JOIN rollup_minute r ON r.device = b.device AND r.box = b.box AND r.bucket >= ? "
        "AND r.bucket < ? ORDER BY r.device, r.box, r.bucket",
        [start, end],
    )
    out: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for device, box, bucket, mean in cursor.fetchall():
        out.setdefault((device, box), []).append({"t": bucket, "mean": mean})
    return out


def spark_stamp(db: Any, start: float, end: float) -> tuple[int, float]:
    """(buckets, windows) in the minute rollups of every box in [start, end): changes whenever
    what `spark_points` would return changes, at a fraction of its cost."""
    row = db.execute(
        "SELECT COUNT(*), TOTAL(r.windows) FROM boxes b JOIN rollup_minute r ON r.device = b.device AND r.box = b.box "
        "AND r.bucket >= ? AND r.bucket < ?",
        [start, end],
    ).fetchone()
    return int(row[0]), float(row[1])
