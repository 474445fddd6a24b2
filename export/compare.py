"""Old model against new on the same labelled frames: the figures a fine-tune is judged by.

Both models run over the same frames in the same order (`export.evaluate.evaluate`), so the
regressor-only pairs are the same eyes for both and their MAE difference gets a paired bootstrap
interval (resampling eyes; the two eyes of one face are not independent, so read it as a
lower bound on the uncertainty). The other rows are the difference of two point estimates: the
pipelines find different eyes with different models, so there is nothing to pair.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from export.metrics import format_value

BOOTSTRAP_RESAMPLES = 2000


def summary(report: dict[str, Any]) -> dict[str, float | int | None]:
    """The headline figures of one evaluate report, flat: `<section> <metric>` -> value."""
    ro = report["regressor_only"]
    out: dict[str, float | int | None] = {
        "regressor-only MAE": ro["mae"],
        "regressor-only r": ro["pearson_r"],
        "regressor-only ICC(2,1)": ro["icc_2_1"],
        "regressor-only eyes": ro["n"],
    }
    for kind, d in report["detection"].items():
        e2e = report["end_to_end"][kind]
        op = report["abstention"][kind]["operating_point"]
        out[f"{kind} eye recall"] = d["recall"]
        out[f"{kind} eye precision"] = d["precision"]
        out[f"{kind} end-to-end MAE"] = e2e["mae"]
        out[f"{kind} end-to-end r"] = e2e["pearson_r"]
        out[f"{kind} scored-eye recall"] = op["recall"]
        out[f"{kind} scored-eye MAE"] = op["mae"]
        severe = d.get("by_true_score", {}).get("6-9", {})
        out[f"{kind} eye recall, true score 6-9"] = severe.get("recall")
    return out


def paired_mae_difference(
    new_pred: np.ndarray, old_pred: np.ndarray, true: np.ndarray, seed: int = 0
) -> dict[str, float | None]:
    """MAE(new) - MAE(old) on the same eyes with a 95 % percentile bootstrap interval."""
    new_err = np.abs(np.asarray(new_pred, float) - true)
    old_err = np.abs(np.asarray(old_pred, float) - true)
    if new_err.size < 2:
        return {"difference": float(new_err.mean() - old_err.mean()) if new_err.size else None, "ci95": None}
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, new_err.size, (BOOTSTRAP_RESAMPLES, new_err.size))
    diffs = new_err[idx].mean(1) - old_err[idx].mean(1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"difference": float(new_err.mean() - old_err.mean()), "ci95": [float(lo), float(hi)]}


def compare(new: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The comparison section: both models' figures, new minus baseline, and the paired MAE interval."""
    a, b = summary(new), summary(baseline)
    diff = {k: (a[k] - b[k]) if a[k] is not None and b[k] is not None else None for k in a}
    out: dict[str, Any] = {
        "new": {"models": new.get("models"), **a},
        "baseline": {"models": baseline.get("models"), **b},
        "difference": diff,
        "regressor_only_mae_paired": None,
    }
    pn, pb = new["_pairs"]["regressor_only"], baseline["_pairs"]["regressor_only"]
    if pn.true == pb.true and pn.true:
        out["regressor_only_mae_paired"] = paired_mae_difference(
            np.array(pn.pred), np.array(pb.pred), np.array(pn.true)
        )
    return out


def format_comparison(comparison: dict[str, Any]) -> str:
    """A table for the terminal: one row per figure, baseline, new and the difference."""

    rows = [f"  {'':28s} {'baseline':>9s} {'new':>9s} {'new-base':>9s}"]
    for key, new_value in comparison["new"].items():
        if key == "models":
            continue
        rows.append(
            f"  {key:28s} {format_value(comparison['baseline'][key]):>9s} {format_value(new_value):>9s} "
            f"{format_value(comparison['difference'][key]):>9s}"
        )
    paired = comparison["regressor_only_mae_paired"]
    if paired and paired["ci95"]:
        lo, hi = paired["ci95"]
        rows.append(f"  regressor-only MAE difference, paired 95% bootstrap interval [{lo:+.3f}, {hi:+.3f}]")
    return "\n".join(rows)
