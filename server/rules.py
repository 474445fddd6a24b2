"""Server-side alert rules: per animal or per experiment, evaluated on every ingested batch.

A device knows boxes, the server knows animals. A welfare rule ("alert when this mouse scores 4 or
more for 10 minutes") must follow the animal from box to box, so it is evaluated here, after each
new window is mapped to the animal whose assignment covers the window's start. The state of each
(rule, animal) pair is kept in `rule_state`, so a restart neither forgets a raised alert nor
raises it twice.

Semantics, per (rule, animal), over that animal's windows in time order:
- raised when every face-visible window for at least `duration_s` scored >= threshold;
- cleared when every face-visible window for at least `duration_s` scored < threshold;
- windows with no face visible change nothing (absence of evidence is neither pain nor relief).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mgs_core.messages import AnimalAlert, utc_iso
from server.repository import Repository, StoredBatch, StoredWindow


@dataclass(frozen=True)
class RuleState:
    above_since: float | None = None
    below_since: float | None = None
    raised: bool = False


def step(
    state: RuleState, threshold: float, duration_s: float, start: float, end: float, score: float | None
) -> tuple[RuleState, str | None]:
    """Advance one (rule, animal) state by one window; return the new state and the event, if any."""
    if score is None:
        return state, None
    if score >= threshold:
        since = start if state.above_since is None else state.above_since
        if not state.raised and end - since >= duration_s:
            return RuleState(None, None, True), "raised"
        return RuleState(since, None, state.raised), None
    since = start if state.below_since is None else state.below_since
    if state.raised and end - since >= duration_s:
        return RuleState(None, None, False), "cleared"
    return RuleState(None, since if state.raised else None, state.raised), None


class RuleEngine:
    """Evaluates the enabled rules over newly stored windows inside the ingest transaction."""

    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def evaluate(self, batch: StoredBatch, received_at: float) -> list[AnimalAlert]:
        """Store alert transitions caused by the new windows and return them for publishing (after commit)."""
        if not batch.count or not self._any_rules():
            return []
        windows = self.repo.new_windows(batch)
        by_animal = self._windows_by_animal(windows)
        rules = self.repo.rules_for_animals(by_animal)
        if not rules:
            return []
        keys = [(r["rule_id"], animal) for animal, rs in rules.items() for r in rs]
        stored = self.repo.rule_states(keys)
        states = {k: RuleState(s["above_since"], s["below_since"], bool(s["raised"])) for k, s in stored.items()}
        names = {animal: self.repo.animal(animal)["name"] for animal in rules}
        events: list[AnimalAlert] = []
        changed: dict[tuple[int, int], dict[str, Any]] = {}
        for animal, rs in rules.items():
            for rule in rs:
                key = (rule["rule_id"], animal)
                state = states.get(key, RuleState())
                for w in by_animal[animal]:
                    state, event = step(
                        state, rule["threshold"], rule["duration_s"], w.window_start, w.window_end, w.score
                    )
                    if event:
                        alert_id = self.repo.record_server_alert(
                            event,
                            w.device,
                            w.box,
                            animal,
                            rule["rule_id"],
                            w.window_end,
                            rule["threshold"],
                            rule["duration_s"],
                            w.score,
                            received_at,
                        )
                        events.append(
                            AnimalAlert(
                                alert_id=alert_id,
                                animal_id=animal,
                                animal=names[animal],
                                event=event,
                                time=utc_iso(w.window_end),
                                device=w.device,
                                box=w.box,
                                rule_id=rule["rule_id"],
                                threshold=rule["threshold"],
                                duration_s=rule["duration_s"],
                                score=w.score,
                            )
                        )
                if state != states.get(key, RuleState()):
                    changed[key] = {
                        "above_since": state.above_since,
                        "below_since": state.below_since,
                        "raised": state.raised,
                    }
        self.repo.record_rule_states(changed)
        return events

    def _any_rules(self) -> bool:
        return self.repo.db.execute("SELECT 1 FROM alert_rules WHERE enabled = 1 LIMIT 1").fetchone() is not None

    def _windows_by_animal(self, windows: Sequence[StoredWindow]) -> dict[int, list[StoredWindow]]:
        """Map windows to animals through the assignments of their boxes, each list in time order."""
        spans: dict[tuple[str, int], list[dict[str, Any]]] = {}
        out: dict[int, list[StoredWindow]] = defaultdict(list)
        for w in windows:
            key = (w.device, w.box)
            if key not in spans:
                spans[key] = self.repo.assignments(device=w.device, box=w.box)
            for a in spans[key]:
                if a["start_time"] <= w.window_start and (a["end_time"] is None or w.window_start < a["end_time"]):
                    out[a["animal_id"]].append(w)
                    break
        for ws in out.values():
            ws.sort(key=lambda w: (w.window_start, w.seq))
        return out
