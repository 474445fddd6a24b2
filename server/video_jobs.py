"""The queue of uploaded videos and the worker thread that has them scored by `mgs-device score`.

An upload becomes a `video_jobs` row (queued); one worker thread (started by the first upload, or
at server start when videos are waiting) takes jobs in order and runs `mgs-device score` on each in
a child process (same pipeline, models, quality gates and outputs as on a PC), copies the child's
`--progress-json` into the row as it goes, reads back its result.json and imports the windows like
`mgs-device score --server` does, so the session appears in the animals' histories. One job at a
time: scoring uses every core it gets, and two at once would only both be slow.

The server never imports the device's code (the roles meet only in mgs_core): the child process is
the boundary, so a crash or a leak while scoring cannot take the server down. Scoring needs the
device extra (OpenCV, onnxruntime) installed next to the server; without it uploads are refused
with a message saying so. A job that was running when the server stopped is queued again and
scored after the restart; the server kills its scoring child when it exits.
"""

from __future__ import annotations

import atexit
import csv
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar

from mgs_core.errors import MgsError
from mgs_core.messages import utc_iso
from mgs_core.tomlconfig import Range
from server.db import connect, transaction
from server.repository import NotFound, Repository

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 1.0
IDLE_POLL_S = 5.0
# The upload waits for the check that the file is a video; past this the upload is accepted and the
# job says what the scorer found.
PROBE_TIMEOUT_S = 30.0
STATES = ("queued", "running", "done", "failed")
SCORING_MODULES = {"device.videoscore": "the device part of mgs-rack", "cv2": "OpenCV", "onnxruntime": "onnxruntime"}
ERROR_PREFIX = "mgs-device score: error: "


@dataclass
class VideosConfig:
    """`[videos]`: recorded videos uploaded on the dashboard and scored by the server."""

    SECTION: ClassVar[str] = "videos"

    enabled: bool = field(
        default=True,
        metadata={
            "doc": "let officers upload recorded videos to be scored here (needs the device extra: OpenCV, onnxruntime)"
        },
    )
    folder: Path = field(
        default=Path(""),
        metadata={
            "doc": "where uploads and their results are kept (relative to the database folder); empty = 'videos' next to the database"
        },
    )
    max_upload_mb: Annotated[int, Range(1, 1024 * 1024, unit="MiB")] = field(
        default=4096, metadata={"doc": "largest video file accepted, in MiB"}
    )
    models_dir: Path | None = field(
        default=None, metadata={"doc": "models folder for scoring; empty = $MGS_MODELS_DIR, else the installed models/"}
    )
    threads: Annotated[int, Range(1, 64)] = field(
        default=2, metadata={"doc": "CPU threads each network may use while scoring an upload"}
    )

    def resolved_folder(self, database: Path) -> Path:
        if str(self.folder) in ("", "."):
            return Path(database).parent / "videos"
        return self.folder if self.folder.is_absolute() else Path(database).parent / self.folder


def scoring_missing() -> str | None:
    """Why this server cannot score videos, or None when it can; looks for the modules without loading them."""
    for module, what in SCORING_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # the parent package of a dotted name is missing
            found = False
        if not found:
            return (
                f"this server cannot score videos: {what} ({module}) is not installed. Install the device extra "
                "on the server machine (pip install 'mgs-rack[device]') or score on a PC with "
                "`mgs-device score --server`"
            )
    return None


def scorer_command(*args: str) -> list[str]:
    """`mgs-device score ARGS` with this server's Python, so the child finds the same installation."""
    return [sys.executable, "-m", "device.cli", "score", *args]


def video_problem(path: Path) -> str | None:
    """Why `path` is no video the scorer can read (`mgs-device score --probe`), or None.

    None too when the check itself cannot answer in time or fails: the upload is then accepted and
    the job reports what the scorer finds, rather than refusing a video that may be fine.
    """
    try:
        done = subprocess.run(
            scorer_command("--probe", str(path)),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        log.warning("checking the upload %s took over %g s; accepted unchecked", path, PROBE_TIMEOUT_S)
        return None
    for line in done.stdout.splitlines():
        try:
            answer = json.loads(line)
        except ValueError:
            continue
        if isinstance(answer, dict) and "error" in answer:
            return str(answer["error"])
        if isinstance(answer, dict) and "frames" in answer:
            return None
    log.warning(
        "checking the upload %s failed (exit code %s); accepted unchecked: %s",
        path,
        done.returncode,
        done.stderr.strip()[-2000:],
    )
    return None


# --- the queue (rows of video_jobs) ----------------------------------------------------------------


def submit(
    repo: Repository,
    filename: str,
    stored_path: Path,
    size: int,
    animals: dict[int, dict[str, str]],
    start: float | None,
    username: str,
) -> int:
    with transaction(repo.db) as conn:
        cur = conn.execute(
            "INSERT INTO video_jobs (filename, stored_path, size_bytes, state, animals_json, start_time, submitted_by, "
            "submitted_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
            [
                filename,
                str(stored_path),
                size,
                json.dumps({str(k): v for k, v in animals.items()}),
                start,
                username,
                time.time(),
            ],
        )
        return int(cur.lastrowid)


def jobs(repo: Repository, limit: int = 100) -> list[dict[str, Any]]:
    return repo._q("SELECT * FROM video_jobs ORDER BY id DESC LIMIT ?", [limit])


def job(repo: Repository, job_id: int) -> dict[str, Any]:
    rows = repo._q("SELECT * FROM video_jobs WHERE id = ?", [job_id])
    if not rows:
        raise NotFound(f"video job {job_id}")
    row = rows[0]
    row["position"] = (
        repo.db.execute("SELECT COUNT(*) FROM video_jobs WHERE state = 'queued' AND id < ?", [job_id]).fetchone()[0]
        if row["state"] == "queued"
        else 0
    )
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
        self._child: subprocess.Popen[bytes] | None = None
        self._stopping = False

    def ensure_started(self) -> None:
        with self._lock:
            if self._thread is None:
                self._requeue_interrupted()
                atexit.register(self.stop)
                self._thread = threading.Thread(target=self._run, name="video-jobs", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """At server exit: no new job, and the running one is left 'running', to be queued again at the next start."""
        with self._lock:
            self._stopping = True
        self.kill_child()

    def kill_child(self) -> None:
        """Stop the scoring child and its pool workers (its own process group) if it still runs: a child left
        running would go on scoring for nobody."""
        child = self._child
        if child is not None and child.poll() is None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            child.wait()

    def has_pending(self) -> bool:
        """Videos queued, or interrupted by a stop, that wait for the worker."""
        db = connect(self.db_path, migrate_schema=False)
        try:
            return (
                db.execute("SELECT 1 FROM video_jobs WHERE state IN ('queued', 'running') LIMIT 1").fetchone()
                is not None
            )
        finally:
            db.conn.close()

    def wake(self) -> None:
        self.ensure_started()
        self._wake.set()

    def _requeue_interrupted(self) -> None:
        db = connect(self.db_path, migrate_schema=False)
        try:
            with transaction(db) as conn:
                conn.execute(
                    "UPDATE video_jobs SET state = 'queued', frames_done = 0, message = "
                    "'queued again: the server stopped while it was being scored' WHERE state = 'running'"
                )
        finally:
            db.conn.close()

    def _claim(self) -> dict[str, Any] | None:
        db = connect(self.db_path, migrate_schema=False)
        try:
            with transaction(db) as conn:
                row = conn.execute("SELECT id FROM video_jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
                if row is None:
                    return None
                conn.execute(
                    "UPDATE video_jobs SET state = 'running', started_at = ? WHERE id = ?", [time.time(), row[0]]
                )
            return job(Repository(db), row[0])
        finally:
            db.conn.close()

    def _run(self) -> None:
        while not self._stopping:
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
        try:
            data = self._score_video(row)
            if self._stopping:
                return
            db = connect(self.db_path, migrate_schema=False)
            try:
                from server.video_imports import store_import

                outcome = store_import(Repository(db), data, row["submitted_by"], source="upload")
            finally:
                db.conn.close()
            message = "; ".join(data.get("warnings", []) + outcome.warnings)
            _update(
                self.db_path,
                job_id,
                state="done",
                finished_at=time.time(),
                import_id=outcome.import_id,
                frames_done=data["frames"],
                frames_total=data["frames"],
                message=message,
            )
            log.info("video job %d done: %d windows stored", job_id, outcome.stored)
        except MgsError as exc:
            if self._stopping:
                log.info("video job %d: stopped with the server; it is scored again after the restart", job_id)
                return
            log.warning("video job %d failed: %s", job_id, exc)
            _update(self.db_path, job_id, state="failed", finished_at=time.time(), message=str(exc))
        except Exception as exc:  # a bug must not kill the queue: the job says what happened, the next one runs
            log.exception("video job %d failed", job_id)
            _update(
                self.db_path,
                job_id,
                state="failed",
                finished_at=time.time(),
                message=f"internal error ({type(exc).__name__}: {exc}); see the server log",
            )

    def _score_video(self, row: dict[str, Any]) -> dict[str, Any]:
        """Run `mgs-device score` on the job's video and return its result.json content."""
        video = Path(row["stored_path"])
        if not video.is_file():
            raise MgsError(f"{row['filename']}: no such file in the server's video folder ({video}); upload it again")
        out = video.parent / "result"
        if out.exists():
            shutil.rmtree(out)
        out.mkdir()
        progress = video.parent / "progress.json"
        log_path = video.parent / "scoring.log"
        args = [
            str(video),
            "--out",
            str(out),
            "--jobs",
            "1",
            "--threads",
            str(self.config.threads),
            "--progress-json",
            str(progress),
        ]
        if self.config.models_dir is not None:
            args += ["--models", str(self.config.models_dir)]
        animals = _write_animals(video, json.loads(row["animals_json"] or "{}"))
        if animals is not None:
            args += ["--animals", str(animals)]
        if row["start_time"] is not None:
            args += ["--start", utc_iso(row["start_time"])]
        code = self._run_child(row["id"], scorer_command(*args), progress, log_path)
        try:
            summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise MgsError(_child_failure(code, log_path)) from None
        if summary.get("failed"):
            raise MgsError(f"{row['filename']}: {summary['failed'][0]['error']}")
        folder = Path(summary["videos"][0]["folder"])
        data: dict[str, Any] = json.loads((folder / "result.json").read_text(encoding="utf-8"))
        _update(self.db_path, row["id"], result_dir=str(folder))
        return data

    def _run_child(self, job_id: int, command: list[str], progress: Path, log_path: Path) -> int:
        """Run the scorer to its end, copying its progress file into the job's row; its exit code."""
        log.debug("video job %d: %s", job_id, " ".join(command))
        progress.unlink(missing_ok=True)
        with self._lock, log_path.open("wb") as output:
            if self._stopping:  # `stop` ran already: a child started now would outlive the server
                raise MgsError("the server is stopping")
            self._child = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        copied: tuple[int, int] | None = None
        try:
            while True:
                try:
                    return self._child.wait(timeout=PROGRESS_EVERY_S)
                except subprocess.TimeoutExpired:
                    pass
                frames = _read_progress(progress)
                if frames is not None and frames != copied:
                    copied = frames
                    _update(self.db_path, job_id, frames_done=frames[0], frames_total=max(frames))
        finally:
            self.kill_child()
            self._child = None


def _write_animals(video: Path, animals: dict[str, dict[str, str]]) -> Path | None:
    """The upload form's animals as the `--animals` CSV of `mgs-device score`, next to the video."""
    rows = [
        {
            "video": video.name,
            "box": box,
            "animal": a["animal"],
            "group": a.get("group", ""),
            "timepoint": a.get("timepoint", ""),
        }
        for box, a in sorted(animals.items())
        if a.get("animal")
    ]
    if not rows:
        return None
    path = video.parent / "animals.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, ["video", "box", "animal", "group", "timepoint"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _read_progress(path: Path) -> tuple[int, int] | None:
    """(frames done, frames total) from the scorer's progress file; None before it is first written."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
        return int(state["frames_done"]), int(state["frames_total"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _child_failure(code: int, log_path: Path) -> str:
    """What the job page says when the scorer ended without results: its own error line when it gave one."""
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        lines = []
    for line in reversed(lines):
        if line.startswith(ERROR_PREFIX):
            return line.removeprefix(ERROR_PREFIX)
    how = f"was killed by signal {-code}" if code < 0 else f"stopped with exit code {code}"
    last = next((line for line in reversed(lines) if line.strip()), "no output")
    return f"the scorer {how} without results ({last}); its log is {log_path}"
