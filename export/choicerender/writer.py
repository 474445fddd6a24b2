"""Writes the choice renderer's frames as a dataset folder (docs/dataset.md)."""

from __future__ import annotations

from pathlib import Path

from export.choicerender.scene import render_frame
from export.rendered import save_rendered, write_frames

RATER = "choice-render"


def _write_frame(out: Path, seed: int, index: int) -> str:
    """Render frame `index`, save its image and mask, return its label line."""
    return save_rendered(out, f"choice_{index:06d}.png", render_frame(seed, index), RATER)


def write_choice(out: Path, frames: int, seed: int, progress: bool = True, workers: int = 1) -> Path:
    """Render `frames` frames into the new or empty folder `out` and return it."""
    info = {
        "source": "choice renderer (export/choicerender): synthetic frames for choosing between model variants only",
        "description": "never train on these frames; they are not an acceptance set",
        "generator": {"renderer": "export.choicerender", "seed": seed, "frames": frames},
    }
    return write_frames(out, frames, seed, _write_frame, info, progress, workers)
