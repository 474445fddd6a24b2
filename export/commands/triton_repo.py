"""`mgs-export triton-repo OUT`: a Triton model repository (config.pbtxt + 1/model.onnx per network)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mgs_core.manifest import DEFAULT_MODELS_DIR


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="repository folder to write (existing model folders in it are replaced)")
    parser.add_argument(
        "--models", type=Path, default=DEFAULT_MODELS_DIR, help="folder with manifest.json (default: models/)"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default="fp32",
        help="which files to serve (default fp32: a GPU gains nothing from QDQ INT8 under the CUDA provider)",
    )
    parser.add_argument(
        "--instance-kind",
        choices=["gpu", "cpu"],
        default="gpu",
        help="Triton instance_group kind (cpu: a host without a GPU)",
    )


def run(args: argparse.Namespace) -> int:
    from export.triton_repo import write_repository
    from mgs_core.manifest import load_manifest

    configs = write_repository(
        load_manifest(args.models), args.out, args.precision, f"KIND_{args.instance_kind.upper()}"
    )
    for config in configs:
        print(f"{config.parent.name:<11} {config}  + {config.parent / '1' / 'model.onnx'}")
    print(f"serve with: tritonserver --model-repository {args.out.resolve()}")
    return 0
