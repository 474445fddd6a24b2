"""`mgs-export verify`: PyTorch vs FP32 ONNX vs INT8 ONNX on held-out frames; accepts or refuses INT8.

Writes verify.json and verify.txt to --out, records the figures in models/manifest.json, marks the
INT8 files "accepted" or "refused", and exits 1 when the INT8 gate fails (the device then refuses
to load them and the message says to use fp32 or re-quantize).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mgs_core.manifest import DEFAULT_MODELS_DIR


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="held-out labelled dataset folder (docs/dataset.md format), not the training set",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("reports/verify"), help="report folder (default reports/verify)"
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=DEFAULT_MODELS_DIR,
        help="folder with manifest.json, the ONNX files and the .pt weights (default: models/)",
    )
    parser.add_argument("--frames", type=int, default=None, help="use only the first N frames of --data (quick check)")
    parser.add_argument(
        "--pipeline",
        choices=("full", "fast", "both"),
        default="both",
        help="which device pipeline(s) to run (default both)",
    )


def run(args: argparse.Namespace) -> int:
    from export.dataset import open_dataset
    from export.verify import manifest_metrics, table, torch_reference, verify
    from mgs_core.manifest import load_manifest, set_status

    dataset = open_dataset(args.data)
    if args.frames is not None:
        dataset.frames = dataset.frames[: args.frames]
    manifest = load_manifest(args.models)
    reference = torch_reference(args.models)
    pipelines = ("full", "fast") if args.pipeline == "both" else (args.pipeline,)
    report = verify(dataset, manifest, reference, pipelines)
    report.update(dataset=str(args.data), models=str(args.models), torch_reference=reference is not None)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verify.json").write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    text = table(report)
    (args.out / "verify.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    if reference is None:
        print("(no .pt weights in --models: PyTorch column skipped)")
    for name in ("seg_fine", "seg_coarse", "eye"):
        set_status(args.models, name, "fp32", "accepted", manifest_metrics(report, "fp32"))
        set_status(
            args.models,
            name,
            "int8",
            "accepted" if report["gate"]["passed"] else "refused",
            manifest_metrics(report, "int8"),
        )
    print(f"wrote {args.out / 'verify.json'}; manifest updated")
    if not report["gate"]["passed"]:
        print(
            "INT8 models REFUSED: the device will not load them; run with precision fp32, or re-quantize on "
            "representative frames (mgs-export quantize --data ...) and verify again"
        )
        return 1
    return 0
