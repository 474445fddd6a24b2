"""The repository over a real SQLite file: exactly-once windows, rollups, box state, assignments, alerts."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mgs_core.errors import MgsError
from mgs_core.messages import BoxAlert, utc_iso
from server.db import connect
from server.repository import Conflict, NotFound, Quarantined, Repository, pick_resolution
from server.store import QUARANTINE_MAX_ROWS, IngestStore
from tests.ingest_support import T0, window


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(connect(tmp_path / "server.db"))


def store(repo: Repository, windows: list, received_at: float = T0 + 10_000) -> int:
    ingest = IngestStore(repo.db)
    with ingest.write():
        return ingest.store_windows(windows, received_at).count


def scores(i: int) -> float | None:
    return None if i % 7 == 0 else (i * 13 % 90) / 10


def test_windows_are_stored_once_whatever_is_redelivered(repo: Repository) -> None:
    batch = [window(box=i % 4, seq=i, t=T0 + i // 4, score=scores(i)) for i in range(400)]
    assert store(repo, batch) == 400
    assert store(repo, batch[100:300] + batch[:10]) == 0
    assert store(repo, [batch[5], batch[5]]) == 0
    assert repo.db.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM score_windows").fetchone() == (400, 400)
    minute_total = repo.db.execute("SELECT SUM(windows), SUM(face_windows) FROM rollup_minute").fetchone()
    assert minute_total == (400, sum(1 for i in range(400) if scores(i) is not None))


def test_rollups_match_the_raw_windows(repo: Repository) -> None:
    windows = [window(box=0, seq=i, t=T0 + i * 7.5, score=scores(i)) for i in range(2000)]
    store(repo, windows[:1234])
    store(repo, windows[1234:])
    start, end = T0, T0 + 2000 * 7.5
    for resolution, size in (("minute", 60), ("hour", 3600)):
        points = repo.box_scores("rack1", 0, start, end, resolution)["points"]
        for p in points:
            inside = [scores(i) for i in range(2000) if p["t"] <= T0 + i * 7.5 < p["t"] + size]
            faces = [s for s in inside if s is not None]
            assert p["windows"] == len(inside)
            assert p["face_windows"] == len(faces)
            if faces:
                assert math.isclose(p["mean"], sum(faces) / len(faces))
                assert (p["min"], p["max"]) == (min(faces), max(faces))
            else:
                assert p["mean"] is None


def test_no_face_is_stored_as_null_never_as_zero(repo: Repository) -> None:
    store(repo, [window(seq=1, score=None)])
    row = repo.db.execute("SELECT score, valid_eyes, face_visible_fraction FROM score_windows").fetchone()
    assert row == (None, 0, 0.0)
    point = repo.box_scores("rack1", 0, T0, T0 + 60, "raw")["points"][0]
    assert point["mean"] is None and point["face_windows"] == 0


def test_times_are_stored_as_seconds_and_readable_iso(repo: Repository) -> None:
    store(repo, [window(seq=1, t=T0 + 0.25)])
    row = repo.db.execute("SELECT window_start, window_end, window_start_iso FROM score_windows").fetchone()
    assert row == (T0 + 0.25, T0 + 1.25, utc_iso(T0 + 0.25))


def test_box_state_follows_the_newest_window_even_out_of_order(repo: Repository) -> None:
    store(repo, [window(seq=10, t=T0 + 10, score=5.0)])
    store(repo, [window(seq=3, t=T0 + 3, score=1.0)])
    box = repo.boxes(now=T0 + 20)[0]
    assert (box["last_seq"], box["last_score"], box["age_s"]) == (10, 5.0, 9.0)


def test_auto_resolution_keeps_plots_small() -> None:
    assert pick_resolution(0, 3600) == "raw"
    assert pick_resolution(0, 86400) == "minute"
    assert pick_resolution(0, 30 * 86400) == "hour"


def test_assignments_map_windows_to_animals_and_refuse_overlaps(repo: Repository) -> None:
    mouse = repo.create_animal("M-01", "C57BL/6")
    other = repo.create_animal("M-02")
    first = repo.create_assignment(mouse, "rack1", 0, T0, T0 + 100)
    repo.create_assignment(mouse, "rack1", 1, T0 + 100, None)
    assert repo.animal_at("rack1", 0, T0 + 50) == mouse
    assert repo.animal_at("rack1", 0, T0 + 100) is None
    assert repo.animal_at("rack1", 1, T0 + 5000) == mouse
    with pytest.raises(Conflict, match="already assigned"):
        repo.create_assignment(other, "rack1", 0, T0 + 50, T0 + 60)
    with pytest.raises(Conflict, match="already in box"):
        repo.create_assignment(mouse, "rack1", 2, T0 + 200)
    with pytest.raises(MgsError, match="must be after"):
        repo.create_assignment(other, "rack1", 3, T0 + 10, T0)
    with pytest.raises(NotFound):
        repo.create_assignment(999, "rack1", 3, T0)
    repo.update_assignment(first, end_time=T0 + 40)
    repo.create_assignment(other, "rack1", 0, T0 + 50, T0 + 60)
    assert repo.animal_at("rack1", 0, T0 + 55) == other


def test_animal_history_follows_the_animal_between_boxes(repo: Repository) -> None:
    mouse = repo.create_animal("M-01")
    repo.create_assignment(mouse, "rack1", 0, T0, T0 + 10)
    repo.create_assignment(mouse, "rack2", 3, T0 + 10, None)
    store(
        repo,
        [window("rack1", 0, i, T0 + i, 1.0) for i in range(20)]
        + [window("rack2", 3, i, T0 + i, 2.0) for i in range(20)],
    )
    points = repo.animal_scores(mouse, T0, T0 + 20, "raw")["points"]
    assert [(p["device"], p["mean"]) for p in points] == [("rack1", 1.0)] * 10 + [("rack2", 2.0)] * 10


def test_names_that_look_like_sql_are_stored_verbatim(repo: Repository) -> None:
    name = "Robert'); DROP TABLE animals;--"
    animal_id = repo.create_animal(name, notes="1' OR '1'='1")
    assert repo.animal(animal_id)["name"] == name
    assert repo.animal(animal_id)["notes"] == "1' OR '1'='1"
    assert "animals" in repo.db.table_names()
    with pytest.raises(Conflict):
        repo.create_animal(name)
    with pytest.raises(MgsError, match="must not be empty"):
        repo.create_animal("   ")
    with pytest.raises(MgsError, match="device name"):
        repo.create_assignment(animal_id, "rack1'; --", 0, T0)


def test_device_alerts_are_stored_once_and_acknowledged(repo: Repository) -> None:
    alert = BoxAlert(
        device="rack1", box=2, seq=77, event="raised", time=utc_iso(T0), threshold=5.0, duration_s=60.0, score=6.5
    )
    ingest = IngestStore(repo.db)
    with ingest.write():
        assert ingest.store_device_alerts([alert, alert], T0) == 1
    with ingest.write():
        assert ingest.store_device_alerts([alert], T0) == 0
    [row] = repo.alerts()
    assert (row["source"], row["event"], row["box"], row["acknowledged_by"]) == ("device", "raised", 2, None)
    assert repo.boxes(now=T0)[0]["alert"] == "raised"
    acked = repo.acknowledge_alert(row["id"], "officer1", now=T0 + 5)
    assert (acked["acknowledged_by"], acked["acknowledged_at"]) == ("officer1", T0 + 5)
    assert repo.acknowledge_alert(row["id"], "someone-else")["acknowledged_by"] == "officer1"
    assert repo.alerts(unacknowledged=True) == []
    with pytest.raises(NotFound):
        repo.acknowledge_alert(12345, "officer1")


def test_quarantine_is_truncated_and_capped(repo: Repository) -> None:
    ingest = IngestStore(repo.db)
    with ingest.write():
        ingest.store_quarantine([Quarantined(T0, "mgs/x/status", b"x" * 100_000, "too big")])
    [row] = repo.quarantine()
    assert row["payload_bytes"] == 100_000 and len(row["payload"]) < 5000
    with ingest.write():
        ingest.store_quarantine(
            [Quarantined(T0, "mgs/x/status", b"{}", f"bad {i}") for i in range(QUARANTINE_MAX_ROWS + 50)]
        )
    assert repo.db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0] == QUARANTINE_MAX_ROWS
    assert repo.quarantine(1)[0]["reason"] == f"bad {QUARANTINE_MAX_ROWS + 49}"


def test_export_rows_carry_the_animal_and_the_model_hash(repo: Repository) -> None:
    mouse = repo.create_animal("M-01")
    repo.create_assignment(mouse, "rack1", 0, T0 + 5, None)
    store(repo, [window(seq=i, t=T0 + i) for i in range(10)])
    rows = list(repo.iter_windows(T0, T0 + 10))
    assert [r["animal_id"] for r in rows] == [None] * 5 + [mouse] * 5
    assert list(repo.iter_windows(T0, T0 + 10, animal_id=mouse))[0]["window_start"] == utc_iso(T0 + 5)
    assert rows[0]["model_sha256"] == window().model_sha256
