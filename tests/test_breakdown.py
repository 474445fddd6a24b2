"""Metrics by condition and the style-held-out view, checked by hand on a tiny made-up dataset."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.results import EyeScore
from export.breakdown import ConditionBreakdown, Grouping, format_table, training_ranges
from export.dataset import open_dataset
from export.evaluate import SeverityRecall, score_box
from mgs_core.errors import MgsError

MATCH_PX = 8.0
REGRESSOR = {2.0: 2.5, 4.0: 4.0, 6.0: 6.0, 8.0: 8.0}  # true score -> regressor prediction


def _eye(x: float, score: float) -> dict:
    return {"x": x, "y": 10.0, "score": score, "visible": True}


def _write(root: Path, lines: list[dict]) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"format": "mgs-rack-dataset", "version": 1}))
    for line in lines:
        cv2.imwrite(str(root / line["image"]), np.zeros((40, 120, 3), np.uint8))
    (root / "labels.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    return root


def _box(n: int, x: int, fur: str, width: int, eyes: list[dict]) -> dict:
    return {
        "box": n,
        "roi": [x, 0, 40, 40],
        "face_visible": bool(eyes),
        "eyes": eyes,
        "conditions": {"fur": fur, "box_width_px": width},
    }


@pytest.fixture
def data(tmp_path: Path):
    a = {
        "image": "images/a.png",
        "conditions": {"lighting": "dim", "blur_px": 1.0},
        "boxes": [_box(0, 0, "albino", 100, [_eye(10, 2), _eye(30, 4)]), _box(1, 60, "black", 200, [_eye(70, 6)])],
    }
    b = {
        "image": "images/b.png",
        "conditions": {"lighting": "even", "blur_px": 2.0},
        "boxes": [_box(0, 0, "albino", 300, [_eye(10, 8)]), _box(1, 60, "black", 400, [])],
    }
    return open_dataset(_write(tmp_path / "eval", [a, b]))


def _run(data) -> ConditionBreakdown:
    """Detections: frame a finds eye 1 (score 3) and eye 3 (score 6) plus a false eye, misses eye 2;
    frame b finds eye 4 (score 5) and a false eye in the empty box. Regressor: 2.5, 4, 6, 8."""
    detections = {
        ("images/a.png", 0): [EyeScore(10, 11, 3.0)],
        ("images/a.png", 1): [EyeScore(70, 10, 6.0), EyeScore(100, 30, 1.0)],
        ("images/b.png", 0): [EyeScore(10, 10, 5.0)],
        ("images/b.png", 1): [EyeScore(80, 20, 2.0)],
    }
    breakdown = ConditionBreakdown(["fast"])
    for frame in data.frames:
        for box in frame.boxes:
            score_box(
                detections[(frame.image, box.box)], list(box.eyes), MATCH_PX, *breakdown.tally("fast", frame, box)
            )
        eyes = [e for b in frame.boxes for e in b.eyes]
        breakdown.regressor(frame, eyes, [REGRESSOR[e.score] for e in eyes])
    return breakdown


def _group(report: dict, level: str, key: str, value: str) -> dict:
    return next(g for g in report[level][key] if g["value"] == value)


def test_breakdown_by_box_and_frame_conditions(data) -> None:
    report = _run(data).report()
    assert report["all"]["fast"] == {
        "tp": 3,
        "fp": 2,
        "fn": 1,
        "precision": 0.6,
        "recall": 0.75,
        "n": 3,
        "mae": pytest.approx(4 / 3),
    }
    albino = _group(report, "box", "fur", "albino")
    assert (albino["boxes"], albino["frames"], albino["true_visible_eyes"]) == (2, 2, 3)
    assert albino["fast"]["precision"] == 1.0 and albino["fast"]["recall"] == pytest.approx(2 / 3)
    assert albino["fast"]["mae"] == pytest.approx(2.0)
    assert albino["regressor_only"] == {"n": 3, "mae": pytest.approx(0.5 / 3)}
    black = _group(report, "box", "fur", "black")
    assert (
        black["fast"]["precision"] == pytest.approx(1 / 3)
        and black["fast"]["recall"] == 1.0
        and black["fast"]["mae"] == 0.0
    )
    dim = _group(report, "frame", "lighting", "dim")
    assert (dim["fast"]["tp"], dim["fast"]["fp"], dim["fast"]["fn"]) == (2, 1, 1) and dim["fast"][
        "mae"
    ] == pytest.approx(0.5)
    even = _group(report, "frame", "lighting", "even")
    assert (
        even["fast"]["recall"] == 1.0 and even["fast"]["precision"] == 0.5 and even["fast"]["mae"] == pytest.approx(3.0)
    )
    assert [g["value"] for g in report["box"]["box_width_px"]] == ["100", "200", "300", "400"]
    assert [g["value"] for g in report["frame"]["blur_px"]] == ["1", "2"]
    table = format_table(report, ["fast"])
    assert "box.fur" in table and "frame.lighting" in table and "albino" in table


def test_recall_by_true_score_shows_the_missed_and_unscorable_pain(data) -> None:
    """Frame a: eyes of score 2 and 6 found (the 6 not scorable), the 4 missed; frame b: the 8 found."""
    detections = {
        ("images/a.png", 0): [EyeScore(10, 11, 3.0)],
        ("images/a.png", 1): [EyeScore(70, 10, 6.0, quality_ok=False, abstained=True)],
        ("images/b.png", 0): [EyeScore(10, 10, 5.0)],
        ("images/b.png", 1): [],
    }
    severity = SeverityRecall()
    for frame in data.frames:
        for box in frame.boxes:
            severity.add(detections[(frame.image, box.box)], list(box.eyes), MATCH_PX)
    report = severity.report()
    assert report["0-3"] == {"n": 1, "found": 1, "scored": 1, "recall": 1.0, "scored_recall": 1.0}
    assert report["3-6"] == {"n": 1, "found": 0, "scored": 0, "recall": 0.0, "scored_recall": 0.0}
    assert report["6-9"] == {"n": 2, "found": 2, "scored": 1, "recall": 1.0, "scored_recall": 0.5}


def test_many_numeric_values_fall_into_equal_count_bins() -> None:
    grouping = Grouping(list(range(1, 10)))
    labels = [grouping.label(v) for v in range(1, 10)]
    assert grouping.order == ["[1, 3.67)", "[3.67, 6.33)", "[6.33, 9]"]
    assert [labels.count(o) for o in grouping.order] == [3, 3, 3]
    assert Grouping([True, False, True]).order == ["false", "true"]
    still = Grouping([0.0] * 10 + list(range(1, 10)))  # motion blur: most mice still
    assert still.order == ["0", "[1, 3.67)", "[3.67, 6.33)", "[6.33, 9]"]
    assert still.label(0) == "0" and still.label(2) == "[1, 3.67)" and still.label(9) == "[6.33, 9]"


def test_style_holdout_splits_boxes_by_training_ranges(data, tmp_path: Path) -> None:
    train = {
        "image": "images/t.png",
        "conditions": {"lighting": "dim"},
        "boxes": [_box(0, 0, "albino", 100, []), _box(1, 60, "albino", 250, [])],
    }
    seen = training_ranges(open_dataset(_write(tmp_path / "train", [train])))
    assert seen["box"] == {"fur": {"values": ["albino"]}, "box_width_px": {"min": 100.0, "max": 250.0}}
    holdout = _run(data).report(seen)["style_holdout"]
    assert holdout["seen"]["boxes"] == 1 and holdout["seen"]["fast"]["recall"] == 0.5  # frame a, box 0 only
    assert holdout["held_out"]["boxes"] == 3
    assert holdout["outside_by_key"]["box.fur"]["boxes"] == 2
    assert holdout["outside_by_key"]["box.box_width_px"]["boxes"] == 2
    assert holdout["outside_by_key"]["frame.lighting"]["boxes"] == 2  # frame b is lit "even"


def test_training_set_without_conditions_is_refused(tmp_path: Path) -> None:
    plain = open_dataset(_write(tmp_path / "plain", [{"image": "images/p.png", "boxes": []}]))
    with pytest.raises(MgsError, match="no conditions"):
        training_ranges(plain)


def test_evaluate_reports_the_breakdown_consistent_with_its_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from export.cli import main as mgs_export

    frames = tmp_path / "frames"
    assert mgs_export(["render-independent", "--out", str(frames), "--frames", "1", "--seed", "3", "--quiet"]) == 0
    out = tmp_path / "report"
    assert (
        mgs_export(
            [
                "evaluate",
                "--data",
                str(frames),
                "--out",
                str(out),
                "--runtime",
                "int8",
                "--pipeline",
                "fast",
                "--train-data",
                str(frames),
                "--quiet",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "box.fur" in printed
    assert "where the true eyes went" in printed
    assert "what became of the found eyes" in printed
    report = json.loads((out / "report.json").read_text())
    by = report["by_condition"]
    assert by["all"]["fast"]["tp"] == report["detection"]["fast"]["tp"]
    assert by["all"]["fast"]["fp"] == report["detection"]["fast"]["fp"]
    assert by["all"]["regressor_only"]["n"] == report["regressor_only"]["n"]
    for groups in by["box"].values():
        assert sum(g["boxes"] for g in groups) == by["all"]["boxes"]
        assert sum(g["fast"]["tp"] + g["fast"]["fn"] for g in groups) == report["true_visible_eyes"]
    assert by["style_holdout"]["seen"]["boxes"] == by["all"]["boxes"]  # evaluated on its own training ranges
    bands = report["detection"]["fast"]["by_true_score"].values()
    assert sum(b["found"] for b in bands) <= report["detection"]["fast"]["tp"]
    assert sum(b["n"] for b in bands) == report["regressor_only"]["n"]
    lost = report["detection"]["fast"]["lost_at"]
    assert lost["found"]["n"] == report["detection"]["fast"]["tp"]
    assert sum(v["n"] for v in lost.values()) == report["true_visible_eyes"]
    for stage, reasons in report["detection"]["fast"]["lost_why"].items():
        assert sum(reasons.values()) == lost[stage]["n"]
    found_as = report["detection"]["fast"]["found_as"]
    assert sum(v["n"] for v in found_as.values()) == report["detection"]["fast"]["tp"]
