"""Old model against new on the same labelled frames: the figures a fine-tune is judged by.

Both models run over the same frames in the same order (`export.evaluate.evaluate`), so the
regressor-only pairs are the same eyes for both and their MAE difference gets a paired bootstrap
interval (resampling eyes; the two eyes of one face are not independent, so read it as a
lower bound on the uncertainty). The pipelines score different eyes with different models: the
scored MAE of each mixes how well it scores with which eyes it dares to score, so a model that
scores more hard eyes can show a higher MAE while scoring every eye better. `scored_eyes` splits
the two: the eyes both score, paired as above, and the eyes only one of them scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from export.evaluate import scored_labelled_hits
from export.metrics import format_value, mae
from mgs_core.errors import MgsError

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


def scored_hits(report: dict[str, Any], kind: str) -> dict[tuple[int, int, int], tuple[float, float]]:
    """(frame, box, true eye) -> (score, true score) of every correctly found, labelled eye scored at the operating point."""
    hits = scored_labelled_hits(report["_candidates"][kind], report["abstention"][kind]["min_confidence"])
    return {c.truth: (float(c.eye.score), float(c.true_score)) for c in hits}


def score_pairs(
    scored: dict[tuple[int, int, int], tuple[float, float]], keys: Sequence[tuple[int, int, int]]
) -> np.ndarray:
    """(score, true score) rows of these eyes."""
    return np.array([scored[k] for k in keys], float).reshape(-1, 2)


def mae_of(pairs: np.ndarray) -> float | None:
    return mae(pairs[:, 0], pairs[:, 1]) if len(pairs) else None


def paired_scored_eyes(new: dict[str, Any], baseline: dict[str, Any], kind: str) -> dict[str, Any]:
    """The scored eyes of one pipeline split into both / only new / only baseline, with the paired MAE on the shared ones."""
    a, b = scored_hits(new, kind), scored_hits(baseline, kind)
    both, only_new, only_baseline = (
        sorted(a.keys() & b.keys()),
        sorted(a.keys() - b.keys()),
        sorted(b.keys() - a.keys()),
    )
    new_both, baseline_both = score_pairs(a, both), score_pairs(b, both)
    return {
        "both": len(both),
        "only_new": len(only_new),
        "only_baseline": len(only_baseline),
        "mae_both_new": mae_of(new_both),
        "mae_both_baseline": mae_of(baseline_both),
        "mae_only_new": mae_of(score_pairs(a, only_new)),
        "mae_only_baseline": mae_of(score_pairs(b, only_baseline)),
        "paired": paired_mae_difference(new_both[:, 0], baseline_both[:, 0], new_both[:, 1]),
    }


def matched_threshold(old: dict[str, Any], new: dict[str, Any], kind: str = "fast") -> tuple[float | None, dict]:
    """The highest confidence threshold, no higher than the old report's operating point, at which the new
    models score at least as many true eyes as the old ones do there (None if none); and that operating point.

    A new eye model can read eyes better and still be stricter at the old `min_confidence`, and a
    threshold matched on the validation set came out stricter still on hard frames (models/TRAINING.md,
    "Twenty-ninth step"): match on the frames the two are compared on, then judge on fresh ones."""
    try:
        point = old["abstention"][kind]["operating_point"]
        rows = new["abstention"][kind]["risk_coverage"]
    except KeyError as missing:
        raise MgsError(f"not an evaluate report with the {kind} pipeline's abstention: no {missing}") from None
    ok = [r["threshold"] for r in rows if r["threshold"] <= point["threshold"] + 1e-9 and r["hits"] >= point["hits"]]
    return (max(ok) if ok else None), point


def compare(new: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The comparison section: both models' figures, new minus baseline, and the paired MAE interval."""
    a, b = summary(new), summary(baseline)
    diff = {k: (a[k] - b[k]) if a[k] is not None and b[k] is not None else None for k in a}
    kinds = [kind for kind in new["detection"] if kind in baseline["detection"]]
    out: dict[str, Any] = {
        "new": {"models": new.get("models"), **a},
        "baseline": {"models": baseline.get("models"), **b},
        "difference": diff,
        "regressor_only_mae_paired": None,
        "scored_eyes": {kind: paired_scored_eyes(new, baseline, kind) for kind in kinds},
        "matched_min_confidence": {kind: matched_threshold(baseline, new, kind)[0] for kind in kinds},
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
    for kind, s in comparison["scored_eyes"].items():
        line = (
            f"  {kind} scored eyes: {s['both']} by both (MAE {format_value(s['mae_both_baseline'])} -> "
            f"{format_value(s['mae_both_new'])}), {s['only_new']} only by new (MAE {format_value(s['mae_only_new'])}), "
            f"{s['only_baseline']} only by baseline (MAE {format_value(s['mae_only_baseline'])})"
        )
        if s["paired"]["ci95"]:
            lo, hi = s["paired"]["ci95"]
            line += f"; paired difference on the shared eyes, 95% interval [{lo:+.3f}, {hi:+.3f}]"
        rows.append(line)
    for kind, threshold in comparison["matched_min_confidence"].items():
        rows.append(
            f"  {kind} min_confidence at which new scores as many true eyes as the baseline: "
            + ("none up to the baseline's" if threshold is None else f"{threshold:g}")
        )
    return "\n".join(rows)
