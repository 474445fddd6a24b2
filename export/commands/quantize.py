"""`mgs-export quantize`: FP32 ONNX files -> static INT8 (QDQ) files, calibrated on rack frames.

Calibration frames are rendered by the synthetic rack generator unless --data names a dataset
folder (a facility's own frames calibrate best). The INT8 entries land in the manifest as
"unverified"; `mgs-export verify` accepts or refuses them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from device.pipeline import PipelineConfig
from mgs_core.manifest import DEFAULT_MODELS_DIR

NAMES = ("seg_fine", "seg_coarse", "eye")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models",
        type=Path,
        default=DEFAULT_MODELS_DIR,
        help="folder with <name>.fp32.onnx and manifest.json (default: models/)",
    )
    parser.add_argument(
        "--data", type=Path, default=None, help="calibrate on this dataset folder instead of synthetic frames"
    )
    parser.add_argument(
        "--frames", type=int, default=24, help="number of calibration frames (default 24, 4 boxes each)"
    )
    parser.add_argument(
        "--fine-crop",
        type=int,
        default=PipelineConfig().fine_crop,
        help="side of the full-resolution crops seg_fine is calibrated on (default: the device's pipeline.fine_crop)",
    )
    parser.add_argument(
        "--fine-zoom-max",
        type=float,
        default=PipelineConfig().fine_zoom_max,
        help="the device's pipeline.fine_zoom_max: narrow boxes' crops are calibrated magnified as the device magnifies them",
    )
    parser.add_argument(
        "--activations",
        choices=["uint8", "int8"],
        default="uint8",
        help="activation type: uint8 (U8S8, default: what the x86 CPU provider fuses fully) or int8 (S8S8)",
    )
    parser.add_argument("--only", action="append", choices=NAMES, help="quantize only this network (repeatable)")


def run(args: argparse.Namespace) -> int:
    from export.quantize import build_calibration, dataset_frames, quantize_networks, synthetic_frames
    from mgs_core.errors import MgsError
    from mgs_core.manifest import load_manifest
    from mgs_core.tomlconfig import validate

    if args.frames < 1:
        raise MgsError("--frames must be at least 1")
    validate(PipelineConfig(fine_zoom_max=args.fine_zoom_max))  # the device's own limits for the setting
    manifest = load_manifest(args.models)
    coarse = manifest.entry("seg_coarse", "fp32")
    frames, source = dataset_frames(args.data, args.frames) if args.data else synthetic_frames(args.frames)
    print(f"calibration: {source}")
    calibration = build_calibration(
        frames, tuple(coarse.input_size), args.fine_crop, source=source, fine_zoom_max=args.fine_zoom_max
    )
    command = (
        f"mgs-export quantize --models {args.models} --frames {args.frames} --fine-crop {args.fine_crop}"
        f" --fine-zoom-max {args.fine_zoom_max:g}" + (f" --data {args.data}" if args.data else "")
    )
    rows = quantize_networks(manifest, calibration, args.only or list(NAMES), command, args.activations)
    print(f"{'model':<11} {'samples':>7} {'kept float':<34} {'min SQNR dB':>11} {'int8=fp32 (calib)':>18}")
    for r in rows:
        print(
            f"{r['name']:<11} {r['samples']:>7} {','.join(r['kept_float']):<34} {r['min_sqnr_db']:>11} {r['agreement']:>18}"
        )
    print(f"calibration sha256 {calibration.sha256()}; run `mgs-export verify` to accept or refuse the INT8 files")
    return 0
