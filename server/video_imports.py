"""Storing the windows of a recorded video scored offline (`mgs-device score`, or an upload).

A recording becomes the pseudo-device `rec-<first 20 hex digits of its sha256>`: its windows go
into `score_windows` with the wire contract's checks (`ScoreWindow.validate`; `abstained_eyes` is
optional, 0 for a result.json that does not carry it, as for an older device), into the rollups,
and each box with a named animal gets an ended assignment over the recording's time span, so the
session shows in that animal's history and exports next to its live windows. The pseudo-device is
NOT entered in `devices` or `boxes`: the overview shows live racks, and a recording is not a rack
that went offline. `video_imports` marks the device as imported: the history page draws its windows
as a series of their own and lists the recording, and exports give them the source `imported`.

`seq` = window index * MAX_BOXES + box: the unique (device, seq) of `score_windows` is then the
natural key (video fingerprint, box, window start), and a second import of the same video, or of a
video that was renamed, stores nothing again.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from mgs_core.errors import MessageError, MgsError
from mgs_core.messages import MAX_BOXES, ScoreWindow, parse_utc_iso, utc_iso
from server.db import transaction
from server.repository import Conflict, Repository
from server.store import IngestStore

DEVICE_PREFIX = "rec-"
FINGERPRINT_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_WINDOWS = 2_000_000
SOURCES = ("api", "upload")


def import_device(fingerprint: str) -> str:
    return DEVICE_PREFIX + fingerprint[:20]


@dataclass
class ImportOutcome:
    import_id: int
    device: str
    stored: int
    duplicates: int
    assignments: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "import_id": self.import_id,
            "device": self.device,
            "stored": self.stored,
            "duplicates": self.duplicates,
            "assignments": self.assignments,
            "warnings": self.warnings,
        }


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise MgsError(
            f"field {name!r} = {value!r} is missing or of the wrong type; send a result.json "
            "written by `mgs-device score`"
        )
    return value


def parse_import(body: dict[str, Any]) -> tuple[dict[str, Any], list[ScoreWindow]]:
    """Check a result.json and turn its windows into wire-contract `ScoreWindow`s (absolute times)."""
    fingerprint = _field(body, "fingerprint", str)
    if not FINGERPRINT_RE.match(fingerprint):
        raise MgsError(f"fingerprint {fingerprint!r} must be the video's sha256 (64 lowercase hex digits)")
    start = parse_utc_iso(_field(body, "start", str))
    window_s = float(_field(body, "window_s", (int, float)))
    if not 0.1 <= window_s <= 3600:
        raise MgsError(f"window_s {window_s} must be between 0.1 and 3600 seconds")
    sha = _field(body, "model_sha256", str)
    raw = _field(body, "windows", list)
    if len(raw) > MAX_WINDOWS:
        raise MgsError(f"{len(raw)} windows is more than one import takes ({MAX_WINDOWS}); split the video")
    device = import_device(fingerprint)
    windows = []
    for n, w in enumerate(raw):
        if not isinstance(w, dict):
            raise MgsError(f"windows[{n}] must be an object")
        try:
            index = int(w["index"])
            box = int(w["box"])
            if index < 0 or not 0 <= box < MAX_BOXES:
                raise MgsError(f"windows[{n}]: index must be >= 0 and box 0-{MAX_BOXES - 1}")
            window = ScoreWindow(
                device=device,
                box=box,
                seq=index * MAX_BOXES + box,
                window_start=utc_iso(start + float(w["t_start_s"])),
                window_end=utc_iso(start + float(w["t_end_s"])),
                frames=w["frames"],
                valid_eyes=w["valid_eyes"],
                score=w["score"],
                median=w["median"],
                p90=w["p90"],
                face_visible_fraction=w["face_visible_fraction"],
                model_sha256=sha,
                abstained_eyes=w.get("abstained_eyes", 0),
            )
            window.validate()
        except (KeyError, TypeError, ValueError, MessageError) as exc:
            raise MgsError(f"windows[{n}] is not a valid score window: {exc}") from None
        windows.append(window)
    boxes = body.get("boxes") or []
    if not isinstance(boxes, list) or not all(isinstance(b, dict) and isinstance(b.get("box"), int) for b in boxes):
        raise MgsError("'boxes' must be a list of objects with a box number")
    duration = float(body.get("duration_s") or max((w.get("t_end_s", 0) for w in raw), default=0.0))
    meta = {
        "fingerprint": fingerprint,
        "device": device,
        "video": str(body.get("video") or "video")[:200],
        "start": start,
        "end": start + max(duration, window_s),
        "start_from": str(body.get("start_from") or "")[:100],
        "window_s": window_s,
        "model_sha256": sha,
        "version": str(body.get("software_version") or "")[:50],
        "boxes": boxes,
    }
    return meta, windows


def store_import(repo: Repository, body: dict[str, Any], username: str, source: str = "api") -> ImportOutcome:
    """Store one scored video; idempotent (see the module docstring)."""
    if source not in SOURCES:
        raise ValueError(source)
    meta, windows = parse_import(body)
    now = time.time()
    store = IngestStore(repo.db)
    with store.write() as conn:
        model_id = store.model_id(meta["model_sha256"])
        conn.execute(
            "INSERT INTO video_imports (fingerprint, device, video_name, recorded_start, recorded_end, start_from, "
            "window_s, model_id, software_version, source, imported_by, imported_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(fingerprint) DO NOTHING",
            [
                meta["fingerprint"],
                meta["device"],
                meta["video"],
                meta["start"],
                meta["end"],
                meta["start_from"],
                meta["window_s"],
                model_id,
                meta["version"],
                source,
                username,
                now,
            ],
        )
        import_id = conn.execute(
            "SELECT id FROM video_imports WHERE fingerprint = ?", [meta["fingerprint"]]
        ).fetchone()[0]
        after_id = conn.execute("SELECT COALESCE(MAX(id), 0) FROM score_windows").fetchone()[0]
        before = conn.total_changes
        conn.executemany(
            "INSERT OR IGNORE INTO score_windows (device, box, seq, window_start, window_end, frames, valid_eyes, "
            "score, median, p90, face_visible_fraction, model_id, received_at, abstained_eyes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    w.device,
                    w.box,
                    w.seq,
                    parse_utc_iso(w.window_start),
                    parse_utc_iso(w.window_end),
                    w.frames,
                    w.valid_eyes,
                    w.score,
                    w.median,
                    w.p90,
                    w.face_visible_fraction,
                    model_id,
                    now,
                    w.abstained_eyes,
                )
                for w in windows
            ],
        )
        stored = conn.total_changes - before
        if stored:
            store.update_rollups(after_id)
    outcome = ImportOutcome(import_id, meta["device"], stored, len(windows) - stored)
    for b in meta["boxes"]:
        _link_box(repo, outcome, meta, b, username)
    return outcome


def _link_box(
    repo: Repository, outcome: ImportOutcome, meta: dict[str, Any], box: dict[str, Any], username: str
) -> None:
    """Record the box's animal, group and time point; put the animal in the box for the recording's span."""
    number = box["box"]
    name = str(box.get("animal") or "").strip()
    row = repo.db.execute(
        "SELECT assignment_id FROM video_import_boxes WHERE import_id = ? AND box = ?", [outcome.import_id, number]
    ).fetchone()
    assignment_id = row[0] if row else None
    animal_id = None
    if name:
        animal_id = _animal_id(repo, name)
        if assignment_id is None:
            try:
                assignment_id = repo.create_assignment(
                    animal_id,
                    meta["device"],
                    number,
                    meta["start"],
                    meta["end"],
                    f"imported recording {meta['video']}",
                    username,
                )
                outcome.assignments.append(assignment_id)
            except Conflict as exc:
                outcome.warnings.append(f"box {number}: windows stored, but not filed under animal {name!r}: {exc}")
    with transaction(repo.db) as conn:
        conn.execute(
            "INSERT INTO video_import_boxes (import_id, box, animal_id, group_name, timepoint, assignment_id, "
            "mean_score, coverage) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(import_id, box) DO UPDATE SET "
            "animal_id = excluded.animal_id, group_name = excluded.group_name, timepoint = excluded.timepoint, "
            "assignment_id = excluded.assignment_id, mean_score = excluded.mean_score, coverage = excluded.coverage",
            [
                outcome.import_id,
                number,
                animal_id,
                str(box.get("group") or "")[:100],
                str(box.get("timepoint") or "")[:100],
                assignment_id,
                _finite(box.get("mean_score")),
                _finite(box.get("coverage")),
            ],
        )


def _finite(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def _animal_id(repo: Repository, name: str) -> int:
    """The animal of that name, created when the import names it first."""
    row = repo.db.execute("SELECT id FROM animals WHERE name = ?", [name]).fetchone()
    if row:
        return int(row[0])
    return repo.create_animal(name, notes="created by a video import")


def imported_devices(repo: Repository) -> frozenset[str]:
    """The pseudo-devices of imported recordings: told apart by this table, not by their name, since
    a rack may be called `rec-...` too."""
    return frozenset(row[0] for row in repo.db.execute("SELECT device FROM video_imports"))


def window_source(device: str, imported: frozenset[str]) -> str:
    """An export's `source` column: `imported` for a recording's windows, else `live`."""
    return "imported" if device in imported else "live"


def recordings_for_animal(repo: Repository, animal_id: int, start: float, end: float) -> list[dict[str, Any]]:
    """The imported recordings filed under the animal that overlap [start, end), oldest first: the
    box's span (start_time, end_time), device, box, video, source, imported_by, imported_at."""
    return repo._q(
        "SELECT a.device, a.box, a.start_time, a.end_time, i.video_name AS video, i.source, i.imported_by, "
        "i.imported_at FROM assignments a JOIN video_imports i ON i.device = a.device "
        "WHERE a.animal_id = ? AND a.start_time < ? AND (a.end_time IS NULL OR a.end_time > ?) "
        "ORDER BY a.start_time, a.id",
        [animal_id, end, start],
    )


def list_imports(repo: Repository) -> list[dict[str, Any]]:
    """Every imported recording, newest first, with its boxes (animal, group, time point, mean, coverage)."""
    imports = repo._q(
        "SELECT i.id, i.fingerprint, i.device, i.video_name, i.recorded_start, i.recorded_end, i.start_from, "
        "i.window_s, m.sha256 AS model_sha256, i.software_version, i.source, i.imported_by, i.imported_at, "
        "(SELECT COUNT(*) FROM score_windows w WHERE w.device = i.device) AS windows "
        "FROM video_imports i JOIN models m ON m.id = i.model_id ORDER BY i.imported_at DESC, i.id DESC"
    )
    boxes = repo._q(
        "SELECT b.import_id, b.box, b.animal_id, a.name AS animal_name, b.group_name, b.timepoint, "
        "b.assignment_id, b.mean_score, b.coverage FROM video_import_boxes b "
        "LEFT JOIN animals a ON a.id = b.animal_id ORDER BY b.import_id, b.box"
    )
    for i in imports:
        i["boxes"] = [b for b in boxes if b["import_id"] == i["id"]]
    return imports
