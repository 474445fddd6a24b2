"""Dashboard pages for welfare officers and lab staff: overview, history, alerts, devices, animals.

Pages are rendered on the server. The live parts (overview tiles, alert and device tables) are
page fragments that the browser fetches again every few seconds (`?fragment=1`) and swaps in, so
what a box shows ("no face visible", "no data for 12 min", a score) is decided in one place, here,
and tested without a browser. History plots fetch their points from the REST API by time range.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly
from flask import Blueprint, current_app, flash, redirect, render_template, request, send_file, url_for
from werkzeug.wrappers import Response

from mgs_core.errors import MgsError
from server.request_db import get_repo
from server.auth import current_user, local_path, require_role
from server.config import DashboardConfig
from server.repository import parse_id

bp = Blueprint("dashboard", __name__)

SPARK_WINDOW_S = 30 * 60
TREND_RECENT_S = 5 * 60
TREND_DELTA = 0.5
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
HISTORY_RANGES = (("1 h", 3600), ("6 h", 6 * 3600), ("24 h", 86400), ("7 d", 7 * 86400), ("30 d", 30 * 86400))


def _config() -> DashboardConfig:
    return current_app.config["MGS_CONFIG"].dashboard


def _page(template: str, fragment: str, **context: Any) -> str:
    """The whole page, or only its live part when the page's script asks for it."""
    name = fragment if request.args.get("fragment") else template
    return render_template(name, refresh_s=_config().refresh_s, **context)


@bp.app_template_filter("age")
def format_age(seconds: float | None) -> str:
    """42 s, 5 min, 3 h, 2 d: how long ago, in the unit a person reads at a glance."""
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


# --- what a box shows -----------------------------------------------------------------------------

def box_state(row: dict[str, Any], config: DashboardConfig) -> str:
    """One word for a box tile: empty, future, stale, noface, alert, high or ok.

    Order matters: an old score is never shown as current, nor is one dated ahead of the server's
    clock (a device clock gone wrong would otherwise show "ok, 0 s ago" forever), and "no face
    visible" is never shown as a score; a raised alert stays visible even while the face is hidden."""
    if row["last_window_end"] is None:
        return "empty"
    if row["ahead_s"] > config.clock_skew_s:
        return "future"
    if row["age_s"] > config.stale_after_s:
        return "stale"
    if row["alert"] == "raised":
        return "alert"
    if row["last_score"] is None:
        return "noface"
    if row["last_score"] >= config.warn_score:
        return "high"
    return "ok"


def sparkline(points: list[dict[str, Any]], start: float, span: float) -> list[str]:
    """SVG polyline point lists (x 0-100, y 0-28) for minute means; gaps where no face was seen."""
    lines: list[str] = []
    current: list[str] = []
    for p in points:
        if p["mean"] is None:
            if current:
                lines.append(" ".join(current))
            current = []
            continue
        x = (p["t"] - start) / span * 100
        y = 28 - p["mean"] / 9 * 26 - 1
        current.append(f"{x:.1f},{y:.1f}")
    if current:
        lines.append(" ".join(current))
    return lines


def trend(points: list[dict[str, Any]], now: float) -> str | None:
    """'up', 'down' or 'flat': the last 5 minutes against the 25 before them, by minute means."""
    recent = [p["mean"] for p in points if p["mean"] is not None and p["t"] >= now - TREND_RECENT_S]
    before = [p["mean"] for p in points if p["mean"] is not None and p["t"] < now - TREND_RECENT_S]
    if not recent or not before:
        return None
    delta = sum(recent) / len(recent) - sum(before) / len(before)
    if delta >= TREND_DELTA:
        return "up"
    if delta <= -TREND_DELTA:
        return "down"
    return "flat"


def overview_racks(now: float) -> list[dict[str, Any]]:
    """Devices with their boxes, each box annotated with state, sparkline and trend."""
    repo = get_repo()
    config = _config()
    devices = {d["name"]: d for d in repo.devices()}
    boxes: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in repo.boxes(now):
        row["state"] = box_state(row, config)
        points = repo.box_scores(row["device"], row["box"], now - SPARK_WINDOW_S, now + 60, "minute")["points"]
        row["spark"] = sparkline(points, now - SPARK_WINDOW_S, SPARK_WINDOW_S)
        row["trend"] = trend(points, now) if row["state"] in ("ok", "high", "alert") else None
        boxes[row["device"]].append(row)
    racks = []
    for name in sorted(set(devices) | set(boxes)):
        device = devices.get(name, {})
        racks.append({
            "name": name,
            "online": device.get("availability") == "online",
            "availability": device.get("availability"),
            "last_score_age_s": min((b["age_s"] for b in boxes.get(name, []) if b["age_s"] is not None), default=None),
            "fps": device.get("fps"),
            "target_fps": device.get("target_fps"),
            "camera": device.get("camera"),
            "backend": device.get("backend"),
            "boxes": boxes.get(name, []),
        })
    return racks


# --- pages ----------------------------------------------------------------------------------------

def ingest_problem() -> str | None:
    """Why no new data can arrive, when the ingest worker of this process is not connected."""
    worker = current_app.extensions.get("mgs_ingest")
    if worker is None or worker.connected.is_set():
        return None
    config = worker.config
    return (f"The server is not receiving data: no connection to the MQTT broker at {config.host}:{config.port}"
            f"{' (' + worker.last_error + ')' if worker.last_error else ''}. Scores shown are the last ones received.")


@bp.route("/")
def overview() -> str:
    now = time.time()
    racks = overview_racks(now)
    open_alerts = len(get_repo().alerts(unacknowledged=True, limit=1000))
    return _page("overview.html", "_overview_racks.html", racks=racks, now=now, open_alerts=open_alerts,
                 config=_config(), ingest_problem=ingest_problem())


@bp.route("/boxes/<device>/<int:box>")
def box_history(device: str, box: int) -> str:
    repo = get_repo()
    now = time.time()
    assignments = repo.assignments(device=device, box=box)
    current = next((a for a in assignments if a["start_time"] <= now and (a["end_time"] is None or a["end_time"] > now)),
                   None)
    threshold = _threshold_for([current["animal_id"]] if current else [])
    return render_template(
        "history.html", title=f"{device} box {box}", subject={"kind": "box", "device": device, "box": box},
        data_url=url_for("api.box_scores", device=device, box=box), assignments=assignments, current=current,
        threshold=threshold, alerts=repo.alerts(device=device, box=box, limit=50), ranges=HISTORY_RANGES,
        history_s=_config().history_hours * 3600, config=_config())


@bp.route("/animals/<int:animal_id>")
def animal_history(animal_id: int) -> str:
    repo = get_repo()
    animal = repo.animal(animal_id)
    return render_template(
        "history.html", title=f"Animal {animal['name']}", subject={"kind": "animal", "animal": animal},
        data_url=url_for("api.animal_scores", animal_id=animal_id), assignments=repo.assignments(animal_id=animal_id),
        current=None, threshold=_threshold_for([animal_id]), alerts=repo.alerts(animal_id=animal_id, limit=50),
        ranges=HISTORY_RANGES, history_s=_config().history_hours * 3600, config=_config())


def _threshold_for(animal_ids: list[int]) -> dict[str, Any]:
    """The line drawn on a history plot: the lowest enabled rule of the animal, else the default."""
    rules = [r for rs in get_repo().rules_for_animals(animal_ids).values() for r in rs]
    if rules:
        rule = min(rules, key=lambda r: r["threshold"])
        return {"value": rule["threshold"], "label": f"alert rule: ≥ {rule['threshold']:g} for "
                                                      f"{rule['duration_s'] / 60:g} min"}
    return {"value": _config().plot_threshold, "label": f"reference {_config().plot_threshold:g}"}


@bp.route("/alerts")
def alerts() -> str:
    show = request.args.get("show", "open")
    repo = get_repo()
    rows = repo.alerts(unacknowledged=(show == "open"), limit=500)
    return _page("alerts.html", "_alerts_table.html", alerts=rows, show=show)


@bp.route("/alerts/<int:alert_id>/acknowledge", methods=["POST"])
@require_role("officer")
def acknowledge(alert_id: int) -> Response:
    user = current_user()
    assert user is not None
    alert = get_repo().acknowledge_alert(alert_id, user["username"])
    flash(f"Alert {alert_id} ({alert['device']} box {alert['box']}) acknowledged by {alert['acknowledged_by']}.",
          "info")
    return redirect(local_path(request.form.get("back"), url_for("dashboard.alerts")))


@bp.route("/devices")
def devices() -> str:
    repo = get_repo()
    now = time.time()
    return _page("devices.html", "_devices_table.html", devices=repo.devices(), now=now, counters=repo.counters(),
                 boxes_ahead=repo.boxes_ahead(now, _config().clock_skew_s))


@bp.route("/vendor/plotly.min.js")
def plotly_js() -> Response:
    """Plotly from the installed Python package: the facility network may have no internet."""
    return send_file(PLOTLY_JS, mimetype="text/javascript", max_age=86400)


# --- animals, experiments, assignments and rules --------------------------------------------------

@bp.route("/assignments")
def assignments() -> str:
    repo = get_repo()
    now = time.time()
    rows = repo.assignments()
    return render_template(
        "assignments.html", title="Animals & boxes", animals=repo.animals(), experiments=repo.experiments(),
        current=[a for a in rows if a["end_time"] is None or a["end_time"] > now],
        past=[a for a in rows if a["end_time"] is not None and a["end_time"] <= now][::-1],
        boxes=repo.boxes(now), rules=repo.alert_rules(), now=now)


def _form_int(name: str, what: str, optional: bool = False) -> int | None:
    value = request.form.get(name, "").strip()
    if not value and optional:
        return None
    return parse_id(value, what)


def _form_float(name: str, what: str) -> float:
    value = request.form.get(name, "").strip()
    try:
        return float(value)
    except ValueError:
        raise MgsError(f"{what} {value!r} must be a number") from None


def _form_time(name: str, what: str, optional: bool = False) -> float | None:
    """Times arrive as Unix seconds, converted from the browser's local time by common.js."""
    value = request.form.get(name, "").strip()
    if not value:
        if optional:
            return None
        raise MgsError(f"{what} is missing")
    try:
        return float(value)
    except ValueError:
        raise MgsError(f"{what} {value!r} is not a time") from None


def apply_change(action: Callable[[], object], done: str, then: str) -> Response:
    """Run one change from a form and go back to `then`; a user mistake is shown there as a
    message (what to fix), not as an error page."""
    try:
        action()
    except MgsError as exc:
        flash(str(exc), "error")
    else:
        flash(done, "info")
    return redirect(then)


def _edit(action: Callable[[], object], done: str) -> Response:
    return apply_change(action, done, url_for("dashboard.assignments"))


@bp.route("/experiments", methods=["POST"])
@require_role("officer")
def create_experiment() -> Response:
    name = request.form.get("name", "").strip()
    return _edit(lambda: get_repo().create_experiment(name, request.form.get("description", "")),
                 f"Experiment {name!r} created.")


@bp.route("/animals", methods=["POST"])
@require_role("officer")
def create_animal() -> Response:
    name = request.form.get("name", "").strip()
    return _edit(lambda: get_repo().create_animal(
        name, request.form.get("strain", ""), request.form.get("notes", ""),
        _form_int("experiment_id", "experiment", optional=True)), f"Animal {name!r} added.")


@bp.route("/assignments", methods=["POST"])
@require_role("officer")
def create_assignment() -> Response:
    user = current_user()
    assert user is not None

    def create() -> None:
        device, _, box = request.form.get("box", "").partition("/")
        if not box.isascii() or not box.isdigit():
            raise MgsError("choose a box")
        get_repo().create_assignment(
            _form_int("animal_id", "animal"), device, int(box),  # type: ignore[arg-type]
            _form_time("start", "start", optional=True) or time.time(), _form_time("end", "end", optional=True),
            request.form.get("note", ""), created_by=user["username"])
    return _edit(create, "Assignment saved.")


@bp.route("/assignments/<int:assignment_id>/end", methods=["POST"])
@require_role("officer")
def end_assignment(assignment_id: int) -> Response:
    return _edit(lambda: get_repo().update_assignment(assignment_id, end_time=time.time()),
                 f"Assignment {assignment_id} ended now.")


@bp.route("/assignments/<int:assignment_id>/delete", methods=["POST"])
@require_role("officer")
def delete_assignment(assignment_id: int) -> Response:
    return _edit(lambda: get_repo().delete_assignment(assignment_id), f"Assignment {assignment_id} deleted.")


@bp.route("/rules", methods=["POST"])
@require_role("officer")
def create_rule() -> Response:
    def create() -> None:
        target, _, ident = request.form.get("target", "").partition(":")
        if target not in ("animal", "experiment"):
            raise MgsError("choose the animal or experiment the rule applies to")
        rule_for = parse_id(ident, target)
        get_repo().create_alert_rule(
            _form_float("threshold", "threshold"), _form_float("duration_min", "duration") * 60,
            animal_id=rule_for if target == "animal" else None,
            experiment_id=rule_for if target == "experiment" else None)
    return _edit(create, "Alert rule created.")


@bp.route("/rules/<int:rule_id>/enabled", methods=["POST"])
@require_role("officer")
def set_rule_enabled(rule_id: int) -> Response:
    enabled = request.form.get("enabled") == "1"
    return _edit(lambda: get_repo().set_alert_rule_enabled(rule_id, enabled),
                 f"Alert rule {rule_id} {'enabled' if enabled else 'disabled'}.")


@bp.route("/rules/<int:rule_id>/delete", methods=["POST"])
@require_role("officer")
def delete_rule(rule_id: int) -> Response:
    return _edit(lambda: get_repo().delete_alert_rule(rule_id), f"Alert rule {rule_id} deleted.")


# --- export ---------------------------------------------------------------------------------------

@bp.route("/export")
def export() -> str:
    repo = get_repo()
    return render_template("export.html", title="Export", animals=repo.animals(), experiments=repo.experiments(),
                           boxes=repo.boxes(), export_url=url_for("api.export"))
