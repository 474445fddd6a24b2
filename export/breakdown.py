"""Accuracy broken down by the conditions a frame or a box was recorded or rendered under.

A dataset line may carry `conditions` for the whole frame ({"lighting": "dim"}) and for each box
({"fur": "albino", "box_width_px": 412}); see docs/dataset.md. An overall figure hides where a
model fails: black mice in dim light, small boxes, a blurred camera. So `evaluate` keeps a tally
per box and reports detection and score accuracy for every value of every condition key:
strings and bools as categories, numbers with few distinct values as categories too, other
numbers in bins of equal count (a very common value, such as 0, in a group of its own).

The style-held-out protocol (docs/generalisation.md) adds one more view: given the conditions
a model was trained on, which boxes lie inside the training ranges ("seen") and which lie
outside on at least one key ("held_out"), with the accuracy of each, and per key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from export.dataset import Box, Condition, Dataset, Eye, Frame
from export.metrics import mae, precision_recall
from mgs_core.errors import MgsError

NUMBER_BINS = 3  # equal-count bins for a numeric condition with many values
MAX_CATEGORIES = 6  # a numeric condition with at most this many distinct values is shown value by value
LEVELS = ("frame", "box")


@dataclass
class PairList:
    """(predicted, true) score pairs; `add` has the signature evaluate's box scorer calls."""

    pred: list[float] = field(default_factory=list)
    true: list[float] = field(default_factory=list)

    def add(self, p: float, t: float) -> None:
        self.pred.append(p)
        self.true.append(t)


@dataclass
class BoxTally:
    """Everything measured in one box of one frame, with the conditions it was taken under."""

    image: str
    conditions: dict[str, dict[str, Condition]]  # "frame" and "box" level
    true_visible_eyes: int
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per pipeline, the keys evaluate counts
    pairs: dict[str, PairList] = field(default_factory=dict)  # per pipeline, end-to-end
    regressor: PairList = field(default_factory=PairList)  # patches at the true eye centres


def _new_counts() -> dict[str, int]:
    return {"tp": 0, "fp": 0, "fn": 0, "detections": 0, "quality_ok": 0}


class ConditionBreakdown:
    """Collects per-box tallies during `evaluate` and turns them into the breakdown report."""

    def __init__(self, pipelines: Sequence[str]) -> None:
        self.pipelines = tuple(pipelines)
        self.tallies: dict[tuple[str, int], BoxTally] = {}

    def _tally(self, frame: Frame, box: Box) -> BoxTally:
        key = (frame.image, box.box)
        if key not in self.tallies:
            self.tallies[key] = BoxTally(
                frame.image,
                {"frame": dict(frame.conditions), "box": dict(box.conditions)},
                sum(e.visible for e in box.eyes),
                {k: _new_counts() for k in self.pipelines},
                {k: PairList() for k in self.pipelines},
            )
        return self.tallies[key]

    def tally(self, pipeline: str, frame: Frame, box: Box) -> tuple[dict[str, int], PairList]:
        """The counters and score pairs of one box for one pipeline, to be filled by the caller's scorer."""
        t = self._tally(frame, box)
        return t.counts[pipeline], t.pairs[pipeline]

    def regressor(self, frame: Frame, eyes: Sequence[Eye], preds: Iterable[float]) -> None:
        """Regressor-only predictions for eyes of `frame`, each credited to the box it belongs to."""
        for eye, pred in zip(eyes, preds):
            box = next(b for b in frame.boxes if any(eye is e for e in b.eyes))
            self._tally(frame, box).regressor.add(float(pred), float(eye.score))

    def report(self, seen: dict[str, dict[str, dict]] | None = None) -> dict[str, Any]:
        """{"frame": {key: [group, ...]}, "box": {...}}, plus "style_holdout" when training ranges are given."""
        tallies = list(self.tallies.values())
        out: dict[str, Any] = {"all": self.metrics(tallies)}
        for level in LEVELS:
            keys = sorted({k for t in tallies for k in t.conditions[level]})
            out[level] = {key: self._groups(tallies, level, key) for key in keys}
        if seen is not None:
            out["style_holdout"] = self.style_holdout(tallies, seen)
        return out

    def _groups(self, tallies: list[BoxTally], level: str, key: str) -> list[dict[str, Any]]:
        having = [t for t in tallies if key in t.conditions[level]]
        if level == "frame":  # bin edges over frames, not over boxes, so a frame with four boxes counts once
            values = list({t.image: t.conditions[level][key] for t in having}.values())
        else:
            values = [t.conditions[level][key] for t in having]
        grouping = Grouping(values)
        groups: dict[str, list[BoxTally]] = {label: [] for label in grouping.order}
        for t in having:
            groups[grouping.label(t.conditions[level][key])].append(t)
        return [{"value": label, **self.metrics(ts)} for label, ts in groups.items() if ts]

    def metrics(self, tallies: list[BoxTally]) -> dict[str, Any]:
        """Detection and score accuracy summed over the given boxes."""
        out: dict[str, Any] = {
            "frames": len({t.image for t in tallies}),
            "boxes": len(tallies),
            "true_visible_eyes": sum(t.true_visible_eyes for t in tallies),
        }
        for kind in self.pipelines:
            c = {k: sum(t.counts[kind][k] for t in tallies) for k in ("tp", "fp", "fn")}
            precision, recall = precision_recall(c["tp"], c["fp"], c["fn"])
            pred = [p for t in tallies for p in t.pairs[kind].pred]
            true = [v for t in tallies for v in t.pairs[kind].true]
            out[kind] = {
                **c,
                "precision": precision,
                "recall": recall,
                "n": len(pred),
                "mae": mae(pred, true) if pred else None,
            }
        pred = [p for t in tallies for p in t.regressor.pred]
        true = [v for t in tallies for v in t.regressor.true]
        out["regressor_only"] = {"n": len(pred), "mae": mae(pred, true) if pred else None}
        return out

    def style_holdout(self, tallies: list[BoxTally], seen: dict[str, dict[str, dict]]) -> dict[str, Any]:
        """Boxes inside every training range vs boxes outside at least one, and per key."""
        outside: dict[str, list[BoxTally]] = {}
        held: list[BoxTally] = []
        inside: list[BoxTally] = []
        for t in tallies:
            off = [
                f"{level}.{key}"
                for level in LEVELS
                for key, rng in seen.get(level, {}).items()
                if key in t.conditions[level] and not in_range(t.conditions[level][key], rng)
            ]
            for k in off:
                outside.setdefault(k, []).append(t)
            (held if off else inside).append(t)
        return {
            "ranges": seen,
            "seen": self.metrics(inside),
            "held_out": self.metrics(held),
            "outside_by_key": {k: self.metrics(v) for k, v in sorted(outside.items())},
        }


class Grouping:
    """How the values of one condition key are grouped.

    Text and bools: one group per value. Numbers: one group per value when there are few; else a
    value shared by at least 1/NUMBER_BINS of them (motion blur 0 = a still mouse) keeps its own
    group and the others fall into equal-count bins, so a common value does not swallow a bin.
    """

    def __init__(self, values: list[Condition]) -> None:
        self.exact: set[float] = set()
        self.edges: list[float] = []
        if not all(_is_number(v) for v in values):
            self.order = sorted({_text(v) for v in values})
            return
        numbers = [float(v) for v in values]
        counts = Counter(numbers)
        if len(counts) <= MAX_CATEGORIES:
            self.exact = set(counts)
        else:
            self.exact = {v for v, c in counts.items() if c >= len(numbers) / NUMBER_BINS}
            rest = [v for v in numbers if v not in self.exact]
            if len(set(rest)) <= MAX_CATEGORIES:
                self.exact |= set(rest)
            else:
                self.edges = sorted({float(q) for q in np.quantile(rest, np.linspace(0, 1, NUMBER_BINS + 1))})
        keyed = [(v, _fmt(v)) for v in self.exact] + [
            (self.edges[i], self._bin_label(i)) for i in range(len(self.edges) - 1)
        ]
        self.order = [label for _, label in sorted(keyed)]

    def _bin_label(self, i: int) -> str:
        close = "]" if i == len(self.edges) - 2 else ")"
        return f"[{_fmt(self.edges[i])}, {_fmt(self.edges[i + 1])}{close}"

    def label(self, value: Condition) -> str:
        if not _is_number(value) or float(value) in self.exact or len(self.edges) < 2:
            return _text(value)
        i = int(np.searchsorted(self.edges, float(value), side="right")) - 1
        return self._bin_label(min(max(i, 0), len(self.edges) - 2))


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt(v: float) -> str:
    """Short labels: whole numbers from 100 up, three significant digits below."""
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _text(v: Condition) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return v if isinstance(v, str) else _fmt(float(v))


def in_range(value: Condition, rng: dict) -> bool:
    """Whether a value lies inside a training range: {"min", "max"} for numbers, {"values"} otherwise."""
    if "values" in rng:
        return _text(value) in rng["values"]
    return _is_number(value) and rng["min"] <= float(value) <= rng["max"]


def training_ranges(dataset: Dataset) -> dict[str, dict[str, dict]]:
    """What the training set covers, per level and key: min/max of numbers, the set of other values."""
    values: dict[str, dict[str, list[Condition]]] = {level: {} for level in LEVELS}
    for frame in dataset.frames:
        for key, v in frame.conditions.items():
            values["frame"].setdefault(key, []).append(v)
        for box in frame.boxes:
            for key, v in box.conditions.items():
                values["box"].setdefault(key, []).append(v)
    if not any(values.values()):
        raise MgsError(
            f"{dataset.root} has no conditions on its labels, so there is no training range to compare with; "
            "pass the training set as rendered with its conditions (docs/generalisation.md)"
        )
    out: dict[str, dict[str, dict]] = {level: {} for level in LEVELS}
    for level, keys in values.items():
        for key, vs in keys.items():
            if all(_is_number(v) for v in vs):
                out[level][key] = {"min": float(min(vs)), "max": float(max(vs))}
            else:
                out[level][key] = {"values": sorted({_text(v) for v in vs})}
    return out


def format_table(breakdown: dict[str, Any], pipelines: Sequence[str]) -> str:
    """A fixed-width table: one row per condition value, recall/precision/MAE per pipeline."""
    head = f"{'condition':28s} {'value':>18s} {'boxes':>5s} {'eyes':>5s}"
    for kind in pipelines:
        head += f"  {kind + ' R':>7s} {'P':>5s} {'MAE':>5s}"
    head += f"  {'reg MAE':>7s}"
    lines = [head, "-" * len(head)]

    def row(name: str, value: str, m: dict[str, Any]) -> str:
        text = f"{name[:28]:28s} {value[:18]:>18s} {m['boxes']:5d} {m['true_visible_eyes']:5d}"
        for kind in pipelines:
            d = m[kind]
            text += f"  {_num(d['recall']):>7s} {_num(d['precision']):>5s} {_num(d['mae']):>5s}"
        return text + f"  {_num(m['regressor_only']['mae']):>7s}"

    lines.append(row("all", "", breakdown["all"]))
    for level in LEVELS:
        for key, groups in breakdown.get(level, {}).items():
            for g in groups:
                lines.append(row(f"{level}.{key}", g["value"], g))
    holdout = breakdown.get("style_holdout")
    if holdout:
        lines.append("")
        lines.append("style held out (training ranges from --train-data):")
        lines.append(row("seen", "inside all", holdout["seen"]))
        lines.append(row("held_out", "outside any", holdout["held_out"]))
        for key, m in holdout["outside_by_key"].items():
            lines.append(row(key, "outside", m))
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"
