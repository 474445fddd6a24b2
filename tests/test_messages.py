"""The wire contract: round trips and every rejection a bad publisher can cause."""

from __future__ import annotations

import json

import pytest

from mgs_core.errors import MessageError
from mgs_core.messages import (
    MAX_PAYLOAD_BYTES,
    BoxAlert,
    DeviceStatus,
    ScoreWindow,
    alert_topic,
    availability_topic,
    format_state,
    parse_availability,
    parse_state,
    parse_topic,
    parse_utc_iso,
    score_topic,
    state_topic,
    status_topic,
    subscriptions,
    utc_iso,
    validate_name,
)

SHA = "0123456789abcdef" * 4


def score(**over) -> ScoreWindow:
    base = dict(
        device="rack-1",
        box=2,
        seq=17,
        window_start="2026-01-01T00:00:00.000Z",
        window_end="2026-01-01T00:00:01.000Z",
        frames=10,
        valid_eyes=14,
        score=3.25,
        median=3.0,
        p90=4.5,
        face_visible_fraction=0.8,
        model_sha256=SHA,
    )
    base.update(over)
    return ScoreWindow(**base)


def score_json(**over) -> bytes:
    obj = json.loads(score().to_json())
    obj.update(over)
    return json.dumps(obj).encode()


def test_score_window_round_trip() -> None:
    msg = score()
    back = ScoreWindow.from_json(msg.to_json())
    assert back == msg and back.face_visible


def test_no_face_window_round_trips_with_null_scores() -> None:
    msg = score(valid_eyes=0, score=None, median=None, p90=None, face_visible_fraction=0.0)
    back = ScoreWindow.from_json(msg.to_json())
    assert back.score is None and not back.face_visible


def test_alert_and_status_round_trip() -> None:
    alert = BoxAlert(
        device="rack-1",
        box=0,
        seq=5,
        event="raised",
        time="2026-01-01T00:00:00.000Z",
        threshold=6.0,
        duration_s=30.0,
        score=6.8,
    )
    assert BoxAlert.from_json(alert.to_json()) == alert
    status = DeviceStatus(
        device="rack-1",
        time="2026-01-01T00:00:00.000Z",
        fps=9.5,
        target_fps=10.0,
        backend="local",
        camera="ok",
        queue_depth=3,
        uptime_s=12.0,
        version="0.1.0",
        models={"eye": SHA},
        skipped_frames=2,
        message="",
    )
    assert DeviceStatus.from_json(status.to_json()) == status


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (score_json(schema=2), "schema 2"),
        (score_json(extra=1), "unknown field"),
        (
            json.dumps({k: v for k, v in json.loads(score().to_json()).items() if k != "seq"}).encode(),
            "lacks a required field",
        ),
        (score_json(score=9.5), "outside"),
        (score_json(score=-0.1), "outside"),
        (score_json(seq=-1), "outside"),
        (score_json(seq=1.5), "integer"),
        (score_json(seq=True), "integer"),
        (score_json(box=16), "box"),
        (score_json(device="a/b"), "device name"),
        (score_json(score="3"), "number"),
        (score_json(face_visible_fraction=1.5), "outside"),
        (score_json(valid_eyes=0), "null exactly when"),
        (score_json(score=None), "null exactly when"),
        (score_json(median=None), "median and p90"),
        (score_json(valid_eyes=0, score=None, median=None), "median and p90"),
        (score_json(schema=True), "schema True"),
        (score_json(window_end="2025-12-31T23:59:59Z"), "before"),
        (score_json(window_start="yesterday"), "ISO-8601"),
        (score_json(window_start="2026-01-01T00:00:00"), "UTC"),
        (score_json(window_start="2026-01-01T01:00:00+01:00"), "UTC"),
        (score_json(model_sha256="ABC"), "sha256"),
        (b"{" + b'"a":1,' * (MAX_PAYLOAD_BYTES // 6) + b'"b":2}', "limit"),
    ],
)
def test_bad_score_payloads_are_rejected_with_the_reason(payload: bytes, words: str) -> None:
    with pytest.raises(MessageError, match=words):
        ScoreWindow.from_json(payload)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected(literal: str) -> None:
    payload = score().to_json().replace(b'"score":3.25', f'"score":{literal}'.encode())
    with pytest.raises(MessageError, match="finite"):
        ScoreWindow.from_json(payload)


def test_a_message_that_is_invalid_cannot_be_serialised() -> None:
    with pytest.raises(MessageError):
        score(score=float("nan")).to_json()


def test_bad_alert_and_status_fields() -> None:
    good = json.loads(
        BoxAlert(
            device="d",
            box=0,
            seq=1,
            event="raised",
            time="2026-01-01T00:00:00Z",
            threshold=6.0,
            duration_s=1.0,
            score=None,
        ).to_json()
    )
    with pytest.raises(MessageError, match="event"):
        BoxAlert.from_json(json.dumps({**good, "event": "maybe"}))
    with pytest.raises(MessageError, match="duration_s"):
        BoxAlert.from_json(json.dumps({**good, "duration_s": -1}))
    status = json.loads(
        DeviceStatus(
            device="d",
            time="2026-01-01T00:00:00Z",
            fps=1.0,
            target_fps=1.0,
            backend="local",
            camera="ok",
            queue_depth=0,
            uptime_s=0.0,
            version="x",
        ).to_json()
    )
    for field, value, words in [
        ("backend", "gpu", "backend"),
        ("camera", "broken", "camera state"),
        ("models", {"eye": "nothex"}, "sha256"),
        ("queue_depth", -1, "outside"),
        ("message", "x" * 2000, "1024"),
    ]:
        with pytest.raises(MessageError, match=words):
            DeviceStatus.from_json(json.dumps({**status, field: value}))


def test_topics_build_and_parse_back() -> None:
    assert score_topic("rack-1", 3) == "mgs/rack-1/box/3/score"
    assert state_topic("rack-1", 0, "fac/a") == "fac/a/rack-1/box/0/state"
    assert alert_topic("r", 1).endswith("/box/1/alert")
    assert availability_topic("r") == "mgs/r/availability" and status_topic("r") == "mgs/r/status"
    ref = parse_topic("fac/a/rack-1/box/3/score", "fac/a")
    assert (ref.kind, ref.device, ref.box) == ("score", "rack-1", 3)
    assert parse_topic("mgs/r/status").kind == "status"
    assert subscriptions() == ["mgs/+/availability", "mgs/+/status", "mgs/+/model_event", "mgs/+/box/+/+"]


@pytest.mark.parametrize(
    "topic, words",
    [
        ("other/r/status", "prefix"),
        ("mgs/r/box/x/score", "not a number"),
        ("mgs/r/box/99/score", "box"),
        ("mgs/r/box/1/temperature", "not part"),
        ("mgs/r", "not part"),
        ("mgs/bad name/status", "device name"),
    ],
)
def test_bad_topics_are_rejected(topic: str, words: str) -> None:
    with pytest.raises(MessageError, match=words):
        parse_topic(topic)


@pytest.mark.parametrize("name", ["", "a/b", "a+b", "#", " x", "x" * 65, "-lead"])
def test_unsafe_device_names_are_rejected(name: str) -> None:
    with pytest.raises(MessageError, match="device name"):
        validate_name(name)


def test_state_availability_and_time_helpers() -> None:
    assert parse_state(format_state(4.256)) == 4.26
    assert format_state(None) == "nan"
    assert parse_state(format_state(None)) is None
    for bad in (b"abc", b"10", b"inf", b""):
        with pytest.raises(MessageError):
            parse_state(bad)
    assert parse_availability(b"online") == "online"
    with pytest.raises(MessageError):
        parse_availability(b"maybe")
    assert utc_iso(0.5) == "1970-01-01T00:00:00.500Z"
    assert parse_utc_iso(utc_iso(1_700_000_000.25)) == 1_700_000_000.25
