"""The dashboard's Download: score exports that open cleanly in a spreadsheet.

Scope (all boxes, an experiment, an animal or a box), period, resolution (every window, or minute,
hour or day summaries from the rollups the server already keeps) and format (CSV, CSV for a
European-locale Excel, XLSX). Times are in the facility's zone, with the UTC start alongside; the
file name says what is in it. The REST API export stays as it was, for scripts.
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

from flask import (
    Blueprint,
    Response,
    after_this_request,
    current_app,
    request,
    send_file,
    stream_with_context,
)

from mgs_core.errors import MgsError
from mgs_core.messages import parse_utc_iso
from server import data_export, video_imports
from server.repository import Repository
from server.request_db import get_repo
from server.timefmt import local_naive, parse_local

bp = Blueprint("exports", __name__)

FORMATS = {"csv": "CSV", "csv-eu": "CSV for Excel with ; and decimal comma", "xlsx": "Excel workbook (.xlsx)"}


def _zone() -> str:
    return str(current_app.config["MGS_CONFIG"].dashboard.timezone)


#: 9999-12-31T23:59:59Z: beyond it a date cannot be written, and a fuzzer's 1e18 must not reach strftime.
LAST_UNIX_SECOND = 253_402_300_799


def _time(name: str, zone: str, default: float | None) -> float:
    """A datetime-local field (YYYY-MM-DDTHH:MM, facility zone) or Unix seconds."""
    value = request.args.get(name, "").strip()
    if not value:
        if default is None:
            raise MgsError(f"give the export's {name} time")
        return default
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if not 0 <= seconds <= LAST_UNIX_SECOND:  # also refuses nan and inf
            raise MgsError(f"export {name} {value!r} is not a time between 1970 and 9999")
        return seconds
    try:
        return parse_local(value, zone)
    except ValueError:
        raise MgsError(f"export {name} {value!r} must be a date and time like 2026-12-02T09:00") from None


def spans(repo: Repository, scope: str, start: float, end: float) -> tuple[list[dict[str, Any]], str]:
    """(device, box, lo, hi, animal or None) pieces to export, and a name for the file."""
    kind, _, value = scope.partition(":")
    assigned: list[dict[str, Any]]
    if kind in ("animal", "experiment"):
        if not value.isdigit():
            raise MgsError(f"scope {scope!r} must be animal:<id> or experiment:<id>")
        if kind == "animal":
            label = repo.animal(int(value))["name"]
            assigned = repo.assignments(animal_id=int(value))
        else:
            label = repo.experiment(int(value))["name"]
            members = {a["id"] for a in repo.animals(experiment_id=int(value))}
            assigned = [a for a in repo.assignments() if a["animal_id"] in members]
        out = []
        for a in assigned:
            lo, hi = max(start, a["start_time"]), min(end, a["end_time"] if a["end_time"] is not None else math.inf)
            if hi > lo:
                out.append({"device": a["device"], "box": a["box"], "lo": lo, "hi": hi, "animal": a})
        return out, label
    if kind == "box":
        device, _, box = value.rpartition("/")
        if not box.isdigit():
            raise MgsError(f"scope {scope!r} must be box:<device>/<box>")
        keys = [(device, int(box))]
        label = f"{device}-box{box}"
    elif not scope:
        keys = [(b["device"], b["box"]) for b in repo.boxes()]
        label = "all-boxes"
    else:
        raise MgsError(f"scope {scope!r} must be animal:<id>, experiment:<id> or box:<device>/<box>")
    return [{"device": d, "box": b, "lo": start, "hi": end, "animal": None} for d, b in keys], label


def _animal_at(assignments: list[dict[str, Any]], t: float) -> dict[str, Any] | None:
    for a in assignments:
        if a["start_time"] <= t and (a["end_time"] is None or t < a["end_time"]):
            return a
    return None


def rows(repo: Repository, pieces: list[dict[str, Any]], resolution: str, zone: str) -> Iterator[list[Any]]:
    """Spreadsheet rows, first cell the local time (a naive datetime in the facility's zone)."""
    by_box: dict[tuple[str, int], list[dict[str, Any]]] = {}
    imported = video_imports.imported_devices(repo)
    for piece in pieces:
        source = video_imports.window_source(piece["device"], imported)
        key = (piece["device"], piece["box"])
        if key not in by_box:
            by_box[key] = repo.assignments(device=piece["device"], box=piece["box"])
        fixed = piece["animal"]
        if resolution == "second":
            for w in repo.iter_windows(piece["lo"], piece["hi"], device=piece["device"], box=piece["box"]):
                t = parse_utc_iso(w["window_start"])
                a = fixed or _animal_at(by_box[key], t)
                w["animal_id"], w["animal_name"] = (a["animal_id"], a["animal_name"]) if a else (None, None)
                w["source"] = source
                yield [local_naive(t, zone), *(w.get(c) for c in data_export.COLUMNS)]
            continue
        for p in _summaries(repo, piece, resolution, zone):
            a = fixed or _animal_at(by_box[key], p["t"])
            yield [
                local_naive(p["t"], zone),
                time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p["t"])),
                piece["device"],
                piece["box"],
                a["animal_id"] if a else None,
                a["animal_name"] if a else None,
                p["windows"],
                p["face_windows"],
                p["mean"],
                p["min"],
                p["max"],
                source,
                p["not_scorable_windows"],
            ]


def _summaries(repo: Repository, piece: dict[str, Any], resolution: str, zone: str) -> list[dict[str, Any]]:
    """Minute or hour rollups of one piece; days are the hours of one local date added up."""
    source = "hour" if resolution == "day" else resolution
    points = repo.box_scores(piece["device"], piece["box"], piece["lo"], piece["hi"], source)["points"]
    points = [p for p in points if p["t"] >= piece["lo"] - (3600 if source == "hour" else 60)]
    if resolution != "day":
        return points
    days: dict[Any, dict[str, Any]] = {}
    for p in points:
        day = local_naive(p["t"], zone).date()
        d = days.setdefault(
            day,
            {
                "t": parse_local(day.isoformat() + "T00:00", zone),
                "windows": 0,
                "face_windows": 0,
                "not_scorable_windows": 0,
                "sum": 0.0,
                "min": None,
                "max": None,
            },
        )
        d["windows"] += p["windows"]
        d["face_windows"] += p["face_windows"]
        d["not_scorable_windows"] += p["not_scorable_windows"]
        if p["mean"] is not None:
            d["sum"] += p["mean"] * p["face_windows"]
            d["min"] = p["min"] if d["min"] is None else min(d["min"], p["min"])
            d["max"] = p["max"] if d["max"] is None else max(d["max"], p["max"])
    return [{**d, "mean": d["sum"] / d["face_windows"] if d["face_windows"] else None} for d in days.values()]


def file_name(label: str, start: float, end: float, resolution: str, zone: str, ext: str) -> str:
    first = local_naive(start, zone).strftime("%Y-%m-%d")
    last = local_naive(end - 1e-3, zone).strftime("%Y-%m-%d")
    safe = re.sub(r"[^\w.-]+", "-", label, flags=re.UNICODE).strip("-") or "scores"
    return f"mgs-scores_{safe}_{first}_{last}_{resolution}.{ext}"


def _disposition(name: str) -> str:
    """An ASCII fallback and the UTF-8 name (RFC 6266), so 'Maus-Ä1' survives in the file name."""
    fallback = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode() or "mgs-scores"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name)}"


@bp.route("/export/download")
def download() -> Response:
    zone = _zone()
    now = time.time()
    start = _time("start", zone, None)
    end = _time("end", zone, now)
    if end <= start:
        raise MgsError("the export's end must be after its start")
    resolution = request.args.get("resolution", "minute")
    if resolution not in data_export.SPREADSHEET_RESOLUTIONS:
        raise MgsError(f"resolution {resolution!r} must be one of {', '.join(data_export.SPREADSHEET_RESOLUTIONS)}")
    fmt = request.args.get("format", "csv")
    if fmt not in FORMATS:
        raise MgsError(f"format {fmt!r} must be one of {', '.join(FORMATS)}")
    repo = get_repo()
    pieces, label = spans(repo, request.args.get("scope", ""), start, end)
    columns = data_export.local_columns(zone, resolution)
    ext = "xlsx" if fmt == "xlsx" else "csv"
    name = file_name(label, start, end, resolution, zone, ext)
    if fmt == "xlsx":
        handle, path = tempfile.mkstemp(suffix=".xlsx")
        os.close(handle)

        @after_this_request
        def _remove(response: Response) -> Response:
            response.call_on_close(lambda: Path(path).unlink(missing_ok=True))
            return response

        data_export.write_xlsx(path, rows(repo, pieces, resolution, zone), columns, label)
        response = send_file(path, mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    else:
        chunks = data_export.spreadsheet_csv(rows(repo, pieces, resolution, zone), columns, european=fmt == "csv-eu")
        response = Response(stream_with_context(chunks), mimetype="text/csv; charset=utf-8")
    response.headers["Content-Disposition"] = _disposition(name)
    return response
