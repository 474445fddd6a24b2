"""Writes rendered frames as a dataset folder in the project format (docs/dataset.md)."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import cv2
from tqdm import tqdm

from export.dataset import FORMAT, VERSION, Frame
from export.independent.scene import render_frame
from mgs_core.errors import MgsError

RATER = "independent-renderer"


def _write_frame(out: Path, seed: int, index: int) -> str:
    """Render one frame, write its image and mask; returns its labels.jsonl line."""
    rendered = render_frame(seed, index)
    name = f"indep_{seed}_{index:05d}.png"
    if not (
        cv2.imwrite(str(out / "images" / name), rendered.image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        and cv2.imwrite(str(out / "masks" / name), rendered.mask, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    ):
        raise MgsError(f"cannot write {out / 'images' / name}; check the disk space and permissions of {out}")
    frame = Frame(f"images/{name}", f"masks/{name}", rendered.boxes, (RATER,), conditions=rendered.conditions)
    return json.dumps(frame.to_json())


def write_independent(out: Path, frames: int, seed: int, progress: bool = True, workers: int = 1) -> Path:
    """Render `frames` frames from `seed` into `out` (which must be new or empty); returns `out`.

    Each frame depends only on (seed, index), so any number of worker processes writes the same files.
    """
    out = Path(out)
    if frames < 1:
        raise MgsError(f"--frames must be at least 1, got {frames}")
    if workers < 1:
        raise MgsError(f"--workers must be at least 1, got {workers}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise MgsError(f"{out} already exists and is not an empty folder; choose a new --out folder or empty this one")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(exist_ok=True)
    info = {
        "format": FORMAT,
        "version": VERSION,
        "score_scale": [0, 9],
        "source": "independent evaluation renderer (export/independent); never train on it",
        "generator": {"renderer": "export.independent", "seed": seed, "frames": frames},
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    with (
        open(out / "labels.jsonl", "w", encoding="utf-8") as labels,
        ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool,
    ):
        lines = (pool.map if pool else map)(_write_frame, [out] * frames, [seed] * frames, range(frames))
        labels.writelines(
            line + "\n" for line in tqdm(lines, total=frames, desc="render", unit="frame", disable=not progress)
        )
    return out
