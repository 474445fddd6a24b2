"""Dashboard pages for welfare officers and lab staff: overview, history, alerts, devices, animals.

Pages are rendered on the server. The overview is a triage list (`server.triage`): each tile is
rendered here, and an open page asks `/overview/delta` for the tiles whose rendering changed, so
what a box shows ("no face visible", "no data for 12 min", a score) is decided in one place, here,
and tested without a browser. Alert and device tables are page fragments fetched again every few
seconds (`?fragment=1`). History plots fetch their points from the REST API by time range. Every
time is shown in the facility's zone (`[dashboard] timezone`) with its name.
"""

from __future__ import annotations

import gzip
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import plotly
from flask import Blueprint, current_app, flash, jsonify, redirect, render_template, request, send_file, url_for
from werkzeug.wrappers import Response

from mgs_core.errors import MgsError
from server import audit, episodes, exports, rollout, timefmt, triage, video_imports
from server.auth import current_user, has_role, local_path, require_role
from server.config import DashboardConfig
from server.episodes import Episode
from server.repository import parse_id
from server.request_db import get_db, get_repo

bp = Blueprint("dashboard", __name__)

SPARK_WINDOW_S = 30 * 60
TREND_RECENT_S = 5 * 60
TREND_DELTA = 0.5
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
HISTORY_RANGES = (("1 h", 3600), ("6 h", 6 * 3600), ("24 h", 86400), ("7 d", 7 * 86400), ("30 d", 30 * 86400))
HISTORY_EPISODES_S = 30 * 86400
ALL_EPISODES_S = 7 * 86400
EPISODES_MAX = 500
GZIP_MIN_BYTES = 1400
# Shown wherever a window reads "not scorable": what it means and what a person can do about it.
NOT_SCORABLE_HELP = "face seen, model not confident: check light, lens and the animal"


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


@bp.app_template_filter("when")
def format_when(ts: float | None, seconds: bool = False) -> str:
    """'2026-12-02 09:12 CET' in the facility's zone."""
    return timefmt.local_time(ts, _config().timezone, seconds)


@bp.app_template_filter("when_short")
def format_when_short(ts: float, now: float) -> str:
    """The time alone for today (tiles are small), with the date otherwise."""
    return timefmt.local_time_short(ts, _config().timezone, now)


@bp.app_template_filter("duration")
def format_duration(seconds: float | None) -> str:
    return timefmt.duration(seconds)


@bp.app_template_filter("minutes")
def format_minutes(seconds: float) -> str:
    """A duration to the minute, for text that must not change every second ('< 1 min', '6 min')."""
    return "< 1 min" if seconds < 60 else timefmt.duration(seconds // 60 * 60)


@bp.app_template_global()
def not_scorable_help() -> str:
    """A template global, not a context value: tiles are rendered without the request context."""
    return NOT_SCORABLE_HELP


@bp.app_context_processor
def _facility() -> dict[str, Any]:
    return {"facility_tz": _config().timezone, "plot_episodes": plot_episodes}


def plot_episodes(found: list[Episode]) -> list[dict[str, Any]]:
    """What the history chart draws: a shaded span per episode and a marker per acknowledgement."""
    return [
        {
            "id": e.id,
            "start": e.start,
            "end": e.end,
            "peak": e.peak,
            "sources": e.sources,
            "acks": [{"time": n["time"], "user": n["username"], "note": n["note"]} for n in e.acknowledgements],
        }
        for e in found
    ]


# --- what a box shows -----------------------------------------------------------------------------


def not_scorable(row: dict[str, Any]) -> bool:
    """The box's last window has no score but eyes the model abstained on: the camera saw a face,
    unlike "no face visible", so a box that stays so needs a person (light, lens, the animal)."""
    return row["last_score"] is None and (row.get("last_abstained_eyes") or 0) > 0


def box_state(row: dict[str, Any], config: DashboardConfig) -> str:
    """One word for a box tile: empty, future, stale, noface, notscorable, alert, high or ok.

    Order matters: an old score is never shown as current, nor is one dated ahead of the server's
    clock (a device clock gone wrong would otherwise show "ok, 0 s ago" forever), and neither "no
    face visible" nor "not scorable" is ever shown as a score; a raised alert stays visible even
    while the face is hidden."""
    if row["last_window_end"] is None:
        return "empty"
    if row["ahead_s"] > config.clock_skew_s:
        return "future"
    if row["age_s"] > config.stale_after_s:
        return "stale"
    if row["alert"] == "raised":
        return "alert"
    if row["last_score"] is None:
        return "notscorable" if not_scorable(row) else "noface"
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


def overview_tiles(now: float) -> list[dict[str, Any]]:
    """Every box as a tile (state, severity level, sparkline, trend, open episode, animal records),
    in triage order. Sparklines and trends use completed minutes only, so a tile is re-sent to
    open pages when something a person can see changed, not on every window."""
    repo = get_repo()
    config = _config()
    db = get_db()
    animals = {a["id"]: a for a in repo.animals()}
    by_animal: dict[int, Episode] = {}
    by_box: dict[tuple[str, int], Episode] = {}
    for e in episodes.open_episodes(db, now):
        if e.animal_id is not None:
            by_animal.setdefault(e.animal_id, e)
        else:
            by_box.setdefault((e.device, e.box), e)
    minute = math.floor(now / 60) * 60
    sparks = _minute_sparks(db, minute)
    tiles = []
    for row in repo.boxes(now):
        row["key"] = f"{row['device']}/{row['box']}"
        row["state"] = box_state(row, config)
        row["not_scorable"] = not_scorable(row)
        spark = sparks.get((row["device"], row["box"]), {"line": [], "trend": None, "above": 0})
        row["spark"] = spark["line"]
        live = row["state"] in ("ok", "high", "alert")
        row["trend"] = spark["trend"] if live else None
        row["level"] = triage.level(row["last_score"], config.severity_steps) if live else None
        row["minutes_above"] = spark["above"]
        animal = animals.get(row["animal_id"]) if row["animal_id"] is not None else None
        row["experiment_name"] = animal["experiment_name"] if animal else None
        row["humane_endpoint"] = animal["humane_endpoint"] if animal else ""
        row["notes"] = animal["notes"] if animal else ""
        row["episode"] = by_animal.get(row["animal_id"]) or by_box.get((row["device"], row["box"]))
        tiles.append(row)
    tiles.sort(key=triage.rank)
    return tiles


def _minute_sparks(db: Any, minute: float) -> dict[tuple[str, int], dict[str, Any]]:
    """Sparkline, trend and minutes above `warn_score` of every box, from the completed minutes
    before `minute`. They change when a minute completes or when windows arrive late for a
    completed minute (a replayed outbox, a new box); both change the number of windows in those
    minutes, so that count is the cache key and the lines are computed again only then."""
    stamp = (minute, *triage.spark_stamp(db, minute - SPARK_WINDOW_S, minute))
    cached = current_app.extensions.get("mgs_minute_sparks")
    if cached is not None and cached[0] == stamp:
        return cached[1]
    warn = _config().warn_score
    out = {
        key: {
            "line": sparkline(points, minute - SPARK_WINDOW_S, SPARK_WINDOW_S),
            "trend": trend(points, minute),
            "above": triage.minutes_above(points, warn),
        }
        for key, points in triage.spark_points(db, minute - SPARK_WINDOW_S, minute).items()
    }
    current_app.extensions["mgs_minute_sparks"] = (stamp, out)
    return out


# --- pages ----------------------------------------------------------------------------------------


def ingest_problem() -> str | None:
    """Why no new data can arrive, when the ingest worker of this process is not connected."""
    worker = current_app.extensions.get("mgs_ingest")
    if worker is None or worker.connected.is_set():
        return None
    config = worker.config
    return (
        f"The server is not receiving data: no connection to the MQTT broker at {config.host}:{config.port}"
        f"{' (' + worker.last_error + ')' if worker.last_error else ''}. Scores shown are the last ones received."
    )


def _overview_context(now: float) -> dict[str, Any]:
    tiles = overview_tiles(now)
    open_eps = [t["episode"] for t in tiles if t["episode"] is not None]
    return {
        "tiles": tiles,
        "now": now,
        "devices": get_repo().devices(),
        "config": _config(),
        "attention": len({id(e) for e in open_eps}),
        "ingest_problem": ingest_problem(),
        "model_notices": rollout.problem_notices(get_db()) if has_role("officer") else [],
        "legend": triage.legend(_config().severity_steps),
    }


def _rendered(context: dict[str, Any]) -> tuple[dict[str, str], list[str], str]:
    """Each tile's HTML, the order, and the summary line, exactly as the page shows them. Tiles
    are rendered straight from the compiled template: they use no request context, and running
    Flask's context processors 500 times would cost more than the tiles themselves."""
    tiles = {t["key"]: _tile_html(t, context["now"]) for t in context["tiles"]}
    return tiles, [t["key"] for t in context["tiles"]], render_template("_overview_summary.html", **context)


# Row fields the tile template does not show; they change with every window and would defeat the cache.
_NOT_SHOWN = (
    "age_s",
    "last_seq",
    "last_window_end",
    "last_face_visible_fraction",
    "last_abstained_eyes",
    "device_last_seen",
    "unacknowledged_alerts",
    "minutes_above",
)
_TILE_CACHE_MAX = 5000


def _tile_html(tile: dict[str, Any], now: float) -> str:
    """One tile's HTML, re-rendered only when something it shows changed: the cache key is every
    field the template reads, with the two time-dependent texts (how long without data, how long
    the episode runs) in their displayed form."""
    episode = tile["episode"]
    key = (
        repr([(k, v) for k, v in sorted(tile.items()) if k not in _NOT_SHOWN])
        + "|"
        + (format_age(tile["age_s"]) if tile["state"] == "stale" else "")
        + "|"
        + (format_minutes(now - episode.start) + format_when_short(episode.start, now) if episode is not None else "")
    )
    cache: dict[str, str] = current_app.extensions.setdefault("mgs_tile_html", {})
    html = cache.get(key)
    if html is None:
        if len(cache) > _TILE_CACHE_MAX:
            cache.clear()
        html = cache[key] = current_app.jinja_env.get_template("_tile.html").render(b=tile, now=now)
    return html


@bp.route("/")
def overview() -> str:
    context = _overview_context(time.time())
    tiles, order, summary = _rendered(context)
    version = _snapshots().put(tiles, order, summary)
    experiments = sorted({t["experiment_name"] for t in context["tiles"] if t["experiment_name"]})
    racks = sorted({t["device"] for t in context["tiles"]})
    return _page(
        "overview.html",
        "_overview_tiles.html",
        rendered=[tiles[k] for k in order],
        summary=summary,
        version=version,
        experiments=experiments,
        racks=racks,
        **context,
    )


@bp.route("/overview/delta")
def overview_delta() -> Response:
    """What changed since the version the page shows (see `server.triage`)."""
    now = time.time()
    context = _overview_context(now)
    tiles, order, summary = _rendered(context)
    store = _snapshots()
    version = store.put(tiles, order, summary)
    since = request.args.get("v", "")
    if since == version:
        return jsonify(version=version, now=now, unchanged=True)
    body = triage.delta(store.get(since), tiles, order)
    return jsonify(version=version, now=now, summary=summary, **body)


@bp.after_request
def _compress(response: Response) -> Response:
    """gzip pages and JSON for browsers that accept it: tile HTML is repetitive and shrinks several-fold,
    which is what makes a 500-box overview light on a facility's Wi-Fi."""
    if (
        response.direct_passthrough
        or response.status_code != 200
        or "Content-Encoding" in response.headers
        or response.mimetype not in ("text/html", "application/json")
        or "gzip" not in request.headers.get("Accept-Encoding", "")
    ):
        return response
    body = response.get_data()
    if len(body) < GZIP_MIN_BYTES:
        return response
    response.set_data(gzip.compress(body, compresslevel=5))
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    return response


def _snapshots() -> triage.SnapshotStore:
    store = current_app.extensions.get("mgs_overview_snapshots")
    if store is None:
        store = current_app.extensions.setdefault("mgs_overview_snapshots", triage.SnapshotStore())
    return store


@bp.route("/boxes/<device>/<int:box>")
def box_history(device: str, box: int) -> str:
    repo = get_repo()
    now = time.time()
    assignments = repo.assignments(device=device, box=box)
    current = next(
        (a for a in assignments if a["start_time"] <= now and (a["end_time"] is None or a["end_time"] > now)), None
    )
    threshold = _threshold_for([current["animal_id"]] if current else [])
    return render_template(
        "history.html",
        title=f"{device} box {box}",
        subject={"kind": "box", "device": device, "box": box},
        data_url=url_for("api.box_scores", device=device, box=box),
        assignments=assignments,
        current=current,
        animal=repo.animal(current["animal_id"]) if current else None,
        threshold=threshold,
        episodes=episodes.episodes(get_db(), now - HISTORY_EPISODES_S, now + 1, device=device, box=box, now=now),
        ranges=HISTORY_RANGES,
        history_s=_config().history_hours * 3600,
        config=_config(),
        now=now,
        back=request.path,
    )


@bp.route("/animals/<int:animal_id>")
def animal_history(animal_id: int) -> str:
    repo = get_repo()
    now = time.time()
    animal = repo.animal(animal_id)
    return render_template(
        "history.html",
        title=f"Animal {animal['name']}",
        subject={"kind": "animal", "animal": animal},
        data_url=url_for("api.animal_scores", animal_id=animal_id),
        assignments=repo.assignments(animal_id=animal_id),
        recordings=video_imports.recordings_for_animal(repo, animal_id, 0.0, math.inf),
        current=None,
        animal=animal,
        threshold=_threshold_for([animal_id]),
        episodes=episodes.episodes(get_db(), now - HISTORY_EPISODES_S, now + 1, animal_id=animal_id, now=now),
        ranges=HISTORY_RANGES,
        history_s=_config().history_hours * 3600,
        config=_config(),
        now=now,
        back=request.path,
    )


def _threshold_for(animal_ids: list[int]) -> dict[str, Any]:
    """The line drawn on a history plot: the lowest enabled rule of the animal, else the default."""
    rules = [r for rs in get_repo().rules_for_animals(animal_ids).values() for r in rs]
    if rules:
        rule = min(rules, key=lambda r: r["threshold"])
        return {
            "value": rule["threshold"],
            "label": f"alert rule: ≥ {rule['threshold']:g} for {timefmt.duration(rule['duration_s'])}",
        }
    return {"value": _config().plot_threshold, "label": f"reference {_config().plot_threshold:g}"}


@bp.route("/alerts")
def alerts() -> str:
    """Alert episodes: open or unacknowledged ones, or all of the last days."""
    show = request.args.get("show", "open")
    now = time.time()
    db = get_db()
    rows = (
        episodes.open_episodes(db, now)
        if show == "open"
        else episodes.episodes(db, now - ALL_EPISODES_S, now + 1, now=now)[:EPISODES_MAX]
    )
    return _page(
        "alerts.html",
        "_episodes_table.html",
        episodes=rows,
        show=show,
        now=now,
        back=url_for("dashboard.alerts", show=show),
    )


@bp.route("/alerts/<int:alert_id>/acknowledge", methods=["POST"])
@require_role("officer")
def acknowledge(alert_id: int) -> Response:
    """Acknowledge the episode that alert `alert_id` belongs to, with the note from the form."""
    user = current_user()
    assert user is not None
    db = get_db()

    def ack() -> None:
        episode = episodes.find(db, alert_id)
        episodes.acknowledge(db, [episode], user["username"], request.form.get("note", ""))

    return apply_change(
        ack, f"Alert episode {alert_id} acknowledged by {user['username']}.", _back(url_for("dashboard.alerts"))
    )


@bp.route("/animals/<int:animal_id>/acknowledge", methods=["POST"])
@require_role("officer")
def acknowledge_animal(animal_id: int) -> Response:
    """Acknowledge every open or unacknowledged episode of one animal at once, with one note."""
    user = current_user()
    assert user is not None
    db = get_db()
    name = get_repo().animal(animal_id)["name"]
    found = [e for e in episodes.open_episodes(db) if e.animal_id == animal_id]

    def ack() -> None:
        if not found:
            raise MgsError(f"animal {name} has no open alert episode to acknowledge")
        episodes.acknowledge(db, found, user["username"], request.form.get("note", ""))

    return apply_change(
        ack,
        f"{len(found)} alert episode(s) of {name} acknowledged by {user['username']}.",
        _back(url_for("dashboard.animal_history", animal_id=animal_id)),
    )


def _back(default: str) -> str:
    """Return to the page the form was on (only paths on this server)."""
    return local_path(request.form.get("back"), default)


@bp.route("/devices")
def devices() -> str:
    repo = get_repo()
    now = time.time()
    return _page(
        "devices.html",
        "_devices_table.html",
        devices=repo.devices(),
        now=now,
        counters=repo.counters(),
        boxes_ahead=repo.boxes_ahead(now, _config().clock_skew_s),
        model_states=rollout.device_states(get_db()),
    )


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
        "assignments.html",
        title="Animals & boxes",
        animals=repo.animals(),
        experiments=repo.experiments(),
        current=[a for a in rows if a["end_time"] is None or a["end_time"] > now],
        past=[a for a in rows if a["end_time"] is not None and a["end_time"] <= now][::-1],
        boxes=repo.boxes(now),
        rules=repo.alert_rules(),
        now=now,
    )


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
    """Times arrive as Unix seconds, converted from the facility's zone by common.js."""
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


def _audit(action: str, target: str, old: Any = None, new: Any = None) -> None:
    user = current_user()
    assert user is not None
    audit.record(get_db(), user["username"], action, target, old, new)


@bp.route("/experiments", methods=["POST"])
@require_role("officer")
def create_experiment() -> Response:
    name = request.form.get("name", "").strip()

    def create() -> None:
        description = request.form.get("description", "")
        experiment_id = get_repo().create_experiment(name, description)
        _audit("create experiment", f"experiment:{experiment_id}", None, {"name": name, "description": description})

    return _edit(create, f"Experiment {name!r} created.")


@bp.route("/animals", methods=["POST"])
@require_role("officer")
def create_animal() -> Response:
    name = request.form.get("name", "").strip()

    def create() -> None:
        repo = get_repo()
        animal_id = repo.create_animal(
            name,
            request.form.get("strain", ""),
            request.form.get("notes", ""),
            _form_int("experiment_id", "experiment", optional=True),
        )
        repo.update_animal(animal_id, humane_endpoint=request.form.get("humane_endpoint", ""))
        _audit("create animal", f"animal:{animal_id}", None, audit.pick(repo.animal(animal_id), audit.ANIMAL_FIELDS))

    return _edit(create, f"Animal {name!r} added.")


@bp.route("/animals/<int:animal_id>/records", methods=["POST"])
@require_role("officer")
def update_animal_records(animal_id: int) -> Response:
    """Notes and humane-endpoint criteria, kept with the animal and shown wherever it appears."""

    def update() -> None:
        repo = get_repo()
        old = audit.pick(repo.animal(animal_id), audit.ANIMAL_FIELDS)
        repo.update_animal(
            animal_id, notes=request.form.get("notes", ""), humane_endpoint=request.form.get("humane_endpoint", "")
        )
        new = audit.pick(repo.animal(animal_id), audit.ANIMAL_FIELDS)
        if new != old:
            _audit("update animal", f"animal:{animal_id}", old, new)

    return apply_change(update, "Notes saved.", url_for("dashboard.animal_history", animal_id=animal_id))


@bp.route("/assignments", methods=["POST"])
@require_role("officer")
def create_assignment() -> Response:
    user = current_user()
    assert user is not None

    def create() -> None:
        device, _, box = request.form.get("box", "").partition("/")
        if not box.isascii() or not box.isdigit():
            raise MgsError("choose a box")
        repo = get_repo()
        assignment_id = repo.create_assignment(
            _form_int("animal_id", "animal"),
            device,
            int(box),  # type: ignore[arg-type]
            _form_time("start", "start", optional=True) or time.time(),
            _form_time("end", "end", optional=True),
            request.form.get("note", ""),
            created_by=user["username"],
        )
        _audit(
            "create assignment",
            f"assignment:{assignment_id}",
            None,
            audit.pick(repo.assignment(assignment_id), audit.ASSIGNMENT_FIELDS),
        )

    return _edit(create, "Assignment saved.")


@bp.route("/assignments/<int:assignment_id>/end", methods=["POST"])
@require_role("officer")
def end_assignment(assignment_id: int) -> Response:
    def end() -> None:
        repo = get_repo()
        old = audit.pick(repo.assignment(assignment_id), audit.ASSIGNMENT_FIELDS)
        repo.update_assignment(assignment_id, end_time=time.time())
        _audit(
            "end assignment",
            f"assignment:{assignment_id}",
            old,
            audit.pick(repo.assignment(assignment_id), audit.ASSIGNMENT_FIELDS),
        )

    return _edit(end, f"Assignment {assignment_id} ended now.")


@bp.route("/assignments/<int:assignment_id>/delete", methods=["POST"])
@require_role("officer")
def delete_assignment(assignment_id: int) -> Response:
    def delete() -> None:
        repo = get_repo()
        old = audit.pick(repo.assignment(assignment_id), audit.ASSIGNMENT_FIELDS)
        repo.delete_assignment(assignment_id)
        _audit("delete assignment", f"assignment:{assignment_id}", old, None)

    return _edit(delete, f"Assignment {assignment_id} deleted.")


@bp.route("/rules", methods=["POST"])
@require_role("officer")
def create_rule() -> Response:
    def create() -> None:
        target, _, ident = request.form.get("target", "").partition(":")
        if target not in ("animal", "experiment"):
            raise MgsError("choose the animal or experiment the rule applies to")
        rule_for = parse_id(ident, target)
        repo = get_repo()
        rule_id = repo.create_alert_rule(
            _form_float("threshold", "threshold"),
            _form_float("duration_min", "duration") * 60,
            animal_id=rule_for if target == "animal" else None,
            experiment_id=rule_for if target == "experiment" else None,
        )
        _audit("create rule", f"rule:{rule_id}", None, audit.pick(repo.alert_rule(rule_id), audit.RULE_FIELDS))

    return _edit(create, "Alert rule created.")


@bp.route("/rules/<int:rule_id>/enabled", methods=["POST"])
@require_role("officer")
def set_rule_enabled(rule_id: int) -> Response:
    enabled = request.form.get("enabled") == "1"

    def change() -> None:
        repo = get_repo()
        old = audit.pick(repo.alert_rule(rule_id), audit.RULE_FIELDS)
        repo.set_alert_rule_enabled(rule_id, enabled)
        _audit(
            "enable rule" if enabled else "disable rule",
            f"rule:{rule_id}",
            old,
            audit.pick(repo.alert_rule(rule_id), audit.RULE_FIELDS),
        )

    return _edit(change, f"Alert rule {rule_id} {'enabled' if enabled else 'disabled'}.")


@bp.route("/rules/<int:rule_id>/delete", methods=["POST"])
@require_role("officer")
def delete_rule(rule_id: int) -> Response:
    def delete() -> None:
        repo = get_repo()
        old = audit.pick(repo.alert_rule(rule_id), audit.RULE_FIELDS)
        repo.delete_alert_rule(rule_id)
        _audit("delete rule", f"rule:{rule_id}", old, None)

    return _edit(delete, f"Alert rule {rule_id} deleted.")


# --- export ---------------------------------------------------------------------------------------


@bp.route("/export")
def export() -> str:
    repo = get_repo()
    return render_template(
        "export.html",
        title="Export",
        animals=repo.animals(),
        experiments=repo.experiments(),
        boxes=repo.boxes(),
        export_url=url_for("api.export"),
        formats=exports.FORMATS,
    )
