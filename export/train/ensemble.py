"""One weight file holding several U-Nets trained apart, run together as a `UNetEnsemble`.

Unlike a weight average (export/train/average.py), the members need no common start: each runs whole
and the ensemble takes the mean of their logits, so they only have to read the same input and name
the same classes. The file records every member's file, fingerprint and command, so the ensemble
can be rebuilt and each member retrained.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from export.train.weights import check_same_fields
from mgs_core.errors import MgsError
from mgs_core.manifest import sha256_file
from models.unet import UNetEnsemble

UNET_ARCHITECTURE = "models.unet.UNet"
# What every member must share for their logits to be averaged.
SAME_FIELDS = ("kind", "input_size", "normalisation", "class_names")


def check_members(paths: Sequence[Path], records: Sequence[dict[str, Any]]) -> None:
    if len(records) < 2:
        raise MgsError("give at least two U-Net weight files to join into an ensemble")
    for path, record in zip(paths, records):
        if record.get("architecture") != UNET_ARCHITECTURE:
            raise MgsError(
                f"{path} holds a {record.get('architecture')!r}, not a single U-Net: give the U-Net weight files "
                "themselves (seg_fine.pt or seg_coarse.pt files, not an eye model or an ensemble)"
            )
    check_same_fields(paths, records, SAME_FIELDS, "members of an ensemble must be networks of one kind on one input")


def ensemble_record(paths: Sequence[Path], records: Sequence[dict[str, Any]], command: str) -> dict[str, Any]:
    """The weight record of the ensemble; its training record names every member."""
    check_members(paths, records)
    module = UNetEnsemble([dict(r["config"]) for r in records])
    state = {f"members.{i}.{key}": value for i, r in enumerate(records) for key, value in r["state_dict"].items()}
    module.load_state_dict(state)
    fingerprints = [str(r.get("data_fingerprint", "")) for r in records]
    record = {key: value for key, value in records[0].items() if key not in ("state_dict", "training", "command")}
    record.update(
        architecture="models.unet.UNetEnsemble",
        config=dict(module.config),
        state_dict=module.state_dict(),
        multiple=module.multiple,
        command=command,
        data_fingerprint=hashlib.sha256("".join(fingerprints).encode()).hexdigest(),
        training={
            "ensemble_of": [
                {"path": str(p), "sha256": sha256_file(Path(p)), "data_fingerprint": f, "command": r.get("command")}
                for p, r, f in zip(paths, records, fingerprints)
            ]
        },
    )
    return record
