"""`mgs-export package`: a verified models folder -> one model-set archive for the server registry.

Refuses a folder whose files do not match their manifest hashes, that lacks a model, or whose
INT8 models `mgs-export verify` has not accepted. Prints the set's manifest sha256: the identity
the server and the devices know the set by.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mgs_core.manifest import DEFAULT_MODELS_DIR


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        type=Path,
        default=DEFAULT_MODELS_DIR,
        help="folder that `mgs-export onnx`, `quantize` and `verify` wrote (default: models/)",
    )
    parser.add_argument("--out", type=Path, required=True, help="archive to write, e.g. sets/2026-12-02.tar.gz")
    parser.add_argument(
        "--version", required=True, help="the set's version name (letters, digits, _ - .), e.g. 2026-12-02a"
    )
    parser.add_argument(
        "--evaluate",
        type=Path,
        default=None,
        help="evaluate.json of these models on held-out data, shipped with the set",
    )
    parser.add_argument(
        "--selftest-frames",
        type=int,
        default=4,
        help="reference box images in the set's self-test (default 4)",
    )


def run(args: argparse.Namespace) -> int:
    from export.package import package

    done = package(args.models, args.out, args.version, args.evaluate, args.selftest_frames)
    print(
        f"wrote {done.path}: version {args.version}, {len(done.files)} file(s), self-test with "
        f"{len(done.selftest)} eye(s); manifest sha256 {done.manifest_sha256}"
    )
    return 0
