"""The paper's K-fold cross-validation of the eye regressor (it used 30 folds on 314 images).

Folds are split by IMAGE, never by eye: the two eyes of one animal in one frame look alike and
share a score, so splitting by eye would leak the answer into training. Every fold trains a fresh
regressor with the given recipe; predictions on the held-out images are pooled and reported with
the same measures as `evaluate` (regressor-only: patches at the true eye centres).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.metrics import mae, mae_per_bin, score_agreement
from export.train.eye import EyeRecipe, centre_patches, predict, train_eye
from export.train.samples import EyeSamples
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)


def image_folds(image_ids: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """K disjoint sets of image ids, as equal in size as possible."""
    images = np.unique(image_ids)
    if k < 2 or k > len(images):
        raise MgsError(f"--folds {k}: need between 2 and the number of labelled images ({len(images)})")
    rng = np.random.default_rng(seed)
    return [np.sort(f) for f in np.array_split(rng.permutation(images), k)]


def crossval(
    samples: EyeSamples, k: int, recipe: EyeRecipe, device: torch.device, work_dir: Path, progress: bool = True
) -> dict[str, Any]:
    """Train K regressors, each tested on its held-out images; returns the pooled report."""
    pred = np.full(len(samples), np.nan, np.float32)
    fold_of = np.full(len(samples), -1)
    folds = []
    for f, held_out in enumerate(image_folds(samples.image_ids, k, recipe.seed)):
        test = np.isin(samples.image_ids, held_out)
        module, history = train_eye(
            samples.subset(np.flatnonzero(~test)), recipe, work_dir / f"fold{f}.pt", device, progress=progress
        )
        pred[test] = np.clip(predict(module, centre_patches(samples.regions[test]), device), 0, 9)
        fold_of[test] = f
        folds.append(
            {
                "fold": f,
                "test_images": int(len(held_out)),
                "test_eyes": int(test.sum()),
                "mae": mae(pred[test], samples.scores[test]),
                "final_train_loss": history[-1]["loss"],
            }
        )
        log.info("fold %d/%d: %d eyes, MAE %.3f", f + 1, k, test.sum(), folds[-1]["mae"])
    return {
        "folds": k,
        "recipe": asdict(recipe),
        "eyes": len(samples),
        "images": int(len(np.unique(samples.image_ids))),
        "pooled": score_agreement(pred, samples.scores),
        "per_true_score": mae_per_bin(pred, samples.scores),
        "fold_mae_mean": float(np.mean([f["mae"] for f in folds])),
        "fold_mae_sd": float(np.std([f["mae"] for f in folds], ddof=1)) if k > 1 else 0.0,
        "per_fold": folds,
        "_pred": pred,
        "_true": samples.scores,
    }


def write_crossval(report: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from export.evaluate import bland_altman_axes, pred_vs_true_axes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    bland_altman_axes(axes[0], report["_pred"], report["_true"], f"{report['folds']}-fold CV")
    pred_vs_true_axes(axes[1], report["_pred"], report["_true"], f"{report['folds']}-fold CV")
    fig.tight_layout()
    fig.savefig(out_dir / "crossval.png", dpi=110)
    plt.close(fig)
    path = out_dir / "crossval.json"
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    clean["plots"] = ["crossval.png"]
    path.write_text(json.dumps(clean, indent=2) + "\n")
    return path
