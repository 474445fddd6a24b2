"""The JSON REST API under /api/v1 (reference with curl examples: docs/api.md).

Every endpoint needs a login session or `Authorization: Bearer <token>`: `server.auth.identify`
refuses anonymous requests before any view runs (401). Reading needs the viewer role; changing
assignments, animals, rules and acknowledging alerts needs officer; each such change writes an
audit entry (server.audit) in the name of the token's or session's user. Times in responses are Unix
seconds (UTC); query parameters take Unix seconds or ISO-8601 UTC, in the years 1970-2099. Errors
are `{"error": "..."}` with 400 (bad input, out-of-range time, id or limit), 403 (role), 404 (no
such row or box), 409 (conflicts with stored data) or 413 (body over [http] max_request_kb).
"""

from __future__ import annotations

import itertools
import re
import time
from typing import Any

from flask import Blueprint, Response, abort, current_app, jsonify, request, stream_with_context

from mgs_core.errors import MgsError
from mgs_core.messages import EARLIEST_TIME, MAX_BOXES
from server import audit, data_export, video_imports
from server.auth import current_user, require_role
from server.repository import RESOLUTIONS, NotFound, parse_id, parse_time
from server.request_db import get_db, get_repo
from server.rollout_history import animal_model_changes, model_changes

bp = Blueprint("api", __name__, url_prefix="/api/v1")

DEFAULT_HISTORY_S = 24 * 3600
MAX_LIMIT = 10_000
# Unix seconds as people and scripts write them; ASCII only (float() also reads other scripts' digits).
_NUMBER = re.compile(r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$")


# --- request helpers -------------------------------------------------------------------------------


def _arg_time(name: str, default: float | None = None) -> float | None:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        return parse_time(float(value) if _NUMBER.match(value) else value, f"parameter {name!r}")
    except MgsError as exc:
        abort(400, description=str(exc))


def _arg_id(name: str) -> int | None:
    """An id filter (animal_id, experiment_id): 1 to 2^63-1."""
    value = request.args.get(name)
    if value is None or value == "":
        return None
    try:
        return parse_id(value, f"parameter {name!r}")
    except MgsError as exc:
        abort(400, description=str(exc))


def _arg_count(name: str, lo: int, hi: int, default: int | None) -> int | None:
    """A bounded whole number (box, limit); out of range is a 400, never clamped silently."""
    value = request.args.get(name)
    if value is None or value == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", value) or not lo <= int(value) <= hi:
        abort(400, description=f"parameter {name!r} = {value!r} must be a whole number from {lo} to {hi}")
    return int(value)


def _arg_box() -> int | None:
    return _arg_count("box", 0, MAX_BOXES - 1, None)


def _arg_limit(default: int) -> int:
    return _arg_count("limit", 1, MAX_LIMIT, default)  # type: ignore[return-value]


def _known_box(device: str, box: int) -> None:
    if not get_repo().box_known(device, box):
        raise NotFound(f"box {device}/{box} has never reported, been labelled or been assigned")


def _time_range() -> tuple[float, float]:
    now = time.time()
    end = _arg_time("end", now)
    start = _arg_time("start", max(EARLIEST_TIME, end - DEFAULT_HISTORY_S))  # type: ignore[operator]
    if end <= start:  # type: ignore[operator]
        abort(400, description="'end' must be after 'start'")
    return start, end  # type: ignore[return-value]


def _resolution() -> str:
    value = request.args.get("resolution", "auto")
    if value != "auto" and value not in RESOLUTIONS:
        abort(400, description=f"resolution {value!r} must be one of auto, {', '.join(RESOLUTIONS)}")
    return value


def _body(*required: str) -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, description="send a JSON object with Content-Type: application/json")
    missing = [k for k in required if k not in body]
    if missing:
        abort(400, description=f"missing field(s) {missing}")
    return body


def _username() -> str:
    user = current_user()
    return user["username"] if user else ""


def _audit(action: str, target: str, old: Any = None, new: Any = None) -> None:
    """One audit entry for a change that succeeded, shaped like the dashboard's for the same change."""
    audit.record(get_db(), _username(), action, target, old, new)


# --- boxes, devices, scores ------------------------------------------------------------------------


@bp.get("/boxes")
def boxes() -> Response:
    """`clock_ahead` is true for a box whose last window ends beyond the clock-skew allowance."""
    allowance = current_app.config["MGS_CONFIG"].dashboard.clock_skew_s
    rows = get_repo().boxes(time.time())
    for row in rows:
        row["clock_ahead"] = row["ahead_s"] is not None and row["ahead_s"] > allowance
    return jsonify(boxes=rows)


@bp.patch("/boxes/<device>/<int:box>")
@require_role("officer")
def update_box(device: str, box: int) -> Response:
    body = _body("label")
    repo = get_repo()
    repo.set_box_label(device, box, body["label"])
    return jsonify(box=next(b for b in repo.boxes(time.time()) if b["device"] == device and b["box"] == box))


@bp.get("/boxes/<device>/<int:box>/scores")
def box_scores(device: str, box: int) -> Response:
    _known_box(device, box)
    start, end = _time_range()
    result = get_repo().box_scores(device, box, start, end, _resolution())
    changes = model_changes(get_db(), device, box, start, end)
    return jsonify(device=device, box=box, start=start, end=end, model_changes=changes, **result)


@bp.get("/devices")
def devices() -> Response:
    """`boxes_clock_ahead`: boxes of the device whose last window ends beyond the clock-skew allowance."""
    repo = get_repo()
    ahead = repo.boxes_ahead(time.time(), current_app.config["MGS_CONFIG"].dashboard.clock_skew_s)
    rows = repo.devices()
    for row in rows:
        row["boxes_clock_ahead"] = ahead.get(row["name"], 0)
    return jsonify(devices=rows)


@bp.get("/devices/<device>")
def device(device: str) -> Response:
    repo = get_repo()
    return jsonify(device=repo.device(device), status=repo.device_status_json(device))


@bp.get("/ingest")
def ingest() -> Response:
    """Ingest counters since the database was created (received, stored, duplicates, rejected...)."""
    return jsonify(counters=get_repo().counters())


@bp.get("/quarantine")
@require_role("officer")
def quarantine() -> Response:
    return jsonify(messages=get_repo().quarantine(_arg_limit(100)))


# --- animals and experiments -----------------------------------------------------------------------


@bp.get("/animals")
def animals() -> Response:
    return jsonify(animals=get_repo().animals(experiment_id=_arg_id("experiment_id")))


@bp.post("/animals")
@require_role("officer")
def create_animal() -> tuple[Response, int]:
    body = _body("name")
    repo = get_repo()
    animal_id = repo.create_animal(
        body["name"], body.get("strain", ""), body.get("notes", ""), body.get("experiment_id")
    )
    _audit("create animal", f"animal:{animal_id}", None, audit.pick(repo.animal(animal_id), audit.ANIMAL_FIELDS))
    return jsonify(animal=repo.animal(animal_id)), 201


@bp.get("/animals/<int:animal_id>")
def animal(animal_id: int) -> Response:
    repo = get_repo()
    return jsonify(animal=repo.animal(animal_id), assignments=repo.assignments(animal_id=animal_id))


@bp.patch("/animals/<int:animal_id>")
@require_role("officer")
def update_animal(animal_id: int) -> Response:
    body = _body()
    repo = get_repo()
    old = audit.pick(repo.animal(animal_id), audit.ANIMAL_FIELDS)
    repo.update_animal(animal_id, **body)
    new = audit.pick(repo.animal(animal_id), audit.ANIMAL_FIELDS)
    if new != old:
        _audit("update animal", f"animal:{animal_id}", old, new)
    return jsonify(animal=repo.animal(animal_id))


@bp.get("/animals/<int:animal_id>/scores")
def animal_scores(animal_id: int) -> Response:
    """Points carry `source` (live / imported); `recordings` lists the imported videos in the range,
    so a chart can draw each as its own, labelled series; `model_changes` where the model changed."""
    start, end = _time_range()
    repo = get_repo()
    result = repo.animal_scores(animal_id, start, end, _resolution())
    recordings = video_imports.recordings_for_animal(repo, animal_id, start, end)
    imported = frozenset(r["device"] for r in recordings)
    for point in result["points"]:
        point["source"] = video_imports.window_source(point["device"], imported)
    changes = animal_model_changes(get_db(), repo.assignments(animal_id=animal_id), start, end)
    return jsonify(animal_id=animal_id, start=start, end=end, recordings=recordings, model_changes=changes, **result)


@bp.get("/experiments")
def experiments() -> Response:
    return jsonify(experiments=get_repo().experiments())


@bp.post("/experiments")
@require_role("officer")
def create_experiment() -> tuple[Response, int]:
    body = _body("name")
    repo = get_repo()
    experiment_id = repo.create_experiment(body["name"], body.get("description", ""))
    experiment = repo.experiment(experiment_id)
    _audit(
        "create experiment",
        f"experiment:{experiment_id}",
        None,
        {"name": experiment["name"], "description": experiment["description"]},
    )
    return jsonify(experiment=experiment), 201


# --- assignments -----------------------------------------------------------------------------------


@bp.get("/assignments")
def assignments() -> Response:
    active = request.args.get("active")
    return jsonify(
        assignments=get_repo().assignments(
            animal_id=_arg_id("animal_id"),
            device=request.args.get("device") or None,
            box=_arg_box(),
            active_at=time.time() if active in ("1", "true", "yes") else None,
        )
    )


@bp.post("/assignments")
@require_role("officer")
def create_assignment() -> tuple[Response, int]:
    body = _body("animal_id", "device", "box")
    repo = get_repo()
    assignment_id = repo.create_assignment(
        body["animal_id"],
        body["device"],
        body["box"],
        body.get("start_time", time.time()),
        body.get("end_time"),
        body.get("note", ""),
        _username(),
    )
    created = repo.assignment(assignment_id)
    _audit("create assignment", f"assignment:{assignment_id}", None, audit.pick(created, audit.ASSIGNMENT_FIELDS))
    return jsonify(assignment=created), 201


@bp.get("/assignments/<int:assignment_id>")
def assignment(assignment_id: int) -> Response:
    return jsonify(assignment=get_repo().assignment(assignment_id))


@bp.patch("/assignments/<int:assignment_id>")
@require_role("officer")
def update_assignment(assignment_id: int) -> Response:
    body = _body()
    if body.get("end_time") == "now":
        body["end_time"] = time.time()
    repo = get_repo()
    old = audit.pick(repo.assignment(assignment_id), audit.ASSIGNMENT_FIELDS)
    repo.update_assignment(assignment_id, **body)
    updated = repo.assignment(assignment_id)
    new = audit.pick(updated, audit.ASSIGNMENT_FIELDS)
    if new != old:
        action = "end assignment" if set(body) == {"end_time"} else "update assignment"
        _audit(action, f"assignment:{assignment_id}", old, new)
    return jsonify(assignment=updated)


@bp.delete("/assignments/<int:assignment_id>")
@require_role("officer")
def delete_assignment(assignment_id: int) -> tuple[str, int]:
    repo = get_repo()
    old = audit.pick(repo.assignment(assignment_id), audit.ASSIGNMENT_FIELDS)
    repo.delete_assignment(assignment_id)
    _audit("delete assignment", f"assignment:{assignment_id}", old, None)
    return "", 204


# --- alerts and rules ------------------------------------------------------------------------------


@bp.get("/alerts")
def alerts() -> Response:
    return jsonify(
        alerts=get_repo().alerts(
            since=_arg_time("since"),
            until=_arg_time("until"),
            device=request.args.get("device") or None,
            box=_arg_box(),
            animal_id=_arg_id("animal_id"),
            unacknowledged=request.args.get("open") in ("1", "true", "yes"),
            limit=_arg_limit(500),
        )
    )


@bp.post("/alerts/<int:alert_id>/acknowledge")
@require_role("officer")
def acknowledge_alert(alert_id: int) -> Response:
    """Acknowledging twice keeps the first acknowledgement and its single audit entry."""
    repo = get_repo()
    before = repo.alert(alert_id)
    acked = repo.acknowledge_alert(alert_id, _username())
    if before["acknowledged_at"] is None:
        _audit(
            "acknowledge alert",
            f"alert:{alert_id}",
            {"acknowledged": False},
            {"acknowledged": True, "animal": acked["animal_name"], "box": f"{acked['device']}/{acked['box']}"},
        )
    return jsonify(alert=acked)


@bp.get("/alert-rules")
def alert_rules() -> Response:
    return jsonify(rules=get_repo().alert_rules())


@bp.post("/alert-rules")
@require_role("officer")
def create_alert_rule() -> tuple[Response, int]:
    body = _body("threshold", "duration_s")
    repo = get_repo()
    rule_id = repo.create_alert_rule(
        body["threshold"],
        body["duration_s"],
        body.get("animal_id"),
        body.get("experiment_id"),
        body.get("enabled", True),
    )
    rule = repo.alert_rule(rule_id)
    _audit("create rule", f"rule:{rule_id}", None, audit.pick(rule, audit.RULE_FIELDS))
    return jsonify(rule=rule), 201


@bp.patch("/alert-rules/<int:rule_id>")
@require_role("officer")
def update_alert_rule(rule_id: int) -> Response:
    body = _body("enabled")
    if not isinstance(body["enabled"], bool):
        abort(400, description="'enabled' must be true or false")
    repo = get_repo()
    old = audit.pick(repo.alert_rule(rule_id), audit.RULE_FIELDS)
    repo.set_alert_rule_enabled(rule_id, body["enabled"])
    rule = repo.alert_rule(rule_id)
    _audit(
        "enable rule" if body["enabled"] else "disable rule",
        f"rule:{rule_id}",
        old,
        audit.pick(rule, audit.RULE_FIELDS),
    )
    return jsonify(rule=rule)


@bp.delete("/alert-rules/<int:rule_id>")
@require_role("officer")
def delete_alert_rule(rule_id: int) -> tuple[str, int]:
    repo = get_repo()
    old = audit.pick(repo.alert_rule(rule_id), audit.RULE_FIELDS)
    repo.delete_alert_rule(rule_id)
    _audit("delete rule", f"rule:{rule_id}", old, None)
    return "", 204


# --- export ------------------------------------------------------------------------------------------


@bp.get("/export")
def export() -> Response:
    """Raw windows as CSV or JSON. Choose what with `scope` (`animal:<id>`, `experiment:<id>`,
    `box:<device>/<box>`, empty = all boxes) or with animal_id / experiment_id / device+box."""
    fmt = request.args.get("format", "csv")
    if fmt not in data_export.FORMATS:
        abort(400, description=f"format {fmt!r} must be one of {', '.join(data_export.FORMATS)}")
    if not request.args.get("start"):
        abort(400, description="give 'start' (and optionally 'end', default now) for the export")
    start, end = _time_range()
    query: dict[str, Any] = {
        "start": start,
        "end": end,
        "animal_id": _arg_id("animal_id"),
        "experiment_id": _arg_id("experiment_id"),
        "device": request.args.get("device") or None,
        "box": _arg_box(),
    }
    query.update(_scope(request.args.get("scope", "")))
    repo = get_repo()
    rows = repo.iter_windows(
        start,
        end,
        device=query["device"],
        box=query["box"],
        animal_id=query["animal_id"],
        experiment_id=query["experiment_id"],
    )
    first = next(rows, None)  # runs the checks (unknown animal -> 404) before the response starts
    imported = video_imports.imported_devices(repo)

    def all_rows() -> Any:
        for row in itertools.chain([] if first is None else [first], rows):
            row["source"] = video_imports.window_source(row["device"], imported)
            yield row

    chunks = data_export.csv_chunks(all_rows()) if fmt == "csv" else data_export.json_chunks(all_rows(), query)
    name = f"mgs-scores-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(start))}.{fmt}"
    return Response(
        stream_with_context(chunks),
        content_type=data_export.FORMATS[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def _scope(scope: str) -> dict[str, Any]:
    if not scope:
        return {}
    kind, _, value = scope.partition(":")
    device, _, box = value.rpartition("/")
    try:
        if kind == "animal":
            return {"animal_id": parse_id(value, "animal id")}
        if kind == "experiment":
            return {"experiment_id": parse_id(value, "experiment id")}
        if kind == "box" and re.fullmatch(r"[0-9]{1,2}", box) and int(box) < MAX_BOXES:
            return {"device": device, "box": int(box)}
    except MgsError:
        pass
    abort(
        400,
        description=f"scope {scope!r} must be animal:<id>, experiment:<id> or box:<device>/<box> "
        f"(ids from 1, boxes 0-{MAX_BOXES - 1})",
    )
