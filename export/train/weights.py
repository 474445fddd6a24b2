"""The shipped weight-file format (models/*.pt) and the per-epoch checkpoints.

A weight file is everything a later step needs without guessing: the network's constructor and
its config, the input size and normalisation, the class names, the fingerprint of the labels it was
trained on and the exact command. `mgs-export onnx`, `evaluate` and `crossval` read it through
`load_network`. A checkpoint is the same dict plus optimiser and RNG state, written after every
epoch next to the output file (OUT.ckpt) so `--resume` continues where an interrupted run stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mgs_core.errors import MgsError
from mgs_core.manifest import sha256_file
from models.eye_regressor import EyeRegressor, has_verifier
from models.unet import CLASS_NAMES, UNet, UNetEnsemble

FORMAT = "mgs-rack-weights"
VERSION = 1
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "models.unet.UNet": UNet,
    "models.unet.UNetEnsemble": UNetEnsemble,
    "models.eye_regressor.EyeRegressor": EyeRegressor,
}
# Same keys as export.onnx_export.DEFAULT_NORMALISATION, which copies this into the ONNX metadata.
NORMALISATION = {"channel_order": "BGR", "scale": 1 / 255, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
EYE_CLASS_NAMES = ["orbital_tightening"]
VERIFIER_CLASS_NAME = "eye_logit"


def architecture_name(module: nn.Module) -> str:
    return f"{type(module).__module__}.{type(module).__name__}"


def labels_fingerprint(dataset_dirs: Sequence[Path]) -> str:
    """sha256 of labels.jsonl (of each folder's, one after the other, for several): identifies the
    training labels without shipping the data."""
    digest = hashlib.sha256()
    for folder in dataset_dirs:
        digest.update((Path(folder) / "labels.jsonl").read_bytes())
    return digest.hexdigest()


def command_line(args: argparse.Namespace, positional: str | None = None) -> str:
    """The command with every option spelled out (defaults included), so it reproduces the run
    even after a default changes. `positional` names the argument given without a flag."""
    parts = ["mgs-export", args.command]
    if positional is not None:
        parts += [str(v) for v in getattr(args, positional)]
    for key, value in vars(args).items():
        if key in ("command", "verbose", "quiet", positional) or value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            parts.append(flag)
        elif isinstance(value, tuple):
            parts += [flag, "x".join(str(v) for v in value)]
        elif isinstance(value, list):
            parts += [flag, *(str(v) for v in value)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)


def eye_class_names(module: nn.Module) -> list[str]:
    """What each column of the eye network's output is."""
    verified = isinstance(module, EyeRegressor) and has_verifier(module)
    return list(EYE_CLASS_NAMES) + ([VERIFIER_CLASS_NAME] if verified else [])


def eye_output(module: nn.Module) -> str:
    if len(eye_class_names(module)) > 1:
        return "score [N, 2]: orbital tightening 0-9, eye-verifier logit"
    return "score [N, 1], orbital tightening 0-9"


def weight_record(
    module: nn.Module,
    kind: str,
    input_size: tuple[int, int],
    data_fingerprint: str,
    command: str,
    training: dict[str, Any],
) -> dict[str, Any]:
    """`input_size` (H, W) is the trained input; seg_fine is fully convolutional and also runs on
    whole ROIs (any size that is a multiple of `multiple`), seg_coarse only at this size."""
    record: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "architecture": architecture_name(module),
        "config": dict(module.config),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
        "input_size": [int(input_size[0]), int(input_size[1])],
        "normalisation": dict(NORMALISATION),
        "output": eye_output(module) if kind == "eye" else "logits [N, 4, H, W]",
        "class_names": eye_class_names(module) if kind == "eye" else list(CLASS_NAMES),
        "data_fingerprint": data_fingerprint,
        "command": command,
        "training": training,
        "torch_version": str(torch.__version__),
    }
    if isinstance(module, (UNet, UNetEnsemble)):
        record["multiple"] = module.multiple
    return record


def check_same_fields(
    paths: Sequence[Path], records: Sequence[dict[str, Any]], fields: Sequence[str], must: str
) -> None:
    """Refuse the first file that differs from the first one in any of `fields`; `must` says why they
    have to agree (it ends the message)."""
    first = records[0]
    for path, record in zip(paths[1:], records[1:]):
        for field in fields:
            if record.get(field) != first.get(field):
                raise MgsError(
                    f"{path} differs from {paths[0]} in {field} ({record.get(field)!r} against "
                    f"{first.get(field)!r}): {must}"
                )


def joined_sources(
    paths: Sequence[Path], records: Sequence[dict[str, Any]], sha256s: Sequence[str]
) -> tuple[list[dict[str, Any]], str]:
    """What a file joined from several (an average, an ensemble) records of them: each one's path,
    sha256, labels fingerprint and command, and one fingerprint standing for all their labels."""
    fingerprints = [str(r.get("data_fingerprint", "")) for r in records]
    sources = [
        {"path": str(p), "sha256": h, "data_fingerprint": f, "command": r.get("command")}
        for p, h, r, f in zip(paths, sha256s, records, fingerprints)
    ]
    return sources, hashlib.sha256("".join(fingerprints).encode()).hexdigest()


def build_network(record: dict[str, Any]) -> nn.Module:
    arch = ARCHITECTURES.get(record.get("architecture", ""))
    if arch is None:
        raise MgsError(
            f"unknown architecture {record.get('architecture')!r} in weight file; expected one of {sorted(ARCHITECTURES)}"
        )
    module = arch(**record["config"])
    module.load_state_dict(record["state_dict"])
    return module.eval()


def read_record(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise MgsError(
            f"weight file {path} not found: train it (mgs-export train-seg / train-eye) or pass the right --models folder"
        )
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise MgsError(f"{path} is not a readable weight file ({exc}); re-train or re-copy it") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise MgsError(f"{path} is not an mgs-rack weight file (format {FORMAT!r}); re-train it with mgs-export")
    return record


def load_network(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """The network in eval mode on CPU, and its record (config, input size, class names...)."""
    record = read_record(path)
    return build_network(record), record


def init_network(path: Path, kind: str, option: str = "--init") -> tuple[nn.Module, dict[str, Any]]:
    """The network of weight file `path` to fine-tune (`--init`) or learn from (`--teacher`), and what the
    new file records about it.

    Only a file of the same kind is accepted: an eye regressor cannot start a U-Net, and the coarse
    U-Net, trained on whole shrunk boxes, is no start for the fine one.
    """
    module, record = load_network(path)
    if record.get("kind") != kind:
        raise MgsError(
            f"{option} {path} holds a {record.get('kind')!r} network, not {kind!r}; "
            f"give a {kind} weight file, e.g. the shipped models/{kind}.pt"
        )
    return module, {
        "path": str(path),
        "sha256": sha256_file(Path(path)),
        "kind": kind,
        "config": dict(record.get("config", {})),
        "input_size": record.get("input_size"),
        "data_fingerprint": record.get("data_fingerprint"),
    }


def save_atomic(obj: Any, path: Path) -> None:
    """Write-then-rename so an interrupted run never leaves a half-written weight file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def checkpoint_path(out: Path) -> Path:
    return Path(out).with_name(Path(out).name + ".ckpt")


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str, threads: int | None = None) -> torch.device:
    """`auto` = CUDA when present, else CPU (the default machine for this toolchain); `threads` caps
    torch's CPU threads, so a long run on a shared machine takes one core and no more."""
    if threads is not None:
        if threads < 1:
            raise MgsError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MgsError("--device cuda asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(name)
