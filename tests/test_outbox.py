"""The SQLite outbox: seq and epoch across restarts, removal only of what the server stored, size limit, full disk."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
from pathlib import Path

import pytest

from device.outbox import Outbox, Pending
from mgs_core.errors import MgsError


def item(n: int = 0, size: int = 50) -> Pending:
    return Pending(
        f"mgs/r/box/{n % 4}/score",
        lambda seq, epoch: json.dumps({"seq": seq, "epoch": epoch, "pad": "x" * size}).encode(),
    )


def seqs_in(payloads) -> list[int]:
    return [json.loads(r.payload)["seq"] for r in payloads]


def test_seq_is_strictly_increasing_across_restarts_even_when_empty(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    assert box.enqueue([item(i) for i in range(3)]) == [1, 2, 3]
    box.mark_stored(3)
    box.flush_acks()
    assert box.stats().depth == 0
    box.close()
    box = Outbox(path)  # the table is empty now: seq must not restart from MAX(seq)+1 = 1
    assert box.enqueue([item()]) == [4]
    box.close()


def test_payload_carries_its_seq_and_rows_come_oldest_first(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.enqueue([item(i) for i in range(5)])
    rows = box.pending(after_seq=0, limit=3)
    assert [r.seq for r in rows] == [1, 2, 3] == seqs_in(rows)
    assert [r.seq for r in box.pending(after_seq=3)] == [4, 5]
    assert rows[0].topic == "mgs/r/box/0/score"
    box.close()


def test_only_rows_the_server_stored_leave_and_the_rest_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    box = Outbox(path)
    epoch = box.epoch
    box.enqueue([item(i) for i in range(6)])
    assert box.stats().first_seq == 1
    box.mark_stored(3)
    assert box.flush_acks() == 3
    box.mark_stored(2)  # an older ack (a redelivered retained message) changes nothing
    assert box.flush_acks() == 0
    box.close()
    box = Outbox(path)
    assert [r.seq for r in box.pending()] == [4, 5, 6]
    assert {json.loads(r.payload)["epoch"] for r in box.pending()} == {epoch} == {box.epoch}
    stats = box.stats()
    assert stats.depth == 3 and stats.last_seq == 6 and stats.first_seq == 4
    box.close()


def test_a_new_outbox_gets_a_new_epoch_and_an_old_one_keeps_counting_under_the_empty_epoch(tmp_path: Path) -> None:
    first, second = Outbox(tmp_path / "a.sqlite"), Outbox(tmp_path / "b.sqlite")
    assert first.epoch != second.epoch and len(first.epoch) == 16
    first.close()
    second.close()
    legacy = tmp_path / "legacy.sqlite"
    with sqlite3.connect(legacy) as conn:  # an outbox written before epochs existed (schema 1)
        conn.executescript(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
            "CREATE TABLE outbox (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL);"
            "INSERT INTO meta VALUES ('last_seq', 41), ('dropped', 0);"
            "INSERT INTO outbox VALUES (41, 'mgs/r/box/0/score', x'7b7d');"
            "PRAGMA user_version = 1;"
        )
    box = Outbox(legacy)
    assert box.epoch == "" and box.enqueue([item()]) == [42] and [r.seq for r in box.pending()] == [41, 42]
    box.close()


def test_limit_drops_oldest_counts_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_messages=100)
    with caplog.at_level(logging.WARNING, logger="device.outbox"):
        for i in range(150):
            box.enqueue([item(i)])
    stats = box.stats()
    assert stats.depth == 100 and stats.dropped == 50 and stats.last_seq == 150
    assert [r.seq for r in box.pending(limit=1)] == [51]
    assert "50 oldest message(s) dropped" in stats.problem()
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "holds 80 of at most 100" in messages and "at its limit" in messages
    assert sum("at its limit" in r.getMessage() for r in caplog.records) == 1  # not once per message
    box.close()


def drain(box: Outbox, delivered: list[int]) -> None:
    """What the publisher and the server do: send what is newer than the last sent, store it, delete."""
    rows = box.pending(after_seq=delivered[-1] if delivered else 0, limit=10_000)
    delivered.extend(seqs_in(rows))
    if rows:
        box.mark_stored(rows[-1].seq)
    box.flush_acks()


def drain_all(box: Outbox, delivered: list[int], rounds: int = 50) -> None:
    """Deliver, free the space, write what waited in memory; until nothing waits."""
    for _ in range(rounds):
        drain(box, delivered)
        box.retry_held()
        if not box.stats().held_in_memory:
            break
    drain(box, delivered)


def test_size_cap_acts_like_a_full_disk_and_nothing_measured_is_lost(tmp_path: Path, caplog) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_bytes=64 * 1024)
    delivered: list[int] = []
    with caplog.at_level(logging.WARNING, logger="device.outbox"):
        for i in range(300):
            box.enqueue([item(i, size=300)])
        stats = box.stats()
        assert stats.disk_full and stats.held_in_memory > 0
        assert stats.depth == 300  # everything is still accounted for: on disk or in memory
        assert "disk full" in stats.problem()
        drain_all(box, delivered)
    assert not box.stats().disk_full and box.stats().depth == 0
    assert delivered == list(range(1, 301))  # every message, in order, with contiguous seqs
    log = " ".join(r.getMessage() for r in caplog.records)
    assert "database or disk is full" in log and "space is back" in log
    box.close()


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.decode().strip()})")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_really_full_filesystem_keeps_messages_in_memory_until_space_returns(tiny_fs: Path) -> None:
    filler = tiny_fs / "filler"
    box = Outbox(tiny_fs / "o.sqlite")
    filler.write_bytes(b"\0" * (900 * 1024))
    for i in range(400):
        box.enqueue([item(i, size=300)])
    stats = box.stats()
    assert stats.disk_full and stats.held_in_memory > 0, stats
    filler.unlink()  # the technician frees space
    delivered: list[int] = []
    drain_all(box, delivered)
    assert delivered == list(range(1, 401))
    box.close()


def test_a_damaged_outbox_file_stops_with_advice(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MgsError, match="move it aside"):
        Outbox(path)
