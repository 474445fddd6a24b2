"""Accuracy measures for the report: segmentation IoU, eye detection matching, score agreement.

Numpy only, so the measures can be checked by hand in tests and reused by `evaluate` and
`crossval` alike. Score agreement follows the seed paper (MAE, mean difference, Bland-Altman)
plus Pearson r and ICC(2,1), the agreement measures published grimace-scale studies report.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def confusion_matrix(pred: np.ndarray, true: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]; summing matrices over images gives dataset-level IoU."""
    t = true.astype(np.int64).ravel()
    p = pred.astype(np.int64).ravel()
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def iou_from_confusion(cm: np.ndarray) -> list[float | None]:
    """Per-class intersection over union; None for a class absent from both truth and prediction."""
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - np.diag(cm)
    return [float(i / u) if u else None for i, u in zip(inter, union)]


def match_points(
    pred: Sequence[tuple[float, float]], true: Sequence[tuple[float, float]], max_dist: float
) -> list[tuple[int, int]]:
    """Pairs (pred index, true index), closest pairs first, each point used once, within max_dist.

    Greedy closest-first is optimal here in practice: eyes of one animal are far apart compared
    with the matching radius, so no two candidate pairs compete.
    """
    if not len(pred) or not len(true):
        return []
    p = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(true, dtype=np.float64).reshape(-1, 2)
    dist = np.linalg.norm(p[:, None, :] - t[None, :, :], axis=2)
    pairs: list[tuple[int, int]] = []
    used_p: set[int] = set()
    used_t: set[int] = set()
    for flat in np.argsort(dist, axis=None, kind="stable"):
        i, j = divmod(int(flat), t.shape[0])
        if dist[i, j] > max_dist:
            break
        if i in used_p or j in used_t:
            continue
        pairs.append((i, j))
        used_p.add(i)
        used_t.add(j)
    return pairs


def precision_recall(tp: int, fp: int, fn: int) -> tuple[float | None, float | None]:
    """None where the denominator is zero (no detections / no true eyes), not a made-up 0 or 1."""
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return precision, recall


def mae(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.mean(np.abs(np.asarray(pred, float) - np.asarray(true, float))))


def mean_difference(pred: np.ndarray, true: np.ndarray) -> float:
    """Mean of prediction minus truth: negative means the model under-estimates (paper: -0.18)."""
    return float(np.mean(np.asarray(pred, float) - np.asarray(true, float)))


def pearson_r(a: np.ndarray, b: np.ndarray) -> float | None:
    """None when either side is constant (r is undefined there)."""
    a = np.asarray(a, float)
    b = np.asarray(b, float)
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.sum(da * da) * np.sum(db * db)))
    return float(np.sum(da * db) / denom) if denom else None


def icc_2_1(ratings: np.ndarray) -> float | None:
    """ICC(2,1), Shrout & Fleiss: two-way random effects, absolute agreement, single rater.

    `ratings` is [n targets, k raters]; here k = 2 (model and truth). Absolute agreement means a
    constant offset lowers the ICC, unlike Pearson r.
    """
    x = np.asarray(ratings, float)
    n, k = x.shape
    if n < 2 or k < 2:
        return None
    grand = x.mean()
    ss_rows = k * np.sum((x.mean(axis=1) - grand) ** 2)
    ss_cols = n * np.sum((x.mean(axis=0) - grand) ** 2)
    ss_err = np.sum((x - grand) ** 2) - ss_rows - ss_cols
    ms_rows = ss_rows / (n - 1)
    ms_cols = ss_cols / (k - 1)
    ms_err = ss_err / ((n - 1) * (k - 1))
    denom = ms_rows + (k - 1) * ms_err + k * (ms_cols - ms_err) / n
    return float((ms_rows - ms_err) / denom) if denom else None


@dataclass(frozen=True)
class BlandAltman:
    mean_difference: float
    sd_difference: float
    lower_limit: float
    upper_limit: float


def bland_altman(pred: np.ndarray, true: np.ndarray) -> BlandAltman:
    """Mean difference and 95 % limits of agreement (mean +- 1.96 SD of pred - truth)."""
    d = np.asarray(pred, float) - np.asarray(true, float)
    sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
    m = float(d.mean())
    return BlandAltman(m, sd, m - 1.96 * sd, m + 1.96 * sd)


def score_agreement(pred: np.ndarray, true: np.ndarray) -> dict[str, float | int | None]:
    """Everything the report states about one set of (predicted, true) score pairs."""
    pred = np.asarray(pred, float)
    true = np.asarray(true, float)
    if pred.size == 0:
        return {
            "n": 0,
            "mae": None,
            "mean_difference": None,
            "pearson_r": None,
            "icc_2_1": None,
            "sd_difference": None,
            "loa_lower": None,
            "loa_upper": None,
        }
    ba = bland_altman(pred, true)
    return {
        "n": int(pred.size),
        "mae": mae(pred, true),
        "mean_difference": ba.mean_difference,
        "pearson_r": pearson_r(pred, true),
        "icc_2_1": icc_2_1(np.stack([pred, true], axis=1)),
        "sd_difference": ba.sd_difference,
        "loa_lower": ba.lower_limit,
        "loa_upper": ba.upper_limit,
    }


def mae_per_bin(pred: np.ndarray, true: np.ndarray, lo: int = 0, hi: int = 9) -> dict[str, dict[str, float | int]]:
    """MAE per integer true-score bin (rounded truth): shows the paper's bias at the scale's ends."""
    pred = np.asarray(pred, float)
    true = np.asarray(true, float)
    bins = np.clip(np.rint(true), lo, hi).astype(int)
    out: dict[str, dict[str, float | int]] = {}
    for b in range(lo, hi + 1):
        sel = bins == b
        if sel.any():
            out[str(b)] = {
                "n": int(sel.sum()),
                "mae": mae(pred[sel], true[sel]),
                "mean_difference": mean_difference(pred[sel], true[sel]),
            }
    return out


def format_value(v: Any, digits: int = 3) -> str:
    """A figure for a terminal table: "-" for none, floats to `digits` places, anything else as is."""
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)
