"""Fit the eye confidence model (device.eyes.SHIPPED_CONFIDENCE) and its threshold on a validation set.

Runs both pipelines over a labelled dataset through `export.evaluate` (the fast one is what the
device runs; the full-resolution one adds candidates, wrong ones especially), takes every eye that
passed the blur and border checks, labels it good when it matches a visible true eye whose score
it gets within `--tolerance`, and fits a logistic regression over `device.eyes.cue_vector`. The
orientation-spread gate starts at the `--spread-percentile` percentile of the good eyes and reaches
zero `--spread-width` below it. Prints the model to paste into device/eyes.py and the threshold
chosen by the rule below. Run it on the validation set only: a held-out set used here is no longer
held out.

Threshold rule: the highest threshold that still scores at least `--keep` of the good eyes of the
fast pipeline, so abstention costs a known, small share of recall.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from device.eyes import CUE_NAMES, ConfidenceModel, cue_vector
from export.dataset import open_dataset
from export.evaluate import Candidate, EvalOptions, evaluate, onnx_runners


def labels(candidates: list[Candidate], tolerance: float) -> np.ndarray:
    return np.array(
        [c.hit and (c.true_score is None or abs(c.eye.score - c.true_score) <= tolerance) for c in candidates], float
    )


def fit_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1.0, iterations: int = 50
) -> tuple[tuple[float, ...], float]:
    """Newton's method on standardised features with an L2 penalty, folded back to raw-feature (weights, bias)."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std[std == 0] = 1.0
    z = np.hstack([np.ones((len(x), 1)), (x - mean) / std])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    weights = w[1:] / std
    return tuple(round(float(v), 5) for v in weights), round(float(w[0] - np.dot(weights, mean)), 5)


def choose_threshold(confidence: np.ndarray, good: np.ndarray, keep: float) -> float:
    """The highest threshold (0.05 steps) that still keeps `keep` of the good eyes."""
    best = 0.0
    for t in np.arange(0.0, 1.0, 0.05):
        if good.sum() and (good * (confidence >= t)).sum() >= keep * good.sum():
            best = float(t)
    return round(best, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, required=True, help="validation dataset (mgs-export synth --frames 100 --seed 5000)"
    )
    parser.add_argument(
        "--models", type=Path, default=Path("models"), help="folder with manifest.json and the ONNX files"
    )
    parser.add_argument("--runtime", choices=["int8", "fp32"], default="int8")
    parser.add_argument(
        "--tolerance", type=float, default=1.5, help="a good eye is scored within this many points of the truth"
    )
    parser.add_argument(
        "--keep", type=float, default=0.98, help="share of the good eyes the chosen threshold must still score"
    )
    parser.add_argument(
        "--spread-percentile",
        type=float,
        default=1.0,
        help="the gate is fully open above this percentile of the good eyes' orientation spread",
    )
    parser.add_argument("--spread-width", type=float, default=0.15, help="the gate closes this far below")
    args = parser.parse_args()
    models, _ = onnx_runners(args.models, args.runtime)
    report = evaluate(open_dataset(args.data), models, EvalOptions(pipelines=("fast", "full"), progress=False))
    candidates: list[Candidate] = report["_candidates"]["fast"] + report["_candidates"]["full"]
    x = np.stack([cue_vector(c.eye.cues) for c in candidates])
    y = labels(candidates, args.tolerance)
    weights, bias = fit_logistic(x, y)
    spread_full = round(
        float(
            np.percentile(
                [c.eye.cues.orientation_spread for c, good in zip(candidates, y) if good], args.spread_percentile
            )
        ),
        3,
    )
    model = ConfidenceModel(weights, bias, spread_full, round(spread_full - args.spread_width, 3))
    fast = report["_candidates"]["fast"]
    y_fast = labels(fast, args.tolerance)
    confidence = np.array([model(c.eye.cues) for c in fast])
    threshold = choose_threshold(confidence, y_fast, args.keep)
    print(
        json.dumps(
            {
                "candidates": len(candidates),
                "good": int(y.sum()),
                "cues": CUE_NAMES,
                "model": repr(model),
                "min_confidence": threshold,
                "fast_false_kept": int(((1 - y_fast) * (confidence >= threshold)).sum()),
                "fast_false": int((1 - y_fast).sum()),
            },
            indent=1,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
