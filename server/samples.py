"""`POST /api/v1/device/samples`: edge boxes upload the review samples they kept (docs/api.md).

Only a device token opens it (`require_device`), and the sample is always filed under that token's
device. The body is JSON with both images base64-encoded; it is refused with a JSON `error` before
anything is stored when it is too large (413), malformed (400), names another device (403), holds
something other than a JPEG or PNG (415) or images that contradict the rest (422). The checks and
the one-transaction store are `server.sample_store`.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, jsonify, request

from server.auth import current_device, require_device
from server.request_db import get_db
from server.sample_store import SampleRefused, SamplesConfig, parse_upload, store_sample

log = logging.getLogger(__name__)

bp = Blueprint("samples", __name__, url_prefix="/api/v1/device")


def _refuse(status: int, message: str) -> Any:
    log.warning("refused a sample from %s: %s", current_device(), message)
    response = jsonify(error=message)
    response.status_code = status
    return response


@bp.post("/samples")
@require_device
def upload() -> Any:
    device = current_device()
    assert device is not None
    mgs = current_app.config["MGS_CONFIG"]
    config: SamplesConfig = mgs.samples
    limit = min(config.max_upload_kb, mgs.http.max_request_kb) * 1024
    if request.content_length is not None and request.content_length > limit:
        return _refuse(
            413,
            f"this sample is {request.content_length // 1024} KiB; the server accepts at most {limit // 1024} KiB "
            "([samples] max_upload_kb and [http] max_request_kb): lower [sampling] jpeg_quality on the device",
        )
    request.max_content_length = limit
    if not request.is_json:
        return _refuse(415, "send the sample as JSON (Content-Type: application/json)")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # nesting deeper than Python's JSON decoder goes: malformed for us
        body = None
    try:
        sample = parse_upload(body, device, config.max_image_side)
    except SampleRefused as exc:
        return _refuse(exc.status, str(exc))
    stored, sample_id = store_sample(get_db(), device, sample)
    if stored:
        log.info(
            "stored sample %s of %s box %d (%s) as %d", sample.sample_key, device, sample.box, sample.reason, sample_id
        )
    return jsonify(stored=stored, id=sample_id), 201 if stored else 200
