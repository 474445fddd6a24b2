"""Weight averaging ("model soup", Wortsman et al. 2022): one network whose weights are the mean of
several fine-tuned from the same start.

Networks fine-tuned from one set of weights stay in one basin of the loss, so their mean is a
network too; for image classifiers it read unfamiliar images better than each of them, at no cost
at run time. Here it has not yet passed the choice rule (models/TRAINING.md, "Fourteenth step").
Networks trained from different starts are not alike: their mean is noise, so `average_records`
refuses them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from export.train.weights import check_same_fields, joined_sources
from mgs_core.errors import MgsError
from mgs_core.manifest import sha256_file

# What every ingredient must share for its weights to mean the same thing.
SAME_FIELDS = ("kind", "architecture", "config", "input_size", "normalisation", "class_names")


def common_start(own: Sequence[str], records: Sequence[dict[str, Any]]) -> str:
    """sha256 of the weight file every ingredient (sha256 `own`) was fine-tuned from (or is itself)."""
    starts = [(r.get("training") or {}).get("init") or {} for r in records]
    for candidate in {s.get("sha256") for s in starts if s.get("sha256")} | set(own):
        if all(o == candidate or s.get("sha256") == candidate for o, s in zip(own, starts)):
            return candidate
    raise MgsError(
        "these weight files were not fine-tuned from one start (each must have been trained with --init the same "
        "file, or be that file), so the mean of their weights would not be a working network"
    )


def check_alike(paths: Sequence[Path], records: Sequence[dict[str, Any]]) -> None:
    check_same_fields(paths, records, SAME_FIELDS, "only networks of one kind and shape can be averaged")
    first = records[0]
    for path, record in zip(paths[1:], records[1:]):
        if record["state_dict"].keys() != first["state_dict"].keys() or any(
            record["state_dict"][k].shape != v.shape for k, v in first["state_dict"].items()
        ):
            raise MgsError(f"{path} holds other layers than {paths[0]}: only networks of one shape can be averaged")


def mean_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Float tensors are averaged; counters (BatchNorm's num_batches_tracked) take the largest."""
    out: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        stack = torch.stack([s[key] for s in states])
        out[key] = stack.mean(dim=0) if first.is_floating_point() else stack.max(dim=0).values
    return out


def average_records(paths: Sequence[Path], records: Sequence[dict[str, Any]], command: str) -> dict[str, Any]:
    """The weight record of the mean network; its training record names every ingredient."""
    if len(records) < 2:
        raise MgsError("give at least two weight files to average")
    check_alike(paths, records)
    own = [sha256_file(Path(p)) for p in paths]
    start = common_start(own, records)
    sources, fingerprint = joined_sources(paths, records, own)
    record = {key: value for key, value in records[0].items() if key not in ("state_dict", "training", "command")}
    record.update(
        state_dict=mean_state([r["state_dict"] for r in records]),
        command=command,
        data_fingerprint=fingerprint,
        training={"average_of": sources, "start_sha256": start},
    )
    return record
