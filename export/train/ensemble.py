"""One weight file holding several U-Nets trained apart, run together as a `UNetEnsemble`.

Unlike a weight average (export/train/average.py), the members need no common start: each runs whole
and the ensemble takes the mean of their logits, so they only have to read the same input and name
the same classes. The file records every member's file, fingerprint and command, so the ensemble
can be rebuilt and each member retrained.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from export.train.weights import ARCHITECTURES, check_same_fields, joined_sources, weight_record
from mgs_core.errors import MgsError
from mgs_core.manifest import sha256_file
from models.unet import UNet, UNetEnsemble

# What every member must share for their logits to be averaged.
SAME_FIELDS = ("kind", "input_size", "normalisation", "class_names")


def check_members(paths: Sequence[Path], records: Sequence[dict[str, Any]]) -> None:
    if len(records) < 2:
        raise MgsError("give at least two U-Net weight files to join into an ensemble")
    for path, record in zip(paths, records):
        if ARCHITECTURES.get(record.get("architecture", "")) is not UNet:
            raise MgsError(
                f"{path} holds a {record.get('architecture')!r}, not a single U-Net: give the U-Net weight files "
                "themselves (seg_fine.pt or seg_coarse.pt files, not an eye model or an ensemble)"
            )
    check_same_fields(paths, records, SAME_FIELDS, "members of an ensemble must be networks of one kind on one input")


def ensemble_record(paths: Sequence[Path], records: Sequence[dict[str, Any]], command: str) -> dict[str, Any]:
    """The weight record of the ensemble; its training record names every member."""
    check_members(paths, records)
    module = UNetEnsemble([dict(r["config"]) for r in records])
    module.load_state_dict(
        {f"members.{i}.{key}": value for i, r in enumerate(records) for key, value in r["state_dict"].items()}
    )
    sources, fingerprint = joined_sources(paths, records, [sha256_file(Path(p)) for p in paths])
    first = records[0]
    return weight_record(
        module, first["kind"], tuple(first["input_size"]), fingerprint, command, {"ensemble_of": sources}
    )


def ensemble_member(init: UNet | UNetEnsemble, member: int, path: Path) -> UNet:
    """Member `member` of the ensemble `init` (loaded from `path`), to be trained as a single U-Net of its own
    (`train-seg --init-member`, e.g. the student of a distillation from the whole ensemble)."""
    if not isinstance(init, UNetEnsemble):
        raise MgsError(f"--init-member: --init {path} is a single U-Net, not an ensemble; leave out --init-member")
    if not 0 <= member < len(init.members):
        raise MgsError(f"--init-member {member}: --init {path} has members 0 to {len(init.members) - 1}")
    return cast(UNet, init.members[member])
