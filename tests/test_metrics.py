"""Accuracy measures against values computed by hand or published worked examples."""

from __future__ import annotations

import numpy as np
import pytest

from export.metrics import (
    bland_altman,
    confusion_matrix,
    icc_2_1,
    iou_from_confusion,
    mae,
    mae_per_bin,
    match_points,
    mean_difference,
    pearson_r,
    precision_recall,
    score_agreement,
)


def test_icc_2_1_matches_shrout_fleiss_worked_example() -> None:
    # Shrout & Fleiss (1979), Table 2: 6 targets x 4 judges; ICC(2,1) = .29 in the paper.
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]], float)
    assert icc_2_1(ratings) == pytest.approx(0.2898, abs=1e-4)


def test_icc_2_1_penalises_constant_offset_unlike_pearson() -> None:
    # Hand-computed: MS_rows = 10/3, MS_cols = 2, MS_err = 0 -> (10/3) / (10/3 + 2*2/4) = 10/13.
    ratings = np.array([[1, 2], [2, 3], [3, 4], [4, 5]], float)
    assert icc_2_1(ratings) == pytest.approx(10 / 13)
    assert pearson_r(ratings[:, 0], ratings[:, 1]) == pytest.approx(1.0)
    assert icc_2_1(np.array([[1, 1], [2, 2], [3, 3]], float)) == pytest.approx(1.0)


def test_iou_per_class_by_hand() -> None:
    true = np.array([[0, 0, 3, 3], [1, 1, 3, 0]])
    pred = np.array([[0, 3, 3, 0], [1, 2, 3, 0]])
    iou = iou_from_confusion(confusion_matrix(pred, true, 4))
    # class 0: inter 2 (0,0),(1,3); union |{(0,0),(0,1),(0,3),(1,3)}| = 4
    # class 1: inter 1, union 2; class 2: inter 0, union 1; class 3: inter 2, union 4
    assert iou == pytest.approx([2 / 4, 1 / 2, 0.0, 2 / 4])
    assert iou_from_confusion(confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2)), 4))[3] is None


def test_match_points_pairs_closest_first_within_radius() -> None:
    pred = [(10, 10), (50, 50), (100, 100)]
    true = [(12, 10), (11, 10), (300, 300)]
    pairs = match_points(pred, true, max_dist=8)
    assert pairs == [(0, 1)]
    assert match_points([], true, 8) == []
    p, r = precision_recall(tp=1, fp=2, fn=2)
    assert (p, r) == (pytest.approx(1 / 3), pytest.approx(1 / 3))
    assert precision_recall(0, 0, 0) == (None, None)


def test_score_agreement_by_hand() -> None:
    pred = np.array([1.0, 3.0, 5.0, 8.0])
    true = np.array([2.0, 3.0, 4.0, 9.0])
    assert mae(pred, true) == pytest.approx(0.75)
    assert mean_difference(pred, true) == pytest.approx(-0.25)
    ba = bland_altman(pred, true)
    sd = np.std([-1, 0, 1, -1], ddof=1)
    assert ba.sd_difference == pytest.approx(sd)
    assert (ba.lower_limit, ba.upper_limit) == (pytest.approx(-0.25 - 1.96 * sd), pytest.approx(-0.25 + 1.96 * sd))
    report = score_agreement(pred, true)
    assert report["n"] == 4 and report["mae"] == pytest.approx(0.75)
    assert score_agreement(np.array([]), np.array([]))["mae"] is None
    bins = mae_per_bin(pred, true)
    assert bins["9"] == {"n": 1, "mae": 1.0, "mean_difference": -1.0}
    assert "0" not in bins
    assert pearson_r(np.ones(3), np.arange(3)) is None
