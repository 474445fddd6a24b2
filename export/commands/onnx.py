"""`mgs-export onnx`: trained checkpoints (models/<name>.pt) -> FP32 ONNX files + manifest entries.

A network without a checkpoint is an error unless --random-init is given; that writes untrained
stand-ins (marked "untrained" in metadata and manifest) so device code can run against real files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mgs_core.errors import MgsError
from mgs_core.manifest import DEFAULT_MODELS_DIR


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        type=Path,
        default=DEFAULT_MODELS_DIR,
        help="folder with the checkpoints <name>.pt (default: models/)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="folder for <name>.fp32.onnx and manifest.json (default: --models)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=["seg_fine", "seg_coarse", "eye"],
        help="export only this network (repeatable)",
    )
    parser.add_argument(
        "--random-init", action="store_true", help="export an untrained stand-in for a network that has no checkpoint"
    )


def run(args: argparse.Namespace) -> int:
    from export.onnx_export import (
        NETWORKS,
        export_network,
        fp32_parity,
        load_checkpoint,
        manifest_record,
        random_checkpoint,
    )
    from mgs_core.manifest import save_entry

    out = args.out or args.models
    command = f"mgs-export onnx --models {args.models} --out {out}" + (" --random-init" if args.random_init else "")
    print(f"{'model':<11} {'source':<28} {'file':<24} {'parity':>22}")
    for name in args.only or list(NETWORKS):
        checkpoint = args.models / f"{name}.pt"
        if checkpoint.exists():
            ckpt = load_checkpoint(name, checkpoint)
        elif args.random_init:
            ckpt = random_checkpoint(name)
        else:
            raise MgsError(
                f"no checkpoint {checkpoint}; train it first (mgs-export train-seg / train-eye) or pass --random-init for an untrained stand-in"
            )
        path = out / f"{name}.fp32.onnx"
        export_network(ckpt, path)
        metrics = fp32_parity(ckpt, path)
        save_entry(out, manifest_record(path, out, "accepted", metrics, command))
        shown = ", ".join(f"{k.split('_vs_torch_')[1]}={v:.3g}" for k, v in metrics.items())
        print(f"{name:<11} {Path(ckpt.source).name:<28} {path.name:<24} {shown:>22}")
    return 0
