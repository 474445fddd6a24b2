"""The queue of uploaded videos and the worker thread that scores them inside the server.

An upload becomes a `video_jobs` row (queued); one worker thread (started by the first upload, or
at server start when videos are waiting) takes jobs in order and runs the
very code of `mgs-device score` on them (`device.score_batch.score_one`: same pipeline, models,
quality gates and outputs), writes progress into the row as it goes, and imports the windows like
`mgs-device score --server` does, so the session appears in the animals' histories. One job at a
time: scoring uses every core it gets, and two at once would only both be slow.

Scoring needs the device extra (OpenCV, onnxruntime) on the server machine; without it uploads are
refused with a message saying so. A job that was running when the server stopped is queued again
and scored after the restart.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from mgs_core.errors import MgsError
from mgs_core.tomlconfig import Range
from server.db import connect, transaction
from server.repository import NotFound, Repository

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0
IDLE_POLL_S = 5.0
STATES = ("queued", "running", "done", "failed")


@dataclass
class VideosConfig:
    """`[videos]`: recorded videos uploaded on the dashboard and scored by the server."""

    SECTION: ClassVar[str] = "videos"

    enabled: bool = field(default=True, metadata={"doc": "let officers upload recorded videos to be scored here (needs the device extra: OpenCV, onnxruntime)"})
    folder: Path = field(default=Path(""), metadata={"doc": "where uploads and their results are kept (relative to the database folder); empty = 'videos' next to the database"})
    max_upload_mb: Annotated[int, Range(1, 1024 * 1024, unit="MiB")] = field(default=4096, metadata={"doc": "largest video file accepted, in MiB"})
    models_dir: Path | None = field(default=None, metadata={"doc": "models folder for scoring; empty = $MGS_MODELS_DIR, else the installed models/"})
    threads: Annotated[int, Range(1, 64)] = field(default=2, metadata={"doc": "CPU threads each network may use while scoring an upload"})

    def resolved_folder(self, database: Path) -> Path:
        if str(self.folder) in ("", "."):
            return Path(database).parent / "videos"
        return self.folder if self.folder.is_absolute() else Path(database).parent / self.folder


def scoring_missing() -> str | None:
    """Why this server cannot score videos, or None when it can."""
    try:
        import cv2  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        return (f"this server cannot score videos: {exc.name} is not installed. Install the device extra on the "
                "server machine (pip install 'mgs-rack[device]') or score on a PC with `mgs-device score --server`")
    return None


# --- the queue (rows of video_jobs) ----------------------------------------------------------------

def submit(repo: Repository, filename: str, stored_path: Path, size: int, animals: dict[int, dict[str, str]],
           start: float | None, username: str) -> int:
    with transaction(repo.db) as conn:
        cur = conn.execute(
            "INSERT INTO video_jobs (filename, stored_path, size_bytes, state, animals_json, start_time, submitted_by, "
            "submitted_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
            [filename, str(stored_path), size, json.dumps({str(k): v for k, v in animals.items()}), start, username,
             time.time()])
        return int(cur.lastrowid)


def jobs(repo: Repository, limit: int = 100) -> list[dict[str, Any]]:
    return repo._q("SELECT * FROM video_jobs ORDER BY id DESC LIMIT ?", [limit])


def job(repo: Repository, job_id: int) -> dict[str, Any]:
    rows = repo._q("SELECT * FROM video_jobs WHERE id = ?", [job_id])
    if not rows:
        raise NotFound(f"video job {job_id}")
    row = rows[0]
    row["position"] = repo.db.execute("SELECT COUNT(*) FROM video_jobs WHERE state = 'queued' AND id < ?",
                                      [job_id]).fetchone()[0] if row["state"] == "queued" else 0
    return row


def _update(db_path: Path, job_id: int, **values: Any) -> None:
    db = connect(db_path, migrate_schema=False)
    try:
        with transaction(db) as conn:
            sets = ", ".join(f"{k} = :{k}" for k in values)
            conn.execute(f"UPDATE video_jobs SET {sets} WHERE id = :id", {**values, "id": job_id})
    finally:
        db.conn.close()


# --- the worker ------------------------------------------------------------------------------------

class VideoWorker:
    """One daemon thread scoring queued jobs in order; `wake()` after a new upload."""

    def __init__(self, db_path: Path, config: VideosConfig) -> None:
        self.db_path = Path(db_path)
        self.config = config
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._requeue_interrupted()
                self._thread = threading.Thread(target=self._run, name="video-jobs", daemon=True)
                self._thread.start()

    def has_pending(self) -> bool:
        """Videos queued, or interrupted by a stop, that wait for the worker."""
        db = connect(self.db_path, migrate_schema=False)
        try:
            return db.execute("SELECT 1 FROM video_jobs WHERE state IN ('queued', 'running') LIMIT 1").fetchone() is not None
        finally:
            db.conn.close()

    def wake(self) -> None:
        self.ensure_started()
        self._wake.set()

    def _requeue_interrupted(self) -> None:
        db = connect(self.db_path, migrate_schema=False)
        try:
            with transaction(db) as conn:
                conn.execute("UPDATE video_jobs SET state = 'queued', frames_done = 0, message = "
                             "'queued again: the server stopped while it was being scored' WHERE state = 'running'")
        finally:
            db.conn.close()

    def _claim(self) -> dict[str, Any] | None:
        db = connect(self.db_path, migrate_schema=False)
        try:
            with transaction(db) as conn:
                row = conn.execute("SELECT id FROM video_jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
                if row is None:
                    return None
                conn.execute("UPDATE video_jobs SET state = 'running', started_at = ? WHERE id = ?", [time.time(), row[0]])
            return job(Repository(db), row[0])
        finally:
            db.conn.close()

    def _run(self) -> None:
        while True:
            try:
                claimed = self._claim()
                if claimed is not None:
                    self._score(claimed)
                    continue
            except Exception:  # a locked or broken database must not end the thread: the queue would stall unseen
                log.exception("video queue: database error; trying again in %g s", IDLE_POLL_S)
            self._wake.wait(IDLE_POLL_S)
            self._wake.clear()

    def _score(self, row: dict[str, Any]) -> None:
        job_id = row["id"]
        log.info("video job %d: scoring %s", job_id, row["filename"])
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or done == total:
                last = now
                _update(self.db_path, job_id, frames_done=done, frames_total=max(total, done))

        try:
            data = self._score_video(row, progress)
            db = connect(self.db_path, migrate_schema=False)
            try:
                from server.video_imports import store_import

                outcome = store_import(Repository(db), data, row["submitted_by"], source="upload")
            finally:
                db.conn.close()
            message = "; ".join(data.get("warnings", []) + outcome.warnings)
            _update(self.db_path, job_id, state="done", finished_at=time.time(), import_id=outcome.import_id,
                    frames_done=data["frames"], frames_total=data["frames"], message=message)
            log.info("video job %d done: %d windows stored", job_id, outcome.stored)
        except MgsError as exc:
            log.warning("video job %d failed: %s", job_id, exc)
            _update(self.db_path, job_id, state="failed", finished_at=time.time(), message=str(exc))
        except Exception as exc:  # a bug must not kill the queue: the job says what happened, the next one runs
            log.exception("video job %d failed", job_id)
            _update(self.db_path, job_id, state="failed", finished_at=time.time(),
                    message=f"internal error ({type(exc).__name__}: {exc}); see the server log")

    def _score_video(self, row: dict[str, Any], progress: Any) -> dict[str, Any]:
        import dataclasses

        from device.score_batch import ScoreOptions, score_one
        from device.sidecar import BoxAnimal, Sidecar

        video = Path(row["stored_path"])
        animals = json.loads(row["animals_json"] or "{}")
        sidecar = Sidecar({(video.name, int(b)): BoxAnimal(a["animal"], a.get("group", ""), a.get("timepoint", ""))
                           for b, a in animals.items() if a.get("animal")},
                          {video.name: row["start_time"]} if row["start_time"] is not None else {})
        options = ScoreOptions(out=video.parent, sidecar=sidecar, models_dir=self.config.models_dir)
        options.backend = dataclasses.replace(options.backend, threads=self.config.threads)
        folder = video.parent / "result"
        if folder.exists():
            shutil.rmtree(folder)
        data = score_one(video, folder, options, progress)
        _update(self.db_path, row["id"], result_dir=str(folder))
        return data
