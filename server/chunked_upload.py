"""Large files (a recorded video, a model set) uploaded in pieces, each one a small request.

`mgs-server run` keeps waitress's body limit at `[http] max_request_kb` for every request: waitress
reads (and spools to disk) a whole body before any view or login check runs, so a larger limit would
let anyone who can reach the port fill the server's disk without logging in. A large file therefore
arrives as a series of pieces under that limit, each a logged-in request with the session's CSRF
token: the owner starts an upload of a declared size (refused at once above the feature's limit or
the free disk space), sends its pieces in order (the offset of each is checked, so a piece sent
twice after a lost answer is refused with the offset the server has, and the sender resumes from
there), and the feature's own form post then takes the complete file by its id.

Routes, under /api/v1/uploads/<kind> (kinds are added by the features, `add_kind`):
POST (JSON filename, size) starts one; GET /<id> tells its offset; PUT /<id>?offset=N appends a
piece (the raw body); DELETE /<id> drops it. Another user's upload is "not found" to everyone else.
Unfinished uploads are dropped after a day without a piece, and beyond a few per user.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.wrappers import Response

from mgs_core.errors import MgsError
from server import auth

bp = Blueprint("chunked_upload", __name__, url_prefix="/api/v1/uploads")

PARTIAL_DIR = ".partial-uploads"
STALE_AFTER_S = 24 * 3600  # an upload without a new piece for a day is abandoned
MAX_OPEN_PER_USER = 4  # unfinished uploads of one kind a user may hold; the oldest goes first
PIECE_MARGIN = 1024  # waitress refuses a body of exactly its limit, so pieces stay a little under it
_ID_RE = re.compile(r"[0-9a-f]{32}")
_LOCK = threading.Lock()  # offsets are checked and pieces appended one at a time


class UploadError(MgsError):
    """A piece or upload refused; `status` is the HTTP answer, `offset` what the server holds."""

    def __init__(self, message: str, status: int = 400, offset: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.offset = offset


@dataclass(frozen=True)
class UploadKind:
    """One feature that takes large files. Its pieces are kept under `folder`, on the disk where the
    feature keeps the finished file, so taking it is a rename."""

    name: str
    role: str
    max_bytes: int
    folder: Path
    too_large: str  # what the user reads (and can do) when the file is over max_bytes
    unavailable: Callable[[], str | None] = lambda: None  # why the feature takes no file now, said before any piece

    @property
    def partial_dir(self) -> Path:
        return self.folder / PARTIAL_DIR


@dataclass(frozen=True)
class Partial:
    id: str
    owner: str
    filename: str
    size: int
    folder: Path

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def offset(self) -> int:
        return self.data.stat().st_size

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "filename": self.filename, "size": self.size, "offset": self.offset}


def add_kind(app: Flask, kind: UploadKind) -> None:
    """Let `kind` be uploaded in pieces (the first kind also adds the routes)."""
    kinds = app.extensions.setdefault("mgs_upload_kinds", {})
    kinds[kind.name] = kind
    if bp.name not in app.blueprints:
        app.register_blueprint(bp)
        app.register_error_handler(UploadError, _refused)  # also where a feature takes an upload by id


def begin(kind: UploadKind, owner: str, filename: str, size: int) -> Partial:
    problem = kind.unavailable()
    if problem:
        raise UploadError(problem, 409)
    if size > kind.max_bytes:
        raise UploadError(kind.too_large, 413)
    if size <= 0:
        raise UploadError("the file is empty; choose the file again")
    kind.partial_dir.mkdir(parents=True, exist_ok=True)
    with _LOCK:
        mine = _sweep(kind, owner)
        for old in mine[: max(0, len(mine) - MAX_OPEN_PER_USER + 1)]:
            shutil.rmtree(old.folder, ignore_errors=True)
        free = shutil.disk_usage(kind.partial_dir).free
        if size > free:
            raise UploadError(
                f"the server's disk has {free // 2**20} MiB free, too little for this {size // 2**20} MiB file; "
                "ask the administrator to free space",
                507,
            )
        upload_id = secrets.token_hex(16)
        folder = kind.partial_dir / upload_id
        folder.mkdir()
        (folder / "data").touch()
        meta = {"owner": owner, "filename": filename, "size": size, "started": time.time()}
        (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return Partial(upload_id, owner, filename, size, folder)


def _sweep(kind: UploadKind, owner: str) -> list[Partial]:
    """Drop abandoned uploads (and folders a crash left while taking one); returns `owner`'s other
    unfinished uploads, oldest first."""
    now = time.time()
    mine: list[tuple[float, Partial]] = []
    for folder in kind.partial_dir.iterdir():
        try:
            touched = max(p.stat().st_mtime for p in folder.iterdir()) if folder.is_dir() else 0.0
        except (OSError, ValueError):
            touched = 0.0
        if now - touched > STALE_AFTER_S:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        partial = _read(folder) if _ID_RE.fullmatch(folder.name) else None  # not one being taken
        if partial is not None and partial.owner == owner:
            mine.append((touched, partial))
    return [p for _, p in sorted(mine, key=lambda x: x[0])]


def _read(folder: Path) -> Partial | None:
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return Partial(folder.name, meta["owner"], meta["filename"], meta["size"], folder)


def find(kind: UploadKind, upload_id: str, owner: str) -> Partial:
    """The owner's upload; any other user's, and a malformed id, are not found."""
    partial = _read(kind.partial_dir / upload_id) if _ID_RE.fullmatch(upload_id) else None
    if partial is None or partial.owner != owner:
        raise UploadError(
            f"no unfinished upload {upload_id!r} of yours; it was finished, cancelled or dropped "
            f"after {STALE_AFTER_S // 3600} h without a piece: start the upload again",
            404,
        )
    return partial


def append(kind: UploadKind, upload_id: str, owner: str, offset: int, piece: bytes) -> int:
    """Add one piece at `offset`; returns the new offset."""
    with _LOCK:
        partial = find(kind, upload_id, owner)
        held = partial.offset
        if offset != held:
            raise UploadError(f"this piece starts at byte {offset}, the server holds {held}: resume there", 409, held)
        if held + len(piece) > partial.size:
            raise UploadError(
                f"this piece ends at byte {held + len(piece)}, past the {partial.size} bytes declared for the file",
                400,
                held,
            )
        with partial.data.open("ab") as out:
            out.write(piece)
        return held + len(piece)


def cancel(kind: UploadKind, upload_id: str, owner: str) -> None:
    with _LOCK:
        shutil.rmtree(find(kind, upload_id, owner).folder, ignore_errors=True)


@contextmanager
def take(kind: UploadKind, upload_id: str, owner: str) -> Iterator[tuple[Path, str]]:
    """The complete file and the name it was uploaded under, for the feature to move or read; the
    upload is gone afterwards, whether the feature accepted the file or not."""
    with _LOCK:
        partial = find(kind, upload_id, owner)
        if partial.offset != partial.size:
            raise UploadError(
                f"the upload of {partial.filename} is incomplete ({partial.offset} of {partial.size} bytes); "
                "upload the file again",
                409,
                partial.offset,
            )
        taken = partial.folder.with_name(partial.folder.name + ".taken")
        partial.folder.rename(taken)  # no piece and no second commit reaches it from now on
    try:
        yield taken / "data", partial.filename
    finally:
        shutil.rmtree(taken, ignore_errors=True)


def piece_bytes() -> int:
    """The largest piece a client should send: what every request may carry ([http] max_request_kb)."""
    return int(current_app.config["MAX_CONTENT_LENGTH"]) - PIECE_MARGIN


# --- routes -----------------------------------------------------------------------------------


def registered(name: str) -> UploadKind:
    """The kind `name` that this app's feature added (for its view taking an upload by id)."""
    kind: UploadKind | None = current_app.extensions.get("mgs_upload_kinds", {}).get(name)
    if kind is None:
        raise UploadError(f"nothing on this server is uploaded as {name!r}", 404)
    return kind


def _kind(name: str) -> UploadKind:
    kind = registered(name)
    if not auth.has_role(kind.role):
        raise UploadError(f"uploading a {name} needs the {kind.role} role; ask an administrator if you need it", 403)
    return kind


def _owner() -> str:
    user = auth.current_user()
    return str(user["username"]) if user else ""


def _refused(exc: UploadError) -> Response:
    body: dict[str, Any] = {"error": str(exc)}
    if exc.offset is not None:
        body["offset"] = exc.offset
    response = jsonify(body)
    response.status_code = exc.status
    return response


@bp.post("/<kind_name>")
def start(kind_name: str) -> tuple[Response, int]:
    kind = _kind(kind_name)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("size"), int) or isinstance(body.get("size"), bool):
        raise UploadError('send JSON {"filename": ..., "size": bytes} to start an upload')
    filename = str(body.get("filename") or "upload")[:255]
    partial = begin(kind, _owner(), filename, body["size"])
    return jsonify(partial.as_json() | {"chunk_bytes": piece_bytes()}), 201


@bp.get("/<kind_name>/<upload_id>")
def progress(kind_name: str, upload_id: str) -> Response:
    return jsonify(find(_kind(kind_name), upload_id, _owner()).as_json())


@bp.put("/<kind_name>/<upload_id>")
def piece(kind_name: str, upload_id: str) -> Response:
    kind = _kind(kind_name)
    try:
        offset = int(request.args.get("offset", ""))
    except ValueError:
        raise UploadError("say where the piece starts: ?offset=BYTES") from None
    if request.content_length is None:
        raise UploadError("send each piece with a Content-Length", 411)
    # Read before the lock: a piece is at most [http] max_request_kb, and a slow sender holds up no one.
    piece = request.get_data(cache=False)
    return jsonify(offset=append(kind, upload_id, _owner(), offset, piece))


@bp.delete("/<kind_name>/<upload_id>")
def drop(kind_name: str, upload_id: str) -> Response:
    cancel(_kind(kind_name), upload_id, _owner())
    return jsonify(cancelled=upload_id)
