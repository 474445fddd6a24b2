"""Command-line options every training command shares (data, output, seed, device, resume, precision)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from export.dataset import Dataset

#: Arithmetic of the training forward pass (export.train.loop.forward); here, not there, so that
#: building the parser does not import torch.
PRECISIONS = ("fp32", "bf16")


def sizes(count: int, example: str) -> Callable[[str], tuple[int, ...]]:
    """An argparse type for `count` positive whole numbers written with x between them (128x256)."""

    def parse(text: str) -> tuple[int, ...]:
        try:
            values = tuple(int(part) for part in text.lower().split("x"))
        except ValueError:
            values = ()
        if len(values) != count or min(values) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not {example}")
        return values

    return parse


def add_common(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="training dataset folder(s) (docs/dataset.md format); several are trained on as one, "
        "e.g. synthetic frames of the default and the hardest preset",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(default_out),
        help=f"weight file to write (default {default_out}); the per-epoch checkpoint goes to OUT.ckpt",
    )
    parser.add_argument("--val", type=Path, help="optional dataset to measure after every epoch (never trained on)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (sampling, augmentation, initialisation)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, or cuda")
    parser.add_argument("--resume", action="store_true", help="continue from OUT.ckpt after the last finished epoch")
    parser.add_argument(
        "--frames", type=int, help="use only the first N frames of each --data folder (CPU time budget); default all"
    )
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="turn off the training-time augmentation (zoom, rotation, camera effects, occluders; docs/training.md)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch CPU threads (default: torch's choice); 1 leaves the other cores to other work",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="arithmetic of the forward pass: fp32 (default) or bf16 (bfloat16 convolutions, float32 weights; "
        "about 3x faster on CPUs with AVX-512 BF16 or AMX, slower on others)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def open_data(paths: Sequence[Path], frames: int | None) -> Dataset:
    """The datasets in `paths` as one, each cut to its first `frames` frames when asked (training
    commands and evaluate pass their --data folders, crossval its one)."""
    import dataclasses
    from collections import Counter

    from export.dataset import combine_datasets, open_dataset
    from mgs_core.errors import MgsError

    if frames is not None and frames < 1:
        raise MgsError(f"--frames must be at least 1, got {frames}")
    twice = sorted(str(path) for path, count in Counter(p.resolve() for p in paths).items() if count > 1)
    if twice:
        raise MgsError(f"--data {', '.join(twice)} given more than once: its frames would count twice")
    datasets = [open_dataset(path) for path in paths]
    if frames is not None:
        datasets = [dataclasses.replace(d, frames=d.frames[:frames]) for d in datasets]
    return combine_datasets(datasets)
