"""The stored-ack watermark per device and outbox epoch, against a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from server.db import connect, transaction
from server.delivery import DeliveryTracker
from server.store import IngestStore


def step(
    repo: IngestStore, tracker: DeliveryTracker, device: str, epoch: str, seqs: list[int], first_seq: int = 0
) -> int:
    """One ingest batch: these seqs stored, maybe a status naming the outbox's lowest seq."""
    with transaction(repo.db):
        touched = set()
        if seqs:
            tracker.handled(repo, device, epoch, seqs, 100.0)
            touched.add((device, epoch))
        if first_seq and tracker.outbox_starts_at(repo, device, epoch, first_seq, 100.0):
            touched.add((device, epoch))
        return tracker.commit(repo, touched, 100.0).get((device, epoch), -1)


def test_the_ack_covers_only_seqs_stored_without_a_gap(tmp_path: Path) -> None:
    repo, tracker = IngestStore(connect(tmp_path / "s.db")), DeliveryTracker()
    assert step(repo, tracker, "rack1", "aa11bb22", [1, 2, 4, 5]) == 2
    assert step(repo, tracker, "rack1", "aa11bb22", [3]) == 5  # the gap is filled by a resend
    assert step(repo, tracker, "rack1", "aa11bb22", [9]) == 5
    assert step(repo, tracker, "rack1", "aa11bb22", [], first_seq=4) == 5  # a stale status moves nothing back
    assert step(repo, tracker, "rack1", "aa11bb22", [], first_seq=9) == 9  # 6-8 are no longer on the device


def test_the_watermark_survives_a_restart_and_a_new_epoch_is_a_regression(tmp_path: Path) -> None:
    repo = IngestStore(connect(tmp_path / "s.db"))
    step(repo, DeliveryTracker(), "rack1", "aa11bb22", [1, 2, 3])
    fresh = DeliveryTracker()  # a restarted server
    assert step(repo, fresh, "rack1", "aa11bb22", [4]) == 4
    assert repo.db.execute("SELECT seq_regressions FROM devices").fetchall() == []
    assert step(repo, fresh, "rack1", "cc33dd44", [1]) == 1
    device = repo.repository.device("rack1")
    assert (
        device["seq_regressions"] == 1
        and "'cc33dd44' after epoch 'aa11bb22' reached seq 4" in device["last_regression"]
    )
