"""Dashboard pages for recorded videos: upload one, follow its scoring, see the result.

Officers upload; anyone logged in may look. The video is scored by the server's own worker
(`server.video_jobs`), which runs `mgs-device score` in a child process, and its windows are
imported like a `mgs-device score --server` run, so they also appear in the animals' histories.
Imported recordings from either way are listed here as well.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
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
from werkzeug.utils import secure_filename

from mgs_core.errors import MgsError
from mgs_core.messages import EARLIEST_TIME, LATEST_TIME
from server import chunked_upload
from server.auth import current_user, require_role
from server.request_db import get_repo
from server.video_imports import list_imports
from server.video_jobs import VideosConfig, VideoWorker, job, jobs, scoring_missing, submit, video_problem

bp = Blueprint("videos", __name__, url_prefix="/videos")

BOXES = 4
FORM_OVERHEAD = 64 * 1024  # the other form fields and multipart boundaries around the file
VIDEO_KIND = "video"  # /api/v1/uploads/video: the page's script sends a video in pieces
RESULT_FILES = {"plot.png": "image/png", "windows.csv": "text/csv", "result.json": "application/json"}


def _config() -> VideosConfig:
    return current_app.config["MGS_CONFIG"].videos


def _worker() -> VideoWorker:
    return current_app.extensions["mgs_videos"]


@bp.get("")
def index() -> str:
    repo = get_repo()
    config = _config()
    unavailable = (
        scoring_missing() if config.enabled else "video upload is switched off on this server ([videos] enabled)"
    )
    return render_template(
        "videos.html",
        title="Recorded videos",
        jobs=jobs(repo),
        imports=list_imports(repo),
        boxes=range(BOXES),
        max_mb=config.max_upload_mb,
        unavailable=unavailable,
    )


@bp.post("")
@require_role("officer")
def upload() -> Response:
    try:
        job_id = _accept_upload()
    except MgsError as exc:
        flash(str(exc), "error")
        return redirect(url_for("videos.index"))
    _worker().wake()
    flash("Video uploaded; it is queued for scoring.", "info")
    return redirect(url_for("videos.show", job_id=job_id))


def _accept_upload() -> int:
    problem = _unavailable()
    if problem:
        raise MgsError(problem)
    upload_id = request.form.get("upload_id", "").strip()
    if upload_id:  # sent in pieces by the page's script (server.chunked_upload)
        owner = current_user()["username"]  # type: ignore[index]
        with chunked_upload.take(chunked_upload.registered(VIDEO_KIND), upload_id, owner) as (data, filename):
            return _submit(filename, data.rename)
    if request.content_length is None:
        raise MgsError("the browser did not say how large the upload is; upload the file with a current browser")
    file = request.files.get("video")
    if file is None or not file.filename:
        raise MgsError("choose a video file to upload")
    return _submit(file.filename, file.save)


def _unavailable() -> str | None:
    if not _config().enabled:
        return "video upload is switched off on this server ([videos] enabled = false)"
    return scoring_missing()


def _submit(filename: str, save: Callable[[Path], object]) -> int:
    """Store the video with `save(path)` in a folder of its own and queue it for scoring."""
    config = _config()
    name = secure_filename(filename) or "video.mp4"
    animals = {
        b: {"animal": _field(f"animal_{b}"), "group": _field("group"), "timepoint": _field("timepoint")}
        for b in range(BOXES)
    }
    animals = {b: a for b, a in animals.items() if a["animal"]}
    start = _start_time()
    # Each upload gets its own folder (the results go next to the video), named before the job
    # exists, so the worker never sees a job whose file is still being moved.
    folder = config.resolved_folder(Path(current_app.config["DATABASE"])) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    path = folder / name
    try:
        save(path)
        size = path.stat().st_size
        if size > config.max_upload_mb * 1024 * 1024:
            raise MgsError(_too_large_message())
        problem = video_problem(path)
        if problem is not None:
            raise MgsError(f"{filename} is not a video this server can read ({problem})")
        return submit(get_repo(), name, path, size, animals, start, current_user()["username"])  # type: ignore[index]
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _field(name: str) -> str:
    """A form field on one line: the scorer gets the animals as a CSV file with one row per box."""
    return " ".join(request.form.get(name, "").split())[:100]


def _too_large_message(config: VideosConfig | None = None) -> str:
    return (
        f"the video is larger than {(config or _config()).max_upload_mb} MiB, the limit of this server ([videos] "
        "max_upload_mb); cut it into parts, or score it on a PC with `mgs-device score --server`"
    )


@bp.errorhandler(413)
def _too_large(exc: Exception) -> Response:
    """The body is refused before it is read (MAX_CONTENT_LENGTH), so the message cannot wait for the view."""
    flash(_too_large_message(), "error")
    return redirect(url_for("videos.index"))


def _start_time() -> float | None:
    value = request.form.get("start", "").strip()
    if not value:
        return None
    try:
        start = float(value)
    except ValueError:
        raise MgsError(f"recording start {value!r} is not a time") from None
    if not EARLIEST_TIME <= start < LATEST_TIME:
        raise MgsError(f"recording start {value!r} is outside the years 1970-2099; pick the date again")
    return start


@bp.get("/<int:job_id>")
def show(job_id: int) -> str:
    row = job(get_repo(), job_id)
    return render_template("video_job.html", title=f"Video {row['filename']}", job=row, result=_result(row))


@bp.get("/<int:job_id>/status")
def status(job_id: int) -> Response:
    row = job(get_repo(), job_id)
    return jsonify(
        job={
            k: row[k]
            for k in ("id", "filename", "state", "frames_done", "frames_total", "message", "position", "import_id")
        }
    )


@bp.get("/<int:job_id>/files/<name>")
def result_file(job_id: int, name: str) -> Response:
    row = job(get_repo(), job_id)
    if name not in RESULT_FILES or not row["result_dir"]:
        abort(404, description=f"no result file {name!r} for video job {job_id}")
    path = Path(row["result_dir"]) / name
    if not path.is_file():
        abort(404, description=f"the result file {name} of video job {job_id} is gone from the server's folder")
    return send_file(
        path,
        mimetype=RESULT_FILES[name],
        as_attachment=name != "plot.png",
        download_name=f"{Path(row['filename']).stem}-{name}",
    )


def _result(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["state"] != "done" or not row["result_dir"]:
        return None
    try:
        data = json.loads((Path(row["result_dir"]) / "result.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    animals = {a["name"]: a["id"] for a in get_repo().animals()}
    for b in data.get("boxes", []):
        b["animal_id"] = animals.get(b.get("animal"))
    return data


LARGE_BODY_ENDPOINTS = ("videos.upload", "imports.create")


def allow_large_bodies() -> None:
    """Video uploads and imports are the only large bodies: every other request keeps the small
    `[http] max_request_kb` limit. Runs before the CSRF check reads the form, and still refuses a
    body over `[videos] max_upload_mb` from its Content-Length, before anything is read or stored."""
    if request.endpoint in LARGE_BODY_ENDPOINTS:
        request.max_content_length = _config().max_upload_mb * 1024 * 1024 + FORM_OVERHEAD


def register(app: Flask) -> None:
    """Add the video pages and the import API (one call from `server.app`)."""
    from server import imports

    config: VideosConfig = app.config["MGS_CONFIG"].videos
    worker = app.extensions["mgs_videos"] = VideoWorker(Path(app.config["DATABASE"]), config)
    # The thread starts with the first upload, or now when videos wait from before a restart.
    if config.enabled and worker.has_pending() and scoring_missing() is None:
        worker.ensure_started()
    app.register_blueprint(bp)
    app.register_blueprint(imports.bp)
    folder = config.resolved_folder(Path(app.config["DATABASE"]))
    limit = config.max_upload_mb * 1024 * 1024
    chunked_upload.add_kind(
        app,
        chunked_upload.UploadKind(VIDEO_KIND, "officer", limit, folder, _too_large_message(config), _unavailable),
    )
    too_large = f"the result is larger than {config.max_upload_mb} MiB ([videos] max_upload_mb); split the video"
    chunked_upload.add_kind(app, chunked_upload.UploadKind(imports.IMPORT_KIND, "officer", limit, folder, too_large))
