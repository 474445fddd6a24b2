"""Writes the independent renderer's frames as a dataset folder in the project format (docs/dataset.md)."""

from __future__ import annotations

from pathlib import Path

from export.independent.scene import render_frame
from export.rendered import save_rendered, write_frames

RATER = "independent-renderer"


def _write_frame(out: Path, seed: int, index: int) -> str:
    """Render one frame, write its image and mask; returns its labels.jsonl line."""
    return save_rendered(out, f"indep_{seed}_{index:05d}.png", render_frame(seed, index), RATER)


def write_independent(out: Path, frames: int, seed: int, progress: bool = True, workers: int = 1) -> Path:
    """Render `frames` frames from `seed` into `out` (which must be new or empty); returns `out`."""
    info = {
        "source": "independent evaluation renderer (export/independent); never train on it",
        "generator": {"renderer": "export.independent", "seed": seed, "frames": frames},
    }
    return write_frames(out, frames, seed, _write_frame, info, progress, workers)
