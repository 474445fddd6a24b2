"""A renderer's frames as a dataset folder (docs/dataset.md): what every renderer's writer shares.

Each frame depends only on (seed, index), so frames are rendered in any number of worker processes
and their label lines gathered back in index order: the files do not depend on --workers.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from export.dataset import FORMAT, VERSION, Box, Condition, Frame, describe_counts, validate_dataset
from mgs_core.errors import MgsError

# (out, seed, index) -> the frame's labels.jsonl line, after writing its image and mask
FrameWriter = Callable[[Path, int, int], str]


@dataclass
class RenderedFrame:
    """What a renderer draws for one frame: the picture, its class mask and its labels."""

    image: np.ndarray  # BGR uint8
    mask: np.ndarray  # class ids
    boxes: tuple[Box, ...]
    conditions: dict[str, Condition]


def write_frames(
    out: Path,
    frames: int,
    seed: int,
    write_frame: FrameWriter,
    info: dict[str, Any],
    progress: bool = True,
    workers: int = 1,
) -> Path:
    """Render `frames` frames from `seed` into `out` (new or empty) with `write_frame`; returns `out`.

    `info` adds to dataset.json (source, description, generator). `write_frame` must be a
    module-level function, so worker processes can run it.
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
    dataset = {"format": FORMAT, "version": VERSION, "score_scale": [0, 9], **info}
    (out / "dataset.json").write_text(json.dumps(dataset, indent=2) + "\n")
    with (
        open(out / "labels.jsonl", "w", encoding="utf-8") as labels,
        ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool,
    ):
        lines = (pool.map if pool else map)(write_frame, [out] * frames, [seed] * frames, range(frames))
        labels.writelines(
            line + "\n" for line in tqdm(lines, total=frames, desc="render", unit="frame", disable=not progress)
        )
    return out


def save_rendered(out: Path, name: str, frame: RenderedFrame, rater: str) -> str:
    """images/NAME and masks/NAME as fast-compressed PNG, and the frame's labels.jsonl line; a failed
    write (full disk) stops the run."""
    params = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    if not (
        cv2.imwrite(str(out / "images" / name), frame.image, params)
        and cv2.imwrite(str(out / "masks" / name), frame.mask, params)
    ):
        raise MgsError(f"cannot write {out / 'images' / name}; check the disk space and permissions of {out}")
    label = Frame(f"images/{name}", f"masks/{name}", frame.boxes, (rater,), conditions=frame.conditions)
    return json.dumps(label.to_json())


def add_render_arguments(parser: argparse.ArgumentParser, default_seed: int) -> None:
    """The options of every render command."""
    parser.add_argument("--out", type=Path, required=True, help="new or empty dataset folder to write")
    parser.add_argument("--frames", type=int, default=100, help="number of 1080x1920 frames (default 100)")
    parser.add_argument(
        "--seed",
        type=int,
        default=default_seed,
        help=f"random seed; the same seed gives the same frames (default {default_seed})",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="frames rendered in parallel processes (the frames do not depend on it)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def report_written(out: Path, use: str) -> int:
    """Check the folder a renderer wrote, say what is in it and what it may be used for; the exit code."""
    problems, counts = validate_dataset(out)
    if problems:
        print(f"{out}: the renderer wrote {len(problems)} problem(s); please report this as a bug")
        for p in problems[:20]:
            print(f"  {p}")
        return 1
    print(f"wrote {out}: {describe_counts(counts)}")
    print(f"  {use}")
    return 0
