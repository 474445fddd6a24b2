"""Checking and storing the review samples devices upload (`POST /api/v1/device/samples`).

An upload is refused whole or stored whole, in one transaction: the `samples` row and both images.
Everything in it is checked before anything is written, because reviewers and the dataset export
trust these rows: field types and ranges, the key, the times, and the images themselves (the bytes
must really be the JPEG or PNG they claim to be; width and height come from the image header, not
from the device's word). A repeated `sample_key` of the same device is answered with the row that
already exists, so a device that lost an answer can simply send again.

`SampleRefused.status` says which answer a refusal gets: 400 (malformed), 403 (another device's
name), 413 (too large), 415 (not a JPEG or PNG), 422 (well-formed but inconsistent images).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
import time
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import sqlite_utils

from mgs_core.errors import MessageError, MgsError
from mgs_core.messages import MAX_BOXES, SAMPLE_REASONS, SCORE_MAX, SCORE_MIN, parse_utc_iso, validate_name
from mgs_core.tomlconfig import Range
from server.db import transaction
from server.repository import Repository

SAMPLE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,79}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
IMAGE_KINDS = ("roi", "face")
MIME_TYPES = ("image/jpeg", "image/png")
MAX_META_BYTES = 16 * 1024
MAX_EYES = 16
FIELDS = {"sample_key", "box", "taken_at", "reason", "model_version", "model_sha256", "model_score", "meta", "images"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# JPEG start-of-frame markers (they carry the size); C4, C8 and CC share the range but are not frames.
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass(frozen=True)
class SamplesConfig:
    SECTION: ClassVar[str] = "samples"

    max_upload_kb: Annotated[int, Range(16, 1024 * 1024, unit="KiB")] = field(
        default=1024,
        metadata={
            "doc": "largest review-sample upload in KiB (both images, base64, and the JSON around them); "
            "[http] max_request_kb applies too, so raise both for large images"
        },
    )
    max_image_side: Annotated[int, Range(16, 16384, unit="pixels")] = field(
        default=8192, metadata={"doc": "largest width or height of an uploaded sample image"}
    )


class SampleRefused(MgsError):
    """An upload the server will not store; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SampleImage:
    kind: str
    mime: str
    width: int
    height: int
    data: bytes


@dataclass(frozen=True)
class SampleUpload:
    sample_key: str
    box: int
    taken_at: float
    reason: str
    model_version: str
    model_sha256: str
    model_score: float | None
    meta: dict[str, Any]
    images: tuple[SampleImage, ...]


# --- image headers ------------------------------------------------------------------------------


def image_size(data: bytes, mime: str) -> tuple[int, int]:
    """(width, height) from the header of a complete JPEG or PNG of type `mime`.

    Raises SampleRefused 415 when the bytes are not that type at all, 422 when they start like it but
    are cut short or damaged."""
    if mime == "image/png":
        if not data.startswith(_PNG_SIGNATURE):
            raise SampleRefused("the bytes are not a PNG image", 415)
        if data[12:16] != b"IHDR" or len(data) < 24 or not data.endswith(_PNG_END):
            raise SampleRefused("the PNG image is damaged or cut short", 422)
        width, height = struct.unpack(">II", data[16:24])
        return width, height
    if not data.startswith(b"\xff\xd8\xff"):
        raise SampleRefused("the bytes are not a JPEG image", 415)
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise SampleRefused("the JPEG image is cut short (no end marker)", 422)
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if length < 2:
            break
        pos += 2 + length
    raise SampleRefused("the JPEG image is damaged: no frame header with its size", 422)


# --- validation ---------------------------------------------------------------------------------


def _number(value: Any, name: str, lo: float, hi: float, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SampleRefused(f"field {name!r} = {value!r} must be a finite number")
    if not lo <= value <= hi:
        raise SampleRefused(f"field {name!r} = {value!r} must be from {lo:g} to {hi:g}")
    return float(value)


def _integer(value: Any, name: str, lo: int, hi: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SampleRefused(f"field {name!r} = {value!r} must be a whole number from {lo} to {hi}")
    return value


def _rect(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or len(value) != 4:
        raise SampleRefused(f"field {name!r} must be [x, y, w, h]")
    x, y, w, h = (_integer(v, f"{name}[{i}]", 0 if i < 2 else 1, 1 << 20) for i, v in enumerate(value))
    return [x, y, w, h]  # type: ignore[list-item]


def _check_meta(meta: Any) -> dict[str, Any]:
    """The keys of the agreed `meta_json` convention (docs/sampling.md) are checked, others kept as sent."""
    if not isinstance(meta, dict):
        raise SampleRefused("field 'meta' must be a JSON object")
    if len(json.dumps(meta, separators=(",", ":"))) > MAX_META_BYTES:
        raise SampleRefused(f"field 'meta' is larger than {MAX_META_BYTES} bytes")
    _rect(meta.get("face_box"), "meta.face_box")
    if "roi_box" in meta:
        _rect(meta["roi_box"], "meta.roi_box")
    eyes = meta.get("eyes")
    if not isinstance(eyes, list) or len(eyes) > MAX_EYES:
        raise SampleRefused(f"field 'meta.eyes' must be a list of at most {MAX_EYES} eyes")
    for i, eye in enumerate(eyes):
        name = f"meta.eyes[{i}]"
        if not isinstance(eye, dict):
            raise SampleRefused(f"field {name!r} must be an object")
        _number(eye.get("x"), f"{name}.x", -1e6, 1e6)
        _number(eye.get("y"), f"{name}.y", -1e6, 1e6)
        _number(eye.get("score"), f"{name}.score", SCORE_MIN, SCORE_MAX, optional=True)
        _number(eye.get("confidence"), f"{name}.confidence", 0, 1)
        if not isinstance(eye.get("abstained"), bool):
            raise SampleRefused(f"field '{name}.abstained' must be true or false")
    _number(meta.get("window_score"), "meta.window_score", SCORE_MIN, SCORE_MAX, optional=True)
    _integer(meta.get("window_seq"), "meta.window_seq", 0, 2**63 - 1, optional=True)
    if "threshold" in meta:
        _number(meta["threshold"], "meta.threshold", SCORE_MIN, SCORE_MAX)
    return meta


def _check_image(kind: str, value: Any, max_side: int) -> SampleImage:
    if not isinstance(value, dict) or set(value) != {"mime", "data"}:
        raise SampleRefused(f"images.{kind} must be an object with exactly 'mime' and 'data'")
    mime, text = value["mime"], value["data"]
    if mime not in MIME_TYPES:
        raise SampleRefused(f"images.{kind}: mime {mime!r} is not accepted; send {' or '.join(MIME_TYPES)}", 415)
    if not isinstance(text, str):
        raise SampleRefused(f"images.{kind}.data must be a base64 string")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SampleRefused(f"images.{kind}.data is not valid base64") from None
    try:
        width, height = image_size(data, mime)
    except SampleRefused as exc:
        raise SampleRefused(f"images.{kind}: {exc}", exc.status) from None
    if not (1 <= width <= max_side and 1 <= height <= max_side):
        raise SampleRefused(f"images.{kind} is {width}x{height}; each side must be from 1 to {max_side} pixels", 422)
    return SampleImage(kind, mime, width, height, data)


def parse_upload(body: Any, device: str, max_image_side: int) -> SampleUpload:
    """Check a decoded upload body completely; `device` is who sent it (its token), never the body's word."""
    if not isinstance(body, dict):
        raise SampleRefused("the body must be a JSON object (Content-Type: application/json)")
    claimed = body.pop("device", device)
    if claimed != device:
        raise SampleRefused(f"this device token belongs to {device!r}; it cannot upload samples as {claimed!r}", 403)
    missing = sorted(FIELDS - {"model_score"} - set(body))
    unknown = sorted(set(body) - FIELDS)
    if missing or unknown:
        raise SampleRefused(
            f"missing field(s) {missing}, unknown field(s) {unknown}" if missing else f"unknown field(s) {unknown}"
        )
    key = body["sample_key"]
    if not isinstance(key, str) or not SAMPLE_KEY.match(key):
        raise SampleRefused(f"field 'sample_key' = {key!r} must be 1-80 letters, digits, '_', '.', ':' or '-'")
    box = _integer(body["box"], "box", 0, MAX_BOXES - 1)
    try:
        taken_at = parse_utc_iso(body["taken_at"])
    except MessageError as exc:
        raise SampleRefused(f"field 'taken_at': {exc}") from None
    reason = body["reason"]
    if reason not in SAMPLE_REASONS:
        raise SampleRefused(f"field 'reason' = {reason!r} must be one of {list(SAMPLE_REASONS)}")
    version = body["model_version"]
    if not isinstance(version, str):
        raise SampleRefused("field 'model_version' must be a string ('' = the models shipped with the device)")
    if version:
        try:
            validate_name(version, "model version")
        except MessageError as exc:
            raise SampleRefused(f"field 'model_version': {exc}") from None
    sha = body["model_sha256"]
    if not isinstance(sha, str) or not SHA256.match(sha):
        raise SampleRefused(f"field 'model_sha256' = {sha!r} must be a lowercase hex sha256")
    score = _number(body.get("model_score"), "model_score", SCORE_MIN, SCORE_MAX, optional=True)
    meta = _check_meta(body["meta"])
    images = body["images"]
    if not isinstance(images, dict) or set(images) != set(IMAGE_KINDS):
        raise SampleRefused(f"field 'images' must hold exactly {list(IMAGE_KINDS)}")
    roi, face = (_check_image(kind, images[kind], max_image_side) for kind in IMAGE_KINDS)
    fx, fy, fw, fh = meta["face_box"]
    if (face.width, face.height) != (fw, fh):
        raise SampleRefused(f"the face image is {face.width}x{face.height} but meta.face_box says {fw}x{fh}", 422)
    if fx + fw > roi.width or fy + fh > roi.height:
        raise SampleRefused(f"meta.face_box {meta['face_box']} leaves the {roi.width}x{roi.height} ROI image", 422)
    return SampleUpload(key, box, taken_at, reason, version, sha, score, meta, (roi, face))  # type: ignore[arg-type]


# --- storing ------------------------------------------------------------------------------------


def store_sample(
    db: sqlite_utils.Database, device: str, sample: SampleUpload, now: float | None = None
) -> tuple[bool, int]:
    """(stored, id): False with the existing id when this device already sent this sample_key.

    The animal is the one assigned to the box when the sample was taken (none outside assignments)."""
    animal_id = Repository(db).animal_at(device, sample.box, sample.taken_at)
    with transaction(db) as conn:
        row = conn.execute(
            "SELECT id FROM samples WHERE device = ? AND sample_key = ?", (device, sample.sample_key)
        ).fetchone()
        if row is not None:
            return False, int(row[0])
        cursor = conn.execute(
            "INSERT INTO samples (device, sample_key, box, animal_id, taken_at, reason, model_version, "
            "model_sha256, model_score, meta_json, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                device,
                sample.sample_key,
                sample.box,
                animal_id,
                sample.taken_at,
                sample.reason,
                sample.model_version,
                sample.model_sha256,
                sample.model_score,
                json.dumps(sample.meta, separators=(",", ":")),
                time.time() if now is None else now,
            ),
        )
        sample_id = int(cursor.lastrowid or 0)
        conn.executemany(
            "INSERT INTO sample_images (sample_id, kind, mime, width, height, data) VALUES (?, ?, ?, ?, ?, ?)",
            [(sample_id, i.kind, i.mime, i.width, i.height, i.data) for i in sample.images],
        )
    return True, sample_id
