"""Property-based fuzzing of every MQTT parser in mgs_core.messages: whatever arrives, a parser
returns a valid message or raises MessageError, never anything else (a crash in the ingest path
would drop or block a batch of real scores)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import tests.fuzz_support  # noqa: F401  (loads the settings profile)
from mgs_core.errors import MessageError
from mgs_core.messages import (
    MAX_PAYLOAD_BYTES,
    AnimalAlert,
    BoxAlert,
    DeviceStatus,
    ScoreWindow,
    StoredAck,
    parse_availability,
    parse_state,
    parse_topic,
)

SHA = "0123456789abcdef" * 4
T = "2026-01-01T00:00:00.000Z"
VALID: dict[type, dict[str, Any]] = {
    ScoreWindow: dict(
        device="rack-1",
        box=2,
        seq=17,
        window_start=T,
        window_end="2026-01-01T00:00:01.000Z",
        frames=10,
        valid_eyes=14,
        score=3.25,
        median=3.0,
        p90=4.5,
        face_visible_fraction=0.8,
        model_sha256=SHA,
        epoch="0123abcd",
        schema=1,
    ),
    BoxAlert: dict(
        device="rack-1",
        box=0,
        seq=5,
        event="raised",
        time=T,
        threshold=6.0,
        duration_s=60.0,
        score=7.0,
        epoch="",
        schema=1,
    ),
    DeviceStatus: dict(
        device="rack-1",
        time=T,
        fps=20.0,
        target_fps=20.0,
        backend="local",
        camera="ok",
        queue_depth=0,
        uptime_s=5.0,
        version="0.1.0",
        models={"unet": SHA},
        skipped_frames=0,
        boxes=4,
        message="",
        schema=1,
    ),
    StoredAck: dict(device="rack-1", epoch="0123abcd", seq=9, time=T, schema=1),
    AnimalAlert: dict(
        alert_id=1,
        animal_id=4,
        animal="M-04",
        event="cleared",
        time=T,
        device="rack1",
        box=2,
        rule_id=3,
        threshold=4.0,
        duration_s=600.0,
        score=None,
        schema=1,
    ),
}
PAYLOAD_TYPES = list(VALID)

# JSON values a broken or hostile publisher could send: every type, edge numbers, odd strings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 2**63, -(2**63) - 1, 10**400, 16, 15]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -0.0, 9.000001, 4102444800.0]),
    st.text(max_size=80),
    st.sampled_from(
        [
            "",
            "raised",
            "cleared",
            "online",
            "nan",
            T,
            "2099-12-31T23:59:59.999Z",
            "2100-01-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59+00:00",
            SHA,
            SHA.upper(),
            "rack 1",
            "rack/1",
            "+",
            "#",
            "٣",
            "local",
        ]
    ),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def mutated_payloads(draw: st.DrawFn, cls: type) -> bytes:
    """A valid payload with some fields replaced, dropped or added: close enough to the contract
    that validation runs field by field, not just the JSON decoder."""
    obj = dict(VALID[cls])
    for key in draw(st.lists(st.sampled_from(sorted(obj)), max_size=4, unique=True)):
        if draw(st.booleans()):
            obj[key] = draw(json_values)
        else:
            del obj[key]
    obj.update(draw(st.dictionaries(st.text(max_size=12), json_values, max_size=2)))
    return json.dumps(obj, allow_nan=True).encode()


def raw_payloads() -> st.SearchStrategy[bytes | str]:
    return st.one_of(
        st.binary(max_size=300), st.text(max_size=300), json_values.map(lambda v: json.dumps(v, allow_nan=True))
    )


def _only_message_errors(parse: Callable[[Any], Any], payload: Any) -> Any:
    try:
        return parse(payload)
    except MessageError:
        return None


@pytest.mark.parametrize("cls", PAYLOAD_TYPES, ids=lambda c: c.__name__)
def test_the_valid_payloads_used_for_mutation_are_valid(cls: type) -> None:
    assert cls.from_json(json.dumps(VALID[cls])).to_json()


@pytest.mark.parametrize("cls", PAYLOAD_TYPES, ids=lambda c: c.__name__)
@given(data=st.data())
@example(data=None)
def test_payload_parsers_return_valid_messages_or_raise_message_error(cls: type, data: st.DataObject | None) -> None:
    payloads: list[bytes | str] = (
        [b"[" * (MAX_PAYLOAD_BYTES // 2) + b"]" * (MAX_PAYLOAD_BYTES // 2), b"\xff\xfe", "1" * 5000, b"{}" * 9000]
        if data is None
        else [data.draw(st.one_of(mutated_payloads(cls), raw_payloads()))]
    )
    for payload in payloads:
        message = _only_message_errors(cls.from_json, payload)
        if message is not None:
            assert isinstance(message, cls)
            assert cls.from_json(message.to_json()) == message  # what validates can be sent on unchanged


@given(
    payload=st.one_of(raw_payloads(), st.sampled_from(["nan", "NaN ", "9", "9.01", "-0", "inf", "1e999", "٣", "0x1"]))
)
def test_parse_state_returns_a_score_none_or_raises_message_error(payload: bytes | str) -> None:
    value = _only_message_errors(parse_state, payload)
    assert value is None or 0.0 <= value <= 9.0


@given(payload=st.one_of(raw_payloads(), st.sampled_from(["online", "offline", "online\n", b"online\xff"])))
def test_parse_availability_returns_online_offline_or_raises_message_error(payload: bytes | str) -> None:
    assert _only_message_errors(parse_availability, payload) in (None, "online", "offline")


topic_parts = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "mgs",
            "rack1",
            "box",
            "score",
            "state",
            "alert",
            "status",
            "availability",
            "stored",
            "alerts",
            "0",
            "15",
            "16",
            "-1",
            "٣",
            "99999999999999999999",
            "+",
            "#",
        ]
    ),
)


@given(parts=st.lists(topic_parts, max_size=7), prefix=st.sampled_from(["mgs", "site/a", "x"]))
def test_parse_topic_returns_a_known_kind_or_raises_message_error(parts: list[str], prefix: str) -> None:
    ref = _only_message_errors(lambda t: parse_topic(t, prefix), "/".join(parts))
    if ref is not None:
        assert ref.kind in ("availability", "status", "score", "state", "alert")
        assert ref.box is None or 0 <= ref.box < 16
