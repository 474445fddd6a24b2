"""`/api/v1/imports`: recorded videos scored offline, stored next to the live windows.

`mgs-device score --server URL --token T` posts each video's result.json here; an officer's token
is needed to write, any login to read. See `server.video_imports` for how a recording is stored
and why importing twice stores nothing twice; docs/api.md for the request.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from server import chunked_upload
from server.auth import current_user, require_role
from server.request_db import get_repo
from server.video_imports import list_imports, store_import

bp = Blueprint("imports", __name__, url_prefix="/api/v1/imports")
IMPORT_KIND = "import"  # /api/v1/uploads/import: a result.json over [http] max_request_kb, in pieces


@bp.post("")
@require_role("officer")
def create() -> tuple[Response, int]:
    body = request.get_json(silent=True)
    if isinstance(body, dict) and list(body) == ["upload_id"]:
        body = _uploaded(str(body["upload_id"]))
    if not isinstance(body, dict):
        abort(400, description="send the result.json of `mgs-device score` with Content-Type: application/json")
    user = current_user() or {}
    outcome = store_import(get_repo(), body, user.get("username", ""))
    return jsonify(outcome.as_json()), 201 if outcome.stored else 200


def _uploaded(upload_id: str) -> Any:
    """A result.json too large for one request, sent in pieces to /api/v1/uploads/import first."""
    kind = chunked_upload.registered(IMPORT_KIND)
    with chunked_upload.take(kind, upload_id, (current_user() or {}).get("username", "")) as (data, _name):
        try:
            return json.loads(data.read_bytes())
        except ValueError:
            return None


@bp.get("")
def index() -> Response:
    return jsonify(imports=list_imports(get_repo()))
