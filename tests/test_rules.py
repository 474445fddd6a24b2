"""Server-side alert rules: the (rule, animal) state machine and its evaluation on stored windows."""

from __future__ import annotations

from pathlib import Path

import pytest

from mgs_core.errors import MessageError, MgsError
from mgs_core.messages import AnimalAlert, animal_alert_topic
from server.db import connect
from server.repository import Repository
from server.rules import RuleEngine, RuleState, step
from server.store import IngestStore
from tests.ingest_support import T0, window


def run(state: RuleState, scores: list[float | None], threshold: float = 5.0, duration: float = 3.0) -> list[str]:
    events = []
    for i, score in enumerate(scores):
        state, event = step(state, threshold, duration, T0 + i, T0 + i + 1, score)
        if event:
            events.append(f"{event}@{i}")
    return events


def test_raised_only_after_the_duration_and_cleared_after_as_long_below() -> None:
    assert run(RuleState(), [6, 6, 6, 6, 6, 1, 1, 1, 1]) == ["raised@2", "cleared@7"]


def test_a_dip_restarts_the_clock_and_a_short_relief_does_not_clear() -> None:
    assert run(RuleState(), [6, 6, 1, 6, 6, 6, 1, 6, 6]) == ["raised@5"]


def test_no_face_windows_change_nothing() -> None:
    assert run(RuleState(), [6, None, None, 6]) == ["raised@3"]
    assert run(RuleState(), [None] * 10) == []


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    return Repository(connect(tmp_path / "server.db"))


def ingest(repo: Repository, windows: list) -> list:
    ingest = IngestStore(repo.db)
    with ingest.write():
        return RuleEngine(repo).evaluate(ingest.store_windows(windows, T0), T0)


def test_rules_follow_the_animal_and_survive_a_restart(repo: Repository) -> None:
    mouse = repo.create_animal("M-7")
    repo.create_assignment(mouse, "rack1", 0, T0, T0 + 30)
    repo.create_assignment(mouse, "rack2", 1, T0 + 30, None)
    rule = repo.create_alert_rule(threshold=5.0, duration_s=20.0, animal_id=mouse)
    assert ingest(repo, [window("rack1", 0, i, T0 + i, 7.0) for i in range(15)]) == []
    # Same repository file, a fresh engine (a restarted server): the clock started at T0 continues.
    events = ingest(
        repo,
        [window("rack2", 1, i, T0 + 30 + i, 8.0) for i in range(5)]
        + [window("rack1", 0, i, T0 + i, 7.0) for i in range(15, 30)],
    )
    assert [(e.event, e.device, e.box, e.rule_id, e.animal) for e in events] == [("raised", "rack1", 0, rule, "M-7")]
    assert events[0].time == window(t=T0 + 19).window_end
    assert ingest(repo, [window("rack2", 1, i, T0 + 30 + i, 8.0) for i in range(5, 60)]) == []
    cleared = ingest(repo, [window("rack2", 1, i, T0 + 30 + i, 1.0) for i in range(60, 90)])
    assert [e.event for e in cleared] == ["cleared"]
    stored = repo.alerts(animal_id=mouse)
    assert [(a["source"], a["event"]) for a in stored] == [("server", "cleared"), ("server", "raised")]


def test_experiment_rules_apply_to_every_animal_of_the_experiment(repo: Repository) -> None:
    study = repo.create_experiment("post-op analgesia")
    mice = [repo.create_animal(f"M-{i}", experiment_id=study) for i in range(2)]
    outsider = repo.create_animal("M-x")
    for box, animal in enumerate([*mice, outsider]):
        repo.create_assignment(animal, "rack1", box, T0)
    repo.create_alert_rule(threshold=4.0, duration_s=0.0, experiment_id=study)
    events = ingest(repo, [window("rack1", box, box * 100, T0, 6.0) for box in range(3)])
    assert sorted(e.animal_id for e in events) == mice


def test_redelivered_windows_do_not_raise_again(repo: Repository) -> None:
    mouse = repo.create_animal("M-1")
    repo.create_assignment(mouse, "rack1", 0, T0)
    repo.create_alert_rule(threshold=4.0, duration_s=0.0, animal_id=mouse)
    windows = [window(seq=i, t=T0 + i, score=6.0) for i in range(3)]
    assert len(ingest(repo, windows)) == 1
    assert ingest(repo, windows) == []


def test_disabled_rules_and_unassigned_boxes_raise_nothing(repo: Repository) -> None:
    mouse = repo.create_animal("M-1")
    rule = repo.create_alert_rule(threshold=4.0, duration_s=0.0, animal_id=mouse)
    assert ingest(repo, [window(seq=1, score=9.0)]) == []
    repo.create_assignment(mouse, "rack1", 0, T0)
    repo.set_alert_rule_enabled(rule, False)
    assert ingest(repo, [window(seq=2, t=T0 + 1, score=9.0)]) == []


def test_a_rule_needs_exactly_one_target_and_sane_numbers(repo: Repository) -> None:
    mouse = repo.create_animal("M-1")
    with pytest.raises(MgsError, match="exactly one"):
        repo.create_alert_rule(threshold=4.0, duration_s=0.0)
    with pytest.raises(MgsError, match="threshold"):
        repo.create_alert_rule(threshold=12.0, duration_s=0.0, animal_id=mouse)
    with pytest.raises(MgsError, match="duration_s"):
        repo.create_alert_rule(threshold=4.0, duration_s=-1, animal_id=mouse)


def test_the_published_alert_payload_round_trips_and_is_strict() -> None:
    alert = AnimalAlert(
        alert_id=3,
        animal_id=7,
        animal="M/7 #1",
        event="raised",
        time="2026-03-02T10:00:00.000Z",
        device="rack1",
        box=2,
        rule_id=1,
        threshold=4.0,
        duration_s=600.0,
        score=None,
    )
    assert AnimalAlert.from_json(alert.to_json()) == alert
    assert animal_alert_topic(7, "site/a") == "site/a/alerts/7"
    with pytest.raises(MessageError, match="event"):
        AnimalAlert.from_json(alert.to_json().replace(b'"raised"', b'"maybe"'))
    with pytest.raises(MessageError, match="animal_id"):
        animal_alert_topic(0)
