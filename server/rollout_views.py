"""The Models page (admins: upload a set, compare versions, roll out, promote a canary) and the
device endpoint that serves a registered set's files to edge boxes.

A device downloads with its own token (`require_device`): any provisioned device may fetch any
registered version, and every download is logged with the device's name. Only the files of the
version's manifest (and the manifest itself) are served; any other name is 404, so the endpoint
can never be turned into a way to read other files of the server.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from werkzeug.wrappers import Response

from mgs_core.errors import MgsError
from mgs_core.manifest import SET_FIGURES
from server import audit, auth, chunked_upload, rollout
from server.model_registry import MIB, Registry, versions
from server.request_db import get_db

log = logging.getLogger(__name__)

bp = Blueprint("models", __name__, url_prefix="/models")
device_bp = Blueprint("device_models", __name__, url_prefix="/api/v1/device/models")

SET_KIND = "model_set"  # /api/v1/uploads/model_set: the page's script sends a set in pieces
FORM_OVERHEAD = 64 * 1024  # the other form fields and the multipart boundaries around the file


def registry() -> Registry:
    config = current_app.config["MGS_CONFIG"]
    return Registry.of(config.models, Path(current_app.config["DATABASE"]))


def allow_large_upload() -> None:
    """A model set is the one large body of this blueprint: allow it up to `[models] max_set_mb`
    (before auth's CSRF check reads the form)."""
    if request.endpoint == "models.upload":
        request.max_content_length = current_app.config["MGS_CONFIG"].models.max_set_mb * MIB + FORM_OVERHEAD


def _user() -> str:
    user = auth.current_user()
    return user["username"] if user else ""


@bp.get("")
@auth.require_role("admin")
def index() -> str:
    db = get_db()
    all_versions = versions(db)
    for v in all_versions:
        v["figures"] = _flat(v["evaluate"] or {})
    # The figures `package` writes are shown first, in their order, when a set has them; any others follow.
    figures = [k for k in SET_FIGURES if any(v["figures"].get(k) is not None for v in all_versions)]
    figures += sorted({k for v in all_versions for k in v["figures"]} - set(figures))
    return render_template(
        "models.html",
        title="Models",
        versions=all_versions,
        figures=figures,
        running=rollout.running_counts(db),
        states=rollout.device_states(db),
        devices=rollout.known_devices(db),
        rollouts=rollout.rollouts(db),
    )


def _flat(figures: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"heldout": {"mae": 0.4}} -> {"heldout.mae": 0.4}: one column per figure, however nested."""
    out: dict[str, Any] = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@bp.post("")
@auth.require_role("admin")
def upload() -> Any:
    """Register an uploaded set. A script or the page's upload script (Accept: application/json)
    gets JSON with the result; a plain form post is redirected back with a message."""
    file = request.files.get("set")
    upload_id = request.form.get("upload_id", "").strip()
    try:
        if upload_id:  # sent in pieces by the page's script (server.chunked_upload)
            kind = chunked_upload.registered(SET_KIND)
            with chunked_upload.take(kind, upload_id, _user()) as (data, _name), data.open("rb") as stream:
                row = registry().add(get_db(), stream, _user())
        elif file is None or not file.filename:
            raise MgsError("choose the .tar.gz file that `mgs-export package` wrote")
        else:
            row = registry().add(get_db(), file.stream, _user())
    except MgsError as exc:
        log.warning("model set upload by %s refused: %s", _user(), exc)
        return _result(False, f"Refused: {exc}", 400)
    audit.record(
        get_db(), _user(), "upload model set", f"model:{row['version']}", None, {"manifest": row["manifest_sha256"]}
    )
    return _result(True, f"Version {row['version']} registered (manifest {row['manifest_sha256'][:12]}…).", 201)


def _result(ok: bool, message: str, status: int) -> Any:
    if request.accept_mimetypes.best == "application/json" or auth.wants_json():
        response = jsonify(ok=ok, message=message)
        response.status_code = status
        return response
    flash(message, "info" if ok else "error")
    return redirect(url_for("models.index"))


@bp.post("/assign")
@auth.require_role("admin")
def assign() -> Response:
    version = request.form.get("version", "").strip()
    everyone = request.form.get("target") == "all"
    devices = rollout.known_devices(get_db()) if everyone else request.form.getlist("device")
    canary = request.form.get("canary", "").strip() or None
    try:
        rollout_id = rollout.assign(get_db(), version, devices, _user(), canary)
    except MgsError as exc:
        flash(str(exc), "error")
        return redirect(url_for("models.index"))
    what = f"version {version}" if version else "the shipped models (withdrawal)"
    audit.record(
        get_db(),
        _user(),
        "assign model version",
        f"rollout:{rollout_id}",
        None,
        {"version": version, "devices": sorted(set(devices)), "canary": canary},
    )
    if canary:
        flash(f"Roll-out {rollout_id}: {what} sent to the canary {canary}; promote it once it runs well.", "info")
    else:
        flash(f"Roll-out {rollout_id}: {what} sent to {', '.join(sorted(set(devices)))}.", "info")
    return redirect(url_for("models.index"))


@bp.post("/rollouts/<int:rollout_id>/promote")
@auth.require_role("admin")
def promote(rollout_id: int) -> Response:
    try:
        devices = rollout.promote(get_db(), rollout_id, _user())
    except MgsError as exc:
        flash(str(exc), "error")
        return redirect(url_for("models.index"))
    audit.record(get_db(), _user(), "promote model canary", f"rollout:{rollout_id}", None, {"devices": devices})
    flash(f"Roll-out {rollout_id} promoted: sent to {', '.join(devices) or 'no other device'}.", "info")
    return redirect(url_for("models.index"))


@device_bp.get("/<version>/<filename>")
@auth.require_device
def download(version: str, filename: str) -> Response:
    path = registry().file(get_db(), version, filename)
    if path is None:
        abort(404, description=f"model version {version!r} has no file {filename!r}")
    log.info("device %s downloads %s/%s", auth.current_device(), version, filename)
    return send_file(path, mimetype="application/octet-stream", as_attachment=True, download_name=filename)


def register(app: Flask) -> None:
    """Add the Models page and the device download endpoint (one call from `server.app`)."""
    app.register_blueprint(bp)
    app.register_blueprint(device_bp)
    config = app.config["MGS_CONFIG"].models
    too_large = f"the set is larger than {config.max_set_mb} MiB, the limit of this server ([models] max_set_mb)"
    kind = chunked_upload.UploadKind(
        SET_KIND, "admin", config.max_set_mb * MIB, config.resolved_dir(Path(app.config["DATABASE"])), too_large
    )
    chunked_upload.add_kind(app, kind)
