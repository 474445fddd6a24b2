"""Records for the animal welfare body: the audit log page and the per-animal report.

The report is one printable page (print stylesheet: the browser's "Save as PDF" makes the file)
for a chosen period: the animal's details, notes and humane-endpoint criteria, its boxes, the
score course as a server-drawn chart (no script, so it prints as shown), every alert episode with
its acknowledgements and notes, and the audit entries about the animal.
"""

from __future__ import annotations

import time
from datetime import date, timedelta
from typing import Any

from flask import Blueprint, current_app, render_template, request

from mgs_core.errors import MgsError
from server import audit, episodes
from server.auth import require_role
from server.config import DashboardConfig
from server.request_db import get_db, get_repo
from server.timefmt import duration, local_naive, local_time, parse_local

bp = Blueprint("records", __name__)

REPORT_DEFAULT_DAYS = 7
REPORT_MAX_DAYS = 366
CHART_W, CHART_H = 1000.0, 220.0


def _config() -> DashboardConfig:
    return current_app.config["MGS_CONFIG"].dashboard


@bp.app_template_global()
def audit_value(field: str, value: Any) -> str:
    """A value from the audit log as text; stored times are shown in the facility's zone."""
    if value is None:
        return "–"
    if field.endswith("_time") and isinstance(value, (int, float)):
        return local_time(value, _config().timezone)
    if field == "duration_s" and isinstance(value, (int, float)):
        return duration(value)
    return str(value)


@bp.route("/audit")
@require_role("officer")
def audit_log() -> str:
    target = request.args.get("target", "").strip() or None
    return render_template(
        "audit.html", title="Audit log", entries=audit.entries(get_db(), target=target), target=target or ""
    )


def report_period(start_text: str, end_text: str, zone: str, now: float) -> tuple[float, float, str, str]:
    """Whole days in the facility's zone from the form (YYYY-MM-DD, end inclusive); default the last week."""
    today = local_naive(now, zone).date()
    try:
        first = date.fromisoformat(start_text) if start_text else today - timedelta(days=REPORT_DEFAULT_DAYS - 1)
        last = date.fromisoformat(end_text) if end_text else today
    except ValueError:
        raise MgsError(f"report dates {start_text!r} to {end_text!r} must be written YYYY-MM-DD") from None
    if last < first:
        raise MgsError(f"the report ends ({last}) before it starts ({first}); swap the dates")
    if (last - first).days >= REPORT_MAX_DAYS:
        raise MgsError(f"a report covers at most {REPORT_MAX_DAYS} days; choose a shorter period")
    start = parse_local(first.isoformat() + "T00:00", zone)
    end = parse_local((last + timedelta(days=1)).isoformat() + "T00:00", zone)
    return start, end, first.isoformat(), last.isoformat()


def course(points: list[dict[str, Any]], start: float, end: float, spans: list[tuple[float, float]]) -> dict[str, Any]:
    """Chart geometry in a CHART_W x CHART_H box: mean lines (broken where no window was scored),
    a min-max band, the episodes as shaded spans, and a tick at the bottom for each bucket that was
    not scorable (no score, eyes the model abstained on), so it never reads as "no face"."""
    sx = CHART_W / (end - start)

    def y(v: float) -> float:
        return round(CHART_H - v / 9 * CHART_H, 1)

    lines: list[str] = []
    current: list[str] = []
    band_top: list[str] = []
    band_bottom: list[str] = []
    not_scorable: list[float] = []
    for p in points:
        x = round((p["t"] - start) * sx, 1)
        if p["mean"] is None:
            if p["not_scorable_windows"]:
                not_scorable.append(x)
            if current:
                lines.append(" ".join(current))
            current = []
            continue
        current.append(f"{x},{y(p['mean'])}")
        band_top.append(f"{x},{y(p['max'])}")
        band_bottom.append(f"{x},{y(p['min'])}")
    if current:
        lines.append(" ".join(current))
    shaded = [
        {"x": round((max(a, start) - start) * sx, 1), "w": max(1.0, round((min(b, end) - max(a, start)) * sx, 1))}
        for a, b in spans
    ]
    return {
        "lines": lines,
        "band": " ".join(band_top + band_bottom[::-1]),
        "episodes": shaded,
        "not_scorable": not_scorable,
        "w": CHART_W,
        "h": CHART_H,
        "grid": [{"y": y(v), "v": v} for v in (0, 3, 6, 9)],
    }


@bp.route("/animals/<int:animal_id>/report")
def animal_report(animal_id: int) -> str:
    repo = get_repo()
    now = time.time()
    zone = _config().timezone
    start, end, first, last = report_period(request.args.get("start", ""), request.args.get("end", ""), zone, now)
    animal = repo.animal(animal_id)
    resolution = "minute" if end - start <= 3 * 86400 else "hour"
    scores = repo.animal_scores(animal_id, start, min(end, now + 60), resolution)["points"]
    found = episodes.episodes(get_db(), start, end, animal_id=animal_id, now=now)
    chart = course(scores, start, end, [(e.start, e.end if e.end is not None else now) for e in found])
    face = [p for p in scores if p["mean"] is not None]
    summary = {
        "mean": sum(p["mean"] * p["face_windows"] for p in face) / max(1, sum(p["face_windows"] for p in face))
        if face
        else None,
        "max": max((p["max"] for p in face), default=None),
        "windows": sum(p["windows"] for p in scores),
        "face_windows": sum(p["face_windows"] for p in scores),
        "not_scorable_windows": sum(p["not_scorable_windows"] for p in scores),
    }
    assignments = [
        a
        for a in repo.assignments(animal_id=animal_id)
        if a["start_time"] < end and (a["end_time"] is None or a["end_time"] > start)
    ]
    rules = [
        r
        for r in repo.alert_rules()
        if r["animal_id"] == animal_id
        or (r["experiment_id"] is not None and r["experiment_id"] == animal["experiment_id"])
    ]
    entries = [
        e
        for e in audit.entries(get_db(), since=start, until=end, limit=audit.LIMIT_MAX)
        if e["target"] == f"animal:{animal_id}"
        or (e["new"] or e["old"] or {}).get("animal") == animal["name"]
        or (e["new"] or e["old"] or {}).get("animal_name") == animal["name"]
    ]
    return render_template(
        "report.html",
        title=f"Report {animal['name']}",
        animal=animal,
        start=start,
        end=end,
        first=first,
        last=last,
        chart=chart,
        episodes=found,
        summary=summary,
        resolution=resolution,
        assignments=assignments,
        rules=rules,
        entries=entries,
        now=now,
    )
