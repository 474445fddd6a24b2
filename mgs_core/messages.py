"""The MQTT wire contract: every topic and payload, validated on both ends.

This module is the single definition of what a device publishes and what the server and alerting
systems may rely on (docs/architecture.md tabulates it). Standard library only, because the server
imports it from here and an alerting script should be able to vendor it as a single file.

Payloads are strict: unknown keys, wrong types, out-of-range values and a foreign schema version are
rejected with a `MessageError` that says which field is wrong, so a bad publisher is noticed instead
of silently storing garbage.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, Self

from mgs_core.errors import MessageError

SCHEMA_VERSION = 1
DEFAULT_PREFIX = "mgs"
SCORE_MIN = 0.0
SCORE_MAX = 9.0
# A score window is a few hundred bytes; anything far larger is a broken or hostile publisher.
MAX_PAYLOAD_BYTES = 16 * 1024
MAX_BOXES = 16
# Every integer on the wire (seq, frame counts, ...) must fit SQLite's signed 64-bit INTEGER, so a
# message that validates can always be stored.
MAX_INT = 2**63 - 1
# Why a device kept a review sample: device.sampling decides, POST /api/v1/device/samples checks.
SAMPLE_REASONS = ("alert", "low_confidence", "borderline", "random")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")
_EPOCH_RE = re.compile(r"^[0-9a-f]{8,32}$")
# Every time on the wire must fall in [EARLIEST_TIME, LATEST_TIME): the database and the dashboard
# can represent all of it, so a message that validates can always be stored. A time far in the
# future is still valid here; the server flags it against its own clock. 1970 stays valid: an edge
# box without a real-time clock starts there until NTP answers, and its windows must not be lost.
EARLIEST_TIME = 0.0
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC).timestamp()

TopicKind = Literal["availability", "status", "score", "state", "alert", "stored", "model", "model_event"]
AVAILABILITY_ONLINE = "online"
AVAILABILITY_OFFLINE = "offline"


def validate_name(value: str, what: str = "device name") -> str:
    """Device names become topic levels and database keys: keep them to a safe alphabet."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise MessageError(
            f"invalid {what} {value!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit (no spaces, '/', '+' or '#')"
        )
    return value


def validate_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#") or prefix.startswith("/") or prefix.endswith("/"):
        raise MessageError(f"invalid topic prefix {prefix!r}: no '+', '#', or leading/trailing '/'")
    return prefix


def availability_topic(device: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/{validate_name(device)}/availability"


def status_topic(device: str, prefix: str = DEFAULT_PREFIX) -> str:
    return f"{prefix}/{validate_name(device)}/status"


def stored_topic(device: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Server -> device, retained: how far this device's messages are stored (see `StoredAck`)."""
    return f"{prefix}/{validate_name(device)}/stored"


def model_topic(device: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Server -> device, retained: the model version the device should run (see `ModelAssignment`)."""
    return f"{prefix}/{validate_name(device)}/model"


def model_event_topic(device: str, prefix: str = DEFAULT_PREFIX) -> str:
    """Device -> server, retained: the device's last model roll-out step (see `ModelEvent`)."""
    return f"{prefix}/{validate_name(device)}/model_event"


def _box_topic(device: str, box: int, leaf: str, prefix: str) -> str:
    _check_box(box)
    return f"{prefix}/{validate_name(device)}/box/{box}/{leaf}"


def score_topic(device: str, box: int, prefix: str = DEFAULT_PREFIX) -> str:
    return _box_topic(device, box, "score", prefix)


def state_topic(device: str, box: int, prefix: str = DEFAULT_PREFIX) -> str:
    return _box_topic(device, box, "state", prefix)


def alert_topic(device: str, box: int, prefix: str = DEFAULT_PREFIX) -> str:
    return _box_topic(device, box, "alert", prefix)


def subscriptions(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Topic filters a consumer needs to receive everything every device publishes."""
    return [f"{prefix}/+/availability", f"{prefix}/+/status", f"{prefix}/+/model_event", f"{prefix}/+/box/+/+"]


@dataclass(frozen=True)
class TopicRef:
    kind: TopicKind
    device: str
    box: int | None = None


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> TopicRef:
    """Turn a received topic into (kind, device, box) or raise `MessageError`."""
    parts = topic.split("/")
    pre = prefix.split("/")
    if parts[: len(pre)] != pre:
        raise MessageError(f"topic {topic!r} is not under prefix {prefix!r}")
    rest = parts[len(pre) :]
    if len(rest) == 2 and rest[1] in ("availability", "status", "model", "model_event"):
        return TopicRef(rest[1], validate_name(rest[0]))  # type: ignore[arg-type]
    if len(rest) == 4 and rest[1] == "box" and rest[3] in ("score", "state", "alert"):
        try:
            box = int(rest[2])
        except ValueError:
            raise MessageError(f"topic {topic!r}: box {rest[2]!r} is not a number") from None
        _check_box(box)
        return TopicRef(rest[3], validate_name(rest[0]), box)  # type: ignore[arg-type]
    raise MessageError(f"topic {topic!r} is not part of the mgs contract")


def _check_box(box: int) -> None:
    if isinstance(box, bool) or not isinstance(box, int) or not 0 <= box < MAX_BOXES:
        raise MessageError(f"box {box!r} must be an integer from 0 to {MAX_BOXES - 1}")


def _check_box_message(device: str, box: int, seq: int) -> None:
    """The head of every numbered message about one box: whose it is, which box, its outbox seq."""
    validate_name(device)
    _check_box(box)
    _num(seq, "seq", 0, None, integer=True)


def utc_iso(ts: float) -> str:
    """Unix seconds -> ISO-8601 UTC with milliseconds and a 'Z', the only time format on the wire."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc_iso(value: str) -> float:
    """ISO-8601 UTC (with 'Z' or '+00:00') -> Unix seconds; anything else is an error."""
    if not isinstance(value, str):
        raise MessageError(f"time {value!r} must be an ISO-8601 string")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise MessageError(f"time {value!r} is not ISO-8601") from None
    if dt.tzinfo is None or dt.utcoffset() != UTC.utcoffset(None):
        raise MessageError(f"time {value!r} must be UTC")
    ts = dt.timestamp()
    if not EARLIEST_TIME <= ts < LATEST_TIME:
        raise MessageError(f"time {value!r} is outside the years 1970-2099")
    return ts


# --- payloads -----------------------------------------------------------------------------------


def _decode(payload: bytes | str, what: str) -> dict[str, Any]:
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise MessageError(f"{what} payload is {len(payload)} bytes, over the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, an integer too long, nesting too deep
        raise MessageError(f"{what} payload is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise MessageError(f"{what} payload must be a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if isinstance(schema, bool) or schema != SCHEMA_VERSION:
        raise MessageError(f"{what} payload has schema {schema!r}; this side understands schema {SCHEMA_VERSION}")
    return obj


def _build(cls: type, obj: dict[str, Any], what: str) -> Any:
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(obj) - names)
    if unknown:
        raise MessageError(f"{what} payload has unknown field(s) {unknown}")
    try:
        msg = cls(**obj)
    except TypeError as exc:
        raise MessageError(f"{what} payload lacks a required field: {exc}") from None
    msg.validate()
    return msg


def _num(
    value: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    integer: bool = False,
    optional: bool = False,
) -> None:
    if value is None and optional:
        return
    ok_type = (int,) if integer else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, ok_type)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise MessageError(f"field {name!r} = {value!r} must be a finite {'integer' if integer else 'number'}")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise MessageError(f"field {name!r} = {value!r} does not fit a 64-bit integer")
    if lo is not None and value < lo or hi is not None and value > hi:
        raise MessageError(f"field {name!r} = {value!r} is outside [{lo}, {hi}]")


def _epoch(value: Any) -> None:
    if value != "" and (not isinstance(value, str) or not _EPOCH_RE.match(value)):
        raise MessageError(f"field 'epoch' = {value!r} must be empty or 8-32 lowercase hex digits")


def _sha(value: Any, name: str) -> None:
    if not isinstance(value, str) or not _SHA_RE.match(value):
        raise MessageError(f"field {name!r} = {value!r} must be a lowercase hex sha256")


def _version(value: Any, name: str, *, required: bool = False) -> None:
    """A model version names a registry entry; "" (when allowed) means the models shipped on disk."""
    if not isinstance(value, str):
        raise MessageError(f"field {name!r} must be a string")
    if value or required:
        try:
            validate_name(value, "model version")
        except MessageError as exc:
            raise MessageError(f"field {name!r}: {exc}") from None


def _text(value: Any, name: str, limit: int) -> None:
    if not isinstance(value, str) or len(value) > limit:
        raise MessageError(f"field {name!r} must be a string of at most {limit} characters")


class _Payload:
    WHAT: ClassVar[str]  # names the message kind in error messages

    @classmethod
    def from_json(cls, payload: bytes | str) -> Self:
        return _build(cls, _decode(payload, cls.WHAT), cls.WHAT)

    def to_json(self) -> bytes:
        self.validate()  # type: ignore[attr-defined]
        return json.dumps(asdict(self), separators=(",", ":"), allow_nan=False).encode()  # type: ignore[call-overload]


@dataclass
class ScoreWindow(_Payload):
    """Orbital-tightening summary of one box over one window (default 1 s).

    `score`, `median` and `p90` are None when no valid eye was seen in the window: "no face
    visible" is a state of its own and must never read as a healthy 0. `abstained_eyes` (optional,
    default 0) counts eyes found but not scored because the model was not confident enough: a
    window with abstained eyes and no valid ones is "not scorable", still never a score.
    """

    WHAT: ClassVar[str] = "score"

    device: str
    box: int
    seq: int
    window_start: str
    window_end: str
    frames: int
    valid_eyes: int
    score: float | None
    median: float | None
    p90: float | None
    face_visible_fraction: float
    model_sha256: str
    epoch: str = ""
    schema: int = SCHEMA_VERSION
    abstained_eyes: int = 0
    model_version: str = ""

    @property
    def face_visible(self) -> bool:
        return self.score is not None

    def validate(self) -> None:
        _check_box_message(self.device, self.box, self.seq)
        start, end = parse_utc_iso(self.window_start), parse_utc_iso(self.window_end)
        if end < start:
            raise MessageError(f"window_end {self.window_end} is before window_start {self.window_start}")
        _num(self.frames, "frames", 0, None, integer=True)
        _num(self.valid_eyes, "valid_eyes", 0, None, integer=True)
        _num(self.abstained_eyes, "abstained_eyes", 0, None, integer=True)
        for name in ("score", "median", "p90"):
            _num(getattr(self, name), name, SCORE_MIN, SCORE_MAX, optional=True)
        if (self.score is None) != (self.valid_eyes == 0):
            raise MessageError("score must be null exactly when valid_eyes is 0 (no face visible)")
        if (self.median is None) != (self.score is None) or (self.p90 is None) != (self.score is None):
            raise MessageError("median and p90 must be null exactly when score is null (no face visible)")
        _num(self.face_visible_fraction, "face_visible_fraction", 0.0, 1.0)
        _sha(self.model_sha256, "model_sha256")
        _epoch(self.epoch)
        _version(self.model_version, "model_version")


_WINDOW_NAMES = [f.name for f in fields(ScoreWindow)]
# The measured part of a window, in wire order: the columns every table or export of windows shares.
SCORE_COLUMNS = tuple(_WINDOW_NAMES[_WINDOW_NAMES.index("window_start") : _WINDOW_NAMES.index("model_sha256") + 1])

AlertEvent = Literal["raised", "cleared"]


@dataclass
class BoxAlert(_Payload):
    """A device-side alert transition for one box (threshold held for at least `duration_s`)."""

    WHAT: ClassVar[str] = "alert"

    device: str
    box: int
    seq: int
    event: str
    time: str
    threshold: float
    duration_s: float
    score: float | None
    epoch: str = ""
    schema: int = SCHEMA_VERSION

    def validate(self) -> None:
        _check_box_message(self.device, self.box, self.seq)
        _epoch(self.epoch)
        if self.event not in ("raised", "cleared"):
            raise MessageError(f"field 'event' = {self.event!r} must be 'raised' or 'cleared'")
        parse_utc_iso(self.time)
        _num(self.threshold, "threshold", SCORE_MIN, SCORE_MAX)
        _num(self.duration_s, "duration_s", 0, None)
        _num(self.score, "score", SCORE_MIN, SCORE_MAX, optional=True)


@dataclass
class DeviceStatus(_Payload):
    """Retained health snapshot of a device, republished every few seconds."""

    WHAT: ClassVar[str] = "status"

    device: str
    time: str
    fps: float
    target_fps: float
    backend: str
    camera: str
    queue_depth: int
    uptime_s: float
    version: str
    models: dict[str, str] = field(default_factory=dict)
    skipped_frames: int = 0
    boxes: int = 4
    message: str = ""
    # The outbox's epoch and the lowest seq still in it (0 = not reported): every seq below it is
    # stored or was given up by the device, so the server's stored ack may pass gaps below it.
    epoch: str = ""
    first_seq: int = 0
    schema: int = SCHEMA_VERSION
    model_version: str = ""

    def validate(self) -> None:
        validate_name(self.device)
        parse_utc_iso(self.time)
        _num(self.fps, "fps", 0, None)
        _num(self.target_fps, "target_fps", 0, None)
        if self.backend not in ("local", "offload"):
            raise MessageError(f"field 'backend' = {self.backend!r} must be 'local' or 'offload'")
        if self.camera not in ("ok", "starting", "reconnecting", "ended", "failed"):
            raise MessageError(f"field 'camera' = {self.camera!r} is not a known camera state")
        _num(self.queue_depth, "queue_depth", 0, None, integer=True)
        _num(self.uptime_s, "uptime_s", 0, None)
        _num(self.skipped_frames, "skipped_frames", 0, None, integer=True)
        _num(self.boxes, "boxes", 0, MAX_BOXES, integer=True)
        _epoch(self.epoch)
        _num(self.first_seq, "first_seq", 0, None, integer=True)
        _version(self.model_version, "model_version")
        _text(self.version, "version", 64)
        _text(self.message, "message", 1024)
        if not isinstance(self.models, dict) or len(self.models) > 16:
            raise MessageError("field 'models' must be an object of at most 16 name -> sha256 entries")
        for name, sha in self.models.items():
            validate_name(name, "model name")
            _sha(sha, f"models.{name}")


@dataclass
class StoredAck(_Payload):
    """Server -> device on `stored_topic`, retained, QoS 1, published by the server alone (ACL).

    Every message of `device` in outbox `epoch` with a seq up to and including `seq` is committed
    to the server's database. The device deletes its outbox rows up to it, and only then: a broker
    that crashes with messages in its queue can no longer lose windows the device has let go of.
    An ack for another epoch (an older outbox) deletes nothing.
    """

    WHAT: ClassVar[str] = "stored ack"

    device: str
    epoch: str
    seq: int
    time: str
    schema: int = SCHEMA_VERSION

    def validate(self) -> None:
        validate_name(self.device)
        _epoch(self.epoch)
        _num(self.seq, "seq", 0, None, integer=True)
        parse_utc_iso(self.time)


def parse_availability(payload: bytes | str) -> str:
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
    if text not in (AVAILABILITY_ONLINE, AVAILABILITY_OFFLINE):
        raise MessageError(f"availability payload {text[:40]!r} must be 'online' or 'offline'")
    return text


def parse_state(payload: bytes | str) -> float | None:
    """The retained plain-number state: a score, or `nan` when no face is visible."""
    text = (payload.decode(errors="replace") if isinstance(payload, bytes) else payload).strip()
    if text.lower() == NO_FACE_STATE:
        return None
    try:
        value = float(text)
    except ValueError:
        raise MessageError(f"state payload {text[:40]!r} is not a number") from None
    _num(value, "state", SCORE_MIN, SCORE_MAX)
    return value


# An empty retained payload would *delete* the retained state in MQTT, so a late subscriber could
# not tell "no face visible" from "never published". `nan` parses as a float in every language
# and compares false against any threshold, so simple consumers neither alert nor read it as 0.
NO_FACE_STATE = "nan"


def format_state(score: float | None) -> str:
    return NO_FACE_STATE if score is None else f"{score:.2f}"


# --- server-side alerts (published by the server, one place for alerting systems) ----------------

ALERTS_LEVEL = "alerts"


def animal_alert_topic(animal_id: int, prefix: str = DEFAULT_PREFIX) -> str:
    """`<prefix>/alerts/<animal id>`: animal names are free text, so the topic uses the id."""
    _num(animal_id, "animal_id", 1, None, integer=True)
    return f"{prefix}/{ALERTS_LEVEL}/{animal_id}"


def animal_alert_subscription(prefix: str = DEFAULT_PREFIX) -> str:
    """The one filter an alerting system subscribes to for every server-side alert."""
    return f"{prefix}/{ALERTS_LEVEL}/+"


@dataclass
class AnimalAlert(_Payload):
    """A server-side alert transition for one animal: its score (from whichever box it is assigned
    to) stayed at or above `threshold` for `duration_s` (raised), or below it as long (cleared)."""

    WHAT: ClassVar[str] = "animal alert"

    alert_id: int
    animal_id: int
    animal: str
    event: str
    time: str
    device: str
    box: int
    rule_id: int
    threshold: float
    duration_s: float
    score: float | None
    schema: int = SCHEMA_VERSION

    def validate(self) -> None:
        _num(self.alert_id, "alert_id", 1, None, integer=True)
        _num(self.animal_id, "animal_id", 1, None, integer=True)
        if not isinstance(self.animal, str) or len(self.animal) > 200:
            raise MessageError("field 'animal' must be a string of at most 200 characters")
        if self.event not in ("raised", "cleared"):
            raise MessageError(f"field 'event' = {self.event!r} must be 'raised' or 'cleared'")
        parse_utc_iso(self.time)
        validate_name(self.device)
        _check_box(self.box)
        _num(self.rule_id, "rule_id", 1, None, integer=True)
        _num(self.threshold, "threshold", SCORE_MIN, SCORE_MAX)
        _num(self.duration_s, "duration_s", 0, None)
        _num(self.score, "score", SCORE_MIN, SCORE_MAX, optional=True)


@dataclass
class ModelAssignment(_Payload):
    """Server -> device on `model_topic`, retained, QoS 1, published by the server alone (ACL).

    The model version the device should run. The device downloads the set from the server over
    HTTPS with its own credentials, checks every file against the manifest whose sha256 is given
    here, runs the set's self-test and only then switches, between two frames. Retained, so a
    device that was offline during a roll-out finds its assignment when it connects. An empty
    `version` withdraws the assignment: the device goes back to the models shipped on its disk.
    """

    WHAT: ClassVar[str] = "model assignment"

    device: str
    assignment_id: int
    version: str
    manifest_sha256: str
    time: str
    canary: bool = False
    schema: int = SCHEMA_VERSION

    def validate(self) -> None:
        validate_name(self.device)
        _num(self.assignment_id, "assignment_id", 1, None, integer=True)
        _version(self.version, "version")
        if self.version:
            _sha(self.manifest_sha256, "manifest_sha256")
        elif self.manifest_sha256:
            raise MessageError("field 'manifest_sha256' must be empty when the assignment is withdrawn")
        parse_utc_iso(self.time)
        if not isinstance(self.canary, bool):
            raise MessageError("field 'canary' must be true or false")


MODEL_EVENTS = ("downloading", "active", "failed", "rolled_back")


@dataclass
class ModelEvent(_Payload):
    """Device -> server on `model_event_topic`, retained, QoS 1: the device's last roll-out step.

    `event` is one of `MODEL_EVENTS`: "failed" (download, hash, load or self-test went wrong; the
    old models never stopped), "rolled_back" (the new version ran but its face-visible or scorable
    rate collapsed against the old one's), "active" (the assigned version now scores).
    `active_version` is what scores after this step ("" = the models shipped on disk), `reason`
    says why in words a technician can act on. Retained, so the last step survives a server that
    was down when it happened; every score window also names the version that produced it.
    """

    WHAT: ClassVar[str] = "model event"

    device: str
    assignment_id: int
    version: str
    event: str
    time: str
    active_version: str = ""
    previous_version: str = ""
    reason: str = ""
    schema: int = SCHEMA_VERSION

    def validate(self) -> None:
        validate_name(self.device)
        _num(self.assignment_id, "assignment_id", 0, None, integer=True)
        _version(self.version, "version")
        if self.event not in MODEL_EVENTS:
            raise MessageError(f"field 'event' = {self.event!r} must be one of {', '.join(MODEL_EVENTS)}")
        parse_utc_iso(self.time)
        _version(self.active_version, "active_version")
        _version(self.previous_version, "previous_version")
        _text(self.reason, "reason", 1024)
