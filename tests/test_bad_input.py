"""Hostile and broken input through a real Mosquitto: nothing wrong stored, nothing lost, nothing crashed.

Every case is published between good windows; afterwards the good windows are all there, the bad
messages sit in the quarantine table with a reason, the counters say how many were rejected, and
the worker still stores the next good message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server import store
from server.db import connect
from server.repository import Repository
from tests.conftest import wait_for
from tests.ingest_support import SHA, T0, publish, running_worker, score_message, window


def good(seq: int) -> tuple[str, bytes]:
    return score_message(window(seq=seq, t=T0 + seq))


def payload(**changes: object) -> bytes:
    obj = json.loads(window(seq=500, t=T0 + 500).to_json())
    obj.update(changes)
    return json.dumps(obj).encode()


TOPIC = "mgs/rack1/box/0/score"
BAD = {
    "not json": (TOPIC, b"{this is not json"),
    "not an object": (TOPIC, b"[1, 2, 3]"),
    "not utf-8": (TOPIC, b"\xff\xfe\x00garbage"),
    "empty": (TOPIC, b""),
    "foreign schema": (TOPIC, payload(schema=2)),
    "missing schema": (TOPIC, json.dumps({k: v for k, v in json.loads(payload()).items() if k != "schema"}).encode()),
    "unknown field": (TOPIC, payload(extra="x")),
    "missing field": (TOPIC, json.dumps({k: v for k, v in json.loads(payload()).items() if k != "seq"}).encode()),
    "NaN score": (TOPIC, payload().replace(b'"score": 3.0', b'"score": NaN')),
    "Infinity p90": (TOPIC, payload().replace(b'"p90": 3.5', b'"p90": Infinity')),
    "score above 9": (TOPIC, payload(score=9.5, median=9.5, p90=9.5)),
    "negative seq": (TOPIC, payload(seq=-1)),
    "seq beyond 64 bits": (TOPIC, payload(seq=2**70)),
    "number with 5000 digits": (TOPIC, payload().replace(b'"frames": 10', b'"frames": ' + b"9" * 5000)),
    "seq as text": (TOPIC, payload(seq="501")),
    "bool frames": (TOPIC, payload(frames=True)),
    "score without eyes": (TOPIC, payload(valid_eyes=0)),
    "end before start": (TOPIC, payload(window_end="2020-01-01T00:00:00.000Z")),
    "local time": (TOPIC, payload(window_start="2025-06-15T15:06:40+02:00")),
    "bad sha": (TOPIC, payload(model_sha256="'; DROP TABLE score_windows; --")),
    "huge": (TOPIC, payload(model_sha256="a" * 2_000_000)),
    "payload from another device": (TOPIC, payload(device="rack2")),
    "payload from another box": (TOPIC, payload(box=3)),
    "SQL device in payload": (TOPIC, payload(device="rack1'; DROP TABLE score_windows;--")),
    "box out of range": ("mgs/rack1/box/99/score", payload(box=99)),
    "box not a number": ("mgs/rack1/box/x/score", payload()),
    "unknown leaf": ("mgs/rack1/box/0/selfie", payload()),
    "device with a space": ("mgs/rack 1/status", b"{}"),
    "SQL device in topic": ("mgs/x';DROP TABLE devices;--/availability", b"online"),
    "bad availability": ("mgs/rack1/availability", b"maybe"),
    "bad state": ("mgs/rack1/box/0/state", b"high"),
    "status wrong types": ("mgs/rack1/status", json.dumps({"schema": 1, "device": "rack1", "fps": "fast"}).encode()),
    "alert bad event": (
        "mgs/rack1/box/0/alert",
        json.dumps(
            {
                "schema": 1,
                "device": "rack1",
                "box": 0,
                "seq": 1,
                "event": "panic",
                "time": "2025-06-15T15:06:40.000Z",
                "threshold": 5,
                "duration_s": 1,
                "score": 6,
            }
        ).encode(),
    ),
}


def test_bad_messages_are_quarantined_and_good_ones_kept(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    messages = [good(0), good(1)]
    for i, (topic, body) in enumerate(BAD.values()):
        messages += [(topic, body), good(10 + i)]
    good_seqs = [0, 1, *range(10, 10 + len(BAD))]
    with running_worker(broker, db_path) as worker:
        publish(broker, messages)
        wait_for(lambda: worker.stats().get("received", 0) >= len(messages), timeout=20, what="every message")
        wait_for(
            lambda: worker.stats().get("rejected", 0) + worker.stats().get("stored", 0) >= len(messages),
            what="every message written or rejected",
        )
        publish(broker, [good(999)])
        wait_for(lambda: worker.stats().get("stored", 0) == len(good_seqs) + 1, what="the worker to go on storing")
        stats = worker.stats()
    repo = Repository(connect(db_path))
    assert [r[0] for r in repo.db.execute("SELECT seq FROM score_windows ORDER BY seq")] == [*good_seqs, 999]
    assert repo.db.execute("SELECT DISTINCT device FROM score_windows").fetchall() == [("rack1",)]
    assert repo.db.execute("SELECT sha256 FROM models").fetchall() == [(SHA,)]
    assert repo.db.execute("SELECT name FROM devices").fetchall() == [("rack1",)]
    assert {"score_windows", "devices"} <= set(repo.db.table_names())
    assert stats["rejected"] == len(BAD)
    assert stats["rejected.score"] >= 20 and stats["rejected.topic"] >= 4
    assert repo.counters()["rejected"] == len(BAD)
    quarantined = repo.quarantine(limit=1000)
    assert len(quarantined) == len(BAD)
    assert all(q["reason"] for q in quarantined)
    assert max(q["payload_bytes"] for q in quarantined) > 2_000_000
    assert max(len(q["payload"]) for q in quarantined) <= 2048
    reasons = " | ".join(q["reason"] for q in quarantined)
    for expected in (
        "not valid JSON",
        "schema 2",
        "unknown field",
        "must be a finite number",
        "outside [0.0, 9.0]",
        "over the 16384-byte limit",
        "published on rack1/box/0's topic",
        "not part of the mgs contract",
        "must be 'online' or 'offline'",
        "invalid device name",
        "does not fit a 64-bit integer",
    ):
        assert expected in reasons, expected


def test_a_replayed_seq_with_different_content_does_not_overwrite(broker, tmp_path: Path) -> None:
    db_path = tmp_path / "server.db"
    with running_worker(broker, db_path) as worker:
        publish(broker, [score_message(window(seq=7, t=T0, score=2.0))])
        wait_for(lambda: worker.stats().get("stored", 0) == 1, what="the original")
        publish(broker, [score_message(window(seq=7, t=T0 + 60, score=8.0))])
        wait_for(lambda: worker.stats().get("reused_seq", 0) == 1, what="the replay")
    db = connect(db_path)
    assert db.execute("SELECT seq, score, window_start FROM score_windows").fetchall() == [(7, 2.0, T0)]
    kept = db.execute("SELECT seq, reason FROM quarantine").fetchall()
    assert len(kept) == 1 and kept[0][0] == 7 and "seq went back" in kept[0][1]
    assert db.execute("SELECT seq_regressions FROM devices WHERE name = 'rack1'").fetchone() == (1,)


def test_a_flood_of_garbage_does_not_grow_the_quarantine_without_bound(
    broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path = tmp_path / "server.db"
    count = 300
    monkeypatch.setattr(store, "QUARANTINE_MAX_ROWS", 100)
    with running_worker(broker, db_path) as worker:
        publish(broker, [(TOPIC, b"garbage %d" % i) for i in range(count)] + [good(1)])
        wait_for(
            lambda: worker.stats().get("rejected", 0) == count and worker.stats().get("stored", 0) == 1,
            what="the flood to be handled",
        )
    db = connect(db_path)
    assert db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == 100
    assert db.execute("SELECT payload FROM quarantine ORDER BY id DESC LIMIT 1").fetchone()[0] == f"garbage {count - 1}"
