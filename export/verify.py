"""Parity gate: PyTorch FP32 vs ONNX FP32 vs ONNX INT8 on the same held-out frames, through the
device's own pipeline (export.evaluate.evaluate, which runs device.pipeline with callable runners).

Two kinds of figures:
* accuracy of each runtime against the labels (end-to-end per-eye MAE, regressor-only MAE, IoU),
  from three evaluate runs;
* agreement between runtimes on identical inputs: every call the pipeline makes to a network under
  test is also made to the reference runtime (`ComparingRunner`), so U-Net argmax agreement, eye-class
  IoU and regressor score differences are measured on exactly what the device would feed them.

GATE for INT8: end-to-end per-eye MAE within MAX_MAE_INCREASE of FP32 (per pipeline) and U-Net
argmax agreement with FP32 >= MIN_ARGMAX_AGREEMENT (both U-Nets). A file that fails is marked
"refused" in the manifest; the device then refuses to load it (mgs_core.manifest).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from device.eyes import EYES
from device.inference import MODEL_NAMES, ModelRunner, Models, open_models
from export.dataset import Dataset
from export.evaluate import EvalOptions, evaluate
from export.metrics import format_value
from mgs_core.errors import MgsError
from mgs_core.manifest import Manifest, ModelEntry, read_verified_model

MAX_MAE_INCREASE = 0.05
MIN_ARGMAX_AGREEMENT = 0.99


@dataclass
class Agreement:
    """Running comparison of one network's outputs with a reference runtime's."""

    calls: int = 0
    pixels: int = 0
    agree: int = 0
    eye_inter: int = 0
    eye_union: int = 0
    scores: int = 0
    abs_sum: float = 0.0
    abs_max: float = 0.0

    def add(self, out: np.ndarray, ref: np.ndarray) -> None:
        self.calls += 1
        if out.dtype == np.uint8:
            self.pixels += out.size
            self.agree += int(np.count_nonzero(out == ref))
            a, b = out == EYES, ref == EYES
            self.eye_inter += int(np.count_nonzero(a & b))
            self.eye_union += int(np.count_nonzero(a | b))
        else:  # the score column; an eye model's verifier logit is judged by what it keeps, end to end
            d = np.abs(out[..., 0].astype(np.float64) - ref[..., 0].astype(np.float64))
            self.scores += d.size
            self.abs_sum += float(d.sum())
            self.abs_max = max(self.abs_max, float(d.max(initial=0.0)))

    def report(self) -> dict[str, Any]:
        if self.pixels:
            return {
                "calls": self.calls,
                "pixels": self.pixels,
                "argmax_agreement": self.agree / self.pixels,
                "eye_iou": self.eye_inter / self.eye_union if self.eye_union else None,
            }
        return {
            "calls": self.calls,
            "scores": self.scores,
            "score_max_abs_diff": self.abs_max,
            "score_mean_abs_diff": self.abs_sum / self.scores if self.scores else None,
        }


@dataclass
class ComparingRunner:
    """Runs the network under test and, on the same batch, the reference; returns the former's output."""

    under_test: ModelRunner
    reference: ModelRunner
    agreement: Agreement = field(default_factory=Agreement)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = np.asarray(self.under_test(batch))
        ref = np.asarray(self.reference(batch))
        if out.dtype == np.uint8:
            self.agreement.add(out, ref)
        else:  # the regressor: compare what the pipeline reads, the first column
            self.agreement.add(out.reshape(len(batch), -1)[:, :1], ref.reshape(len(batch), -1)[:, :1])
        return out


def comparing(models: Models, reference: Models) -> tuple[Models, dict[str, Agreement]]:
    runners = {n: ComparingRunner(getattr(models, n), getattr(reference, n)) for n in MODEL_NAMES}
    wrapped = replace(models, seg_coarse=runners["seg_coarse"], seg_fine=runners["seg_fine"], eye=runners["eye"])
    return wrapped, {n: r.agreement for n, r in runners.items()}


def manifest_entries(manifest: Manifest, precision: str) -> dict[str, ModelEntry]:
    """The three entries at `precision` whatever their status: verify is what decides the status."""
    found = {e.name: e for e in manifest.entries if e.precision == precision}
    missing = [n for n in MODEL_NAMES if n not in found]
    if missing:
        step = "mgs-export onnx" if precision == "fp32" else "mgs-export quantize"
        raise MgsError(f"{manifest.path} has no {precision} entry for {', '.join(missing)}; run `{step}` first")
    return {n: found[n] for n in MODEL_NAMES}


def open_precision(manifest: Manifest, precision: str) -> Models:
    entries = manifest_entries(manifest, precision)
    data = {n: read_verified_model(e) for n, e in entries.items()}
    return open_models({n: e.path for n, e in entries.items()}, data=data)


def _public(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if not k.startswith("_")}


def verify(
    dataset: Dataset, manifest: Manifest, torch_models: Models | None, pipelines: tuple[str, ...]
) -> dict[str, Any]:
    """Evaluate each runtime and compare them on identical inputs; returns the verification report."""
    options = EvalOptions(pipelines=pipelines, progress=False)
    fp32 = open_precision(manifest, "fp32")
    int8 = open_precision(manifest, "int8")
    report: dict[str, Any] = {
        "frames": len(dataset.frames),
        "pipelines": list(pipelines),
        "accuracy": {},
        "agreement": {},
    }
    if torch_models is not None:
        report["accuracy"]["torch"] = _public(evaluate(dataset, torch_models, options))
        wrapped, agreement = comparing(fp32, torch_models)
        report["accuracy"]["fp32"] = _public(evaluate(dataset, wrapped, options))
        report["agreement"]["fp32_vs_torch"] = {n: a.report() for n, a in agreement.items()}
    else:
        report["accuracy"]["fp32"] = _public(evaluate(dataset, fp32, options))
    wrapped, agreement = comparing(int8, fp32)
    report["accuracy"]["int8"] = _public(evaluate(dataset, wrapped, options))
    report["agreement"]["int8_vs_fp32"] = {n: a.report() for n, a in agreement.items()}
    report["gate"] = int8_gate(report)
    return report


def int8_gate(report: dict[str, Any]) -> dict[str, Any]:
    """Apply the INT8 acceptance rules; `reasons` says, in words, each rule that failed."""
    reasons: list[str] = []
    agreement = report["agreement"]["int8_vs_fp32"]
    for name in ("seg_fine", "seg_coarse"):
        value = agreement[name].get("argmax_agreement")
        if value is None:
            reasons.append(f"{name} was never called on these frames")
        elif value < MIN_ARGMAX_AGREEMENT:
            reasons.append(
                f"{name} INT8 argmax agrees with FP32 on {value:.2%} of pixels (< {MIN_ARGMAX_AGREEMENT:.0%})"
            )
    mae_delta = {}
    for kind in report["pipelines"]:
        f = report["accuracy"]["fp32"]["end_to_end"][kind]["mae"]
        i = report["accuracy"]["int8"]["end_to_end"][kind]["mae"]
        if f is None or i is None:
            reasons.append(
                f"{kind} pipeline scored no eye end-to-end (fp32 n={report['accuracy']['fp32']['end_to_end'][kind]['n']}, "
                f"int8 n={report['accuracy']['int8']['end_to_end'][kind]['n']}): nothing to compare; untrained networks?"
            )
            continue
        mae_delta[kind] = i - f
        if i - f > MAX_MAE_INCREASE:
            reasons.append(
                f"{kind} pipeline: INT8 end-to-end MAE {i:.3f} vs FP32 {f:.3f} (+{i - f:.3f} > {MAX_MAE_INCREASE})"
            )
    return {
        "passed": not reasons,
        "reasons": reasons,
        "mae_increase": mae_delta,
        "rules": {"max_mae_increase": MAX_MAE_INCREASE, "min_argmax_agreement": MIN_ARGMAX_AGREEMENT},
    }


def table(report: dict[str, Any]) -> str:
    """The report as text a person reads: accuracy per runtime, then agreement between runtimes."""
    lines = [f"{'runtime':<8} {'pipeline':<8} {'e2e MAE':>8} {'n':>5} {'regr. MAE':>9} {'fine mIoU':>9} {'eye IoU':>8}"]
    for runtime, acc in report["accuracy"].items():
        seg = acc["segmentation"]["seg_fine_full_resolution"]
        for kind in report["pipelines"]:
            e2e = acc["end_to_end"][kind]
            lines.append(
                f"{runtime:<8} {kind:<8} {format_value(e2e['mae']):>8} {e2e['n']:>5} {format_value(acc['regressor_only']['mae']):>9} "
                f"{format_value(seg['mean_iou']):>9} {format_value(seg['iou'].get('eyes')):>8}"
            )
    lines.append("")
    lines.append(
        f"{'compared':<14} {'network':<11} {'calls':>6} {'argmax agree':>12} {'eye IoU':>8} {'score max|d|':>12} {'mean|d|':>8}"
    )
    for pair, per_net in report["agreement"].items():
        for name, a in per_net.items():
            lines.append(
                f"{pair:<14} {name:<11} {a['calls']:>6} {format_value(a.get('argmax_agreement'), 4):>12} {format_value(a.get('eye_iou'), 4):>8} "
                f"{format_value(a.get('score_max_abs_diff'), 4):>12} {format_value(a.get('score_mean_abs_diff'), 4):>8}"
            )
    gate = report["gate"]
    lines.append("")
    lines.append("INT8 gate: " + ("PASSED" if gate["passed"] else "FAILED\n  " + "\n  ".join(gate["reasons"])))
    return "\n".join(lines)


def manifest_metrics(report: dict[str, Any], precision: str) -> dict[str, Any]:
    """What the manifest records of a verification for one precision (small: figures, not pairs)."""
    acc = report["accuracy"][precision]
    metrics: dict[str, Any] = {
        "verify_frames": report["frames"],
        "end_to_end_mae": {k: acc["end_to_end"][k]["mae"] for k in report["pipelines"]},
        "regressor_only_mae": acc["regressor_only"]["mae"],
        "seg_fine_mean_iou": acc["segmentation"]["seg_fine_full_resolution"]["mean_iou"],
        "seg_coarse_mean_iou": acc["segmentation"]["seg_coarse"]["mean_iou"],
    }
    pair = "int8_vs_fp32" if precision == "int8" else "fp32_vs_torch"
    if pair in report["agreement"]:
        metrics[pair] = report["agreement"][pair]
    if precision == "int8":
        metrics["refused_because"] = "; ".join(report["gate"]["reasons"])
    return metrics


def torch_reference(models_dir: Path) -> Models | None:
    """PyTorch runners from the .pt weight files, or None when they are not there (stand-in models)."""
    if not all((Path(models_dir) / f"{n}.pt").exists() for n in MODEL_NAMES):
        return None
    from export.evaluate import torch_runners

    return torch_runners(Path(models_dir))[0]
