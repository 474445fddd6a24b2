"""Accuracy report: the device's own pipeline over every frame of a labelled dataset.

The frames go through `device.pipeline` (the same eye-blob, patch and scoring code the edge box
and the offload host run), with the networks wrapped as plain `array -> array` runners: PyTorch
modules from the .pt weight files by default, or the shipped ONNX files (fp32/int8) through the
device's own loader. So a figure in the report is a figure of what the device does.

Reported: segmentation IoU per class (seg_fine on whole ROIs at full resolution; seg_coarse at its
input size), eye detection precision/recall on visible eyes (a detection matches a true eye within
`match_px`), and score agreement twice: end-to-end (matched detections) and regressor-only (patches
cut at the true eye centres, so segmentation errors do not enter). The abstention section sweeps
the eye confidence threshold: MAE against the share of eyes kept (risk-coverage), with recall and
precision of the scored eyes at the configured operating point.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from device.eyes import crop_patches, score_patches
from device.inference import ModelRunner, Models, eye_width_of
from device.pipeline import (
    FastPipeline,
    FullResolutionPipeline,
    PipelineConfig,
    class_maps,
    images_to_batch,
    pad_to_multiple,
    resize_for_coarse,
)
from device.results import EyeScore
from device.rois import Roi
from export.breakdown import ConditionBreakdown
from export.dataset import Dataset
from export.discernible import DiscernibleRecall, discernible
from export.eye_losses import FoundFates, LossStages, RecallSplit
from export.metrics import (
    confusion_matrix,
    iou_from_confusion,
    mae_per_bin,
    match_points,
    precision_recall,
    score_agreement,
)
from export.train.samples import eye_width_px, region_zooms, resize_mask
from mgs_core.errors import MgsError
from models.unet import CLASS_NAMES

MODEL_FILES = {"seg_coarse": "seg_coarse.pt", "seg_fine": "seg_fine.pt", "eye": "eye.pt"}
SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models"
PIPELINES = ("full", "fast")


@dataclass
class EvalOptions:
    match_px: float = 8.0
    pipelines: tuple[str, ...] = PIPELINES
    progress: bool = True
    seen_conditions: dict | None = (
        None  # training ranges (export.breakdown.training_ranges) for the style-held-out view
    )
    # The device's [pipeline] settings the eyes are found and scored with (default: the shipped ones).
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


def model_files(models: Path, shipped: Path = SHIPPED_MODELS) -> dict[str, Path]:
    """The three weight files of a models folder; a single eye .pt file stands for the shipped
    U-Nets with that regressor (what fine-tuning the regressor alone produces)."""
    models = Path(models)
    if models.is_file():
        return {name: models if name == "eye" else shipped / filename for name, filename in MODEL_FILES.items()}
    return {name: models / filename for name, filename in MODEL_FILES.items()}


def torch_runners(models_dir: Path) -> tuple[Models, dict[str, Any]]:
    """The three .pt networks as device runners (eval mode, CPU or CUDA, no gradients)."""
    from export.train.weights import load_network, pick_device

    device = pick_device("auto")
    runners: dict[str, ModelRunner] = {}
    info: dict[str, Any] = {}
    coarse_size = (128, 256)
    for name, path in model_files(models_dir).items():
        module, record = load_network(path)
        if record.get("kind") != name:
            raise MgsError(f"{path} holds a {record.get('kind')!r} network where {name!r} belongs; check --models")
        module.to(device)
        info[name] = {
            "path": str(path),
            "data_fingerprint": record.get("data_fingerprint"),
            "command": record.get("command"),
            "config": record.get("config"),
            "input_size": record.get("input_size"),
        }
        if name == "seg_coarse":
            coarse_size = tuple(record["input_size"])
        runners[name] = _torch_runner(module, device, argmax=name != "eye")
    return Models(
        seg_coarse=runners["seg_coarse"],
        seg_fine=runners["seg_fine"],
        eye=runners["eye"],
        model_sha256="torch-weights",
        coarse_size=coarse_size,
        eye_width=eye_width_of(info["eye"]["config"]),
    ), info


def _torch_runner(module, device, argmax: bool) -> ModelRunner:
    """A torch module as a device runner: BGR [0, 1] NCHW float32 in, class map or scores out."""
    import torch

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(np.ascontiguousarray(batch)).to(device))
            out = out.argmax(1).to(torch.uint8) if argmax else out
            return out.cpu().numpy()

    return run


class MemoRunner:
    """Remembers the last few answers of a runner by input content.

    The IoU measurement and the full-resolution pipeline both run seg_fine on the same padded ROI;
    with this wrapper the second call is a lookup, so evaluation costs one U-Net pass per ROI
    without reaching into the pipeline's internals.
    """

    def __init__(self, runner: ModelRunner, size: int = 8) -> None:
        self.runner = runner
        self.size = size
        self.cache: dict[tuple, np.ndarray] = {}

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        key = (batch.shape, hashlib.blake2b(np.ascontiguousarray(batch).data, digest_size=16).digest())
        if key not in self.cache:
            if len(self.cache) >= self.size:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = self.runner(batch)
        return self.cache[key]


def onnx_runners(models_dir: Path, precision: str) -> tuple[Models, dict[str, Any]]:
    from device.inference import load_models

    models = load_models(Path(models_dir), precision=precision)
    return models, {name: {"path": str(p)} for name, p in models.files.items()}


@dataclass
class Pairs:
    pred: list[float]
    true: list[float]

    def add(self, p: float, t: float) -> None:
        self.pred.append(p)
        self.true.append(t)

    def report(self) -> dict[str, Any]:
        return {
            **score_agreement(np.array(self.pred), np.array(self.true)),
            "per_true_score": mae_per_bin(np.array(self.pred), np.array(self.true)),
        }


def evaluate(dataset: Dataset, models: Models, options: EvalOptions) -> dict[str, Any]:
    """Run every frame through the pipeline(s) and compare with the labels; returns the report dict."""
    models = dataclasses.replace(models, seg_fine=MemoRunner(models.seg_fine))
    n = len(CLASS_NAMES)
    cm_fine = np.zeros((n, n), np.int64)
    cm_coarse = np.zeros((n, n), np.int64)
    counts = {p: {"tp": 0, "fp": 0, "fn": 0, "detections": 0, "quality_ok": 0} for p in options.pipelines}
    end_to_end = {p: Pairs([], []) for p in options.pipelines}
    regressor_only = Pairs([], [])
    candidates: dict[str, list[Candidate]] = {p: [] for p in options.pipelines}
    severity = {p: SeverityRecall() for p in options.pipelines}
    shown_split = {p: DiscernibleRecall() for p in options.pipelines}
    fates = {p: FoundFates(options.pipeline.eyes.min_sharpness) for p in options.pipelines}
    losses = LossStages(options.pipeline.eyes)
    seconds = {p: 0.0 for p in options.pipelines}
    n_true_visible = 0
    breakdown = ConditionBreakdown(options.pipelines)
    frames = dataset.frames
    if not frames:
        raise MgsError(f"{dataset.root} has no labelled frames; nothing to evaluate")
    for index, frame in enumerate(tqdm(frames, desc="evaluate", unit="frame", disable=not options.progress)):
        image = dataset.read_image(frame)
        rois = [Roi(*(int(round(v)) for v in b.roi)) for b in frame.boxes]
        mask = dataset.read_mask(frame) if frame.mask is not None else None
        if mask is not None:
            for roi in rois:
                crop = image[roi.y : roi.y1, roi.x : roi.x1]
                truth = mask[roi.y : roi.y1, roi.x : roi.x1]
                fine = class_maps(models.seg_fine(images_to_batch([pad_to_multiple(crop)])))[0, : roi.h, : roi.w]
                cm_fine += confusion_matrix(fine, truth, n)
                coarse = class_maps(models.seg_coarse(images_to_batch([resize_for_coarse(crop, models.coarse_size)])))[
                    0
                ]
                cm_coarse += confusion_matrix(coarse, resize_mask(truth, models.coarse_size), n)
        true_eyes = [[e for e in b.eyes] for b in frame.boxes]
        shown = [[discernible(image, mask, e.x, e.y) if e.visible else False for e in eyes] for eyes in true_eyes]
        n_true_visible += sum(e.visible for eyes in true_eyes for e in eyes)
        in_box = [(e, box) for box in frame.boxes for e in box.eyes if e.visible and e.score is not None]
        scored = [e for e, _ in in_box]
        if scored:
            zooms = region_zooms([eye_width_px(e.x, e.y, box, mask) for e, box in in_box], models.eye_width)
            patches, _ = crop_patches(image, [(e.x, e.y) for e in scored], zooms=zooms)
            preds = score_patches(models.eye, patches).scores
            for e, p in zip(scored, preds):
                regressor_only.add(float(p), float(e.score))
            breakdown.regressor(frame, scored, preds)
        for kind in options.pipelines:
            pipeline = _pipeline(kind, models, rois, options.pipeline)
            t0 = time.perf_counter()
            result = pipeline(image)
            seconds[kind] += time.perf_counter() - t0
            for b, (box, box_result, eyes, eyes_shown) in enumerate(zip(frame.boxes, result.boxes, true_eyes, shown)):
                score_box(box_result.eyes, eyes, options.match_px, counts[kind], end_to_end[kind])
                score_box(box_result.eyes, eyes, options.match_px, *breakdown.tally(kind, frame, box))
                collect_candidates(box_result.eyes, eyes, options.match_px, candidates[kind], (index, b))
                severity[kind].add(box_result.eyes, eyes, options.match_px)
                shown_split[kind].add(box_result.eyes, eyes, eyes_shown, options.match_px)
                fates[kind].add(box_result.eyes, eyes, options.match_px)
                if isinstance(pipeline, FastPipeline):
                    losses.add(
                        b, box_result.eyes, eyes, pipeline.last_fine, pipeline.last_candidates[b], options.match_px
                    )
    report: dict[str, Any] = {
        "frames": len(frames),
        "true_visible_eyes": n_true_visible,
        "match_px": options.match_px,
        "pipeline_settings": dataclasses.asdict(options.pipeline),
        "segmentation": {
            "seg_fine_full_resolution": _iou_report(cm_fine),
            "seg_coarse": {**_iou_report(cm_coarse), "input_size": list(models.coarse_size)},
        },
        "detection": {},
        "end_to_end": {},
        "regressor_only": regressor_only.report(),
        "by_condition": breakdown.report(options.seen_conditions),
    }
    for kind in options.pipelines:
        c = counts[kind]
        precision, recall = precision_recall(c["tp"], c["fp"], c["fn"])
        report["detection"][kind] = {
            **c,
            "precision": precision,
            "recall": recall,
            "ms_per_frame": round(1000 * seconds[kind] / len(frames), 1),
            "by_true_score": severity[kind].report(),
            "by_discernible": shown_split[kind].report(),
            "found_as": fates[kind].report(),
        }
        if kind == "fast":
            report["detection"][kind]["lost_at"] = losses.report()
            report["detection"][kind]["lost_why"] = losses.report_why()
        report["end_to_end"][kind] = end_to_end[kind].report()
    report["abstention"] = {
        kind: abstention_report(candidates[kind], n_true_visible, options.pipeline.eyes.min_confidence)
        for kind in options.pipelines
    }
    report["_candidates"] = candidates
    report["_pairs"] = {"regressor_only": regressor_only, **{f"end_to_end_{k}": v for k, v in end_to_end.items()}}
    return report


def _pipeline(kind: str, models: Models, rois: list[Roi], config: PipelineConfig) -> Callable:
    """A fresh pipeline per frame: dataset frames are independent, so no tracking carries over."""
    return FullResolutionPipeline(models, rois, config.eyes) if kind == "full" else FastPipeline(models, rois, config)


def score_box(detected, truth, match_px: float, counts: dict[str, int], pairs: Pairs) -> None:
    """Detections matched to a visible true eye are hits; matched to a hidden one they count neither way."""
    matches = match_points([(d.x, d.y) for d in detected], [(t.x, t.y) for t in truth], match_px)
    matched_pred = {i for i, _ in matches}
    matched_true = {j for _, j in matches}
    counts["detections"] += len(detected)
    counts["quality_ok"] += sum(d.quality_ok for d in detected)
    counts["fp"] += len(detected) - len(matched_pred)
    for i, j in matches:
        t = truth[j]
        if not t.visible:
            continue
        counts["tp"] += 1
        if t.score is not None:
            pairs.add(float(detected[i].score), float(t.score))
    counts["fn"] += sum(1 for j, t in enumerate(truth) if t.visible and j not in matched_true)


SEVERITY_BANDS = (("0-3", 0.0, 3.0), ("3-6", 3.0, 6.0), ("6-9", 6.0, float("inf")))


def severity_band(score: float) -> str:
    return next(name for name, lo, hi in SEVERITY_BANDS if lo <= score < hi)


@dataclass
class SeverityRecall(RecallSplit):
    """Recall per band of true score: an eye finder that misses shut eyes hides exactly the animals
    in pain, which the overall recall does not show (a slit is a third of an open eye's pixels).
    `scored` counts the found eyes that reach the aggregate (quality_ok: sharp, whole, confident)."""

    groups: tuple[str, ...] = tuple(name for name, _, _ in SEVERITY_BANDS)

    def add(self, detected: Sequence[EyeScore], truth, match_px: float) -> None:
        bands = [severity_band(float(t.score)) if t.visible and t.score is not None else None for t in truth]
        self.add_grouped(detected, truth, bands, match_px)


@dataclass(frozen=True)
class Candidate:
    """An eye that passed the blur and border checks, whether scored or abstained on, and what it really was."""

    eye: EyeScore
    hit: bool
    true_score: float | None
    # (frame, box, true eye) of a hit, the same for every model run over the same frames, so two
    # models' scores of one eye can be paired (export.compare).
    truth: tuple[int, int, int] | None = None


def collect_candidates(
    detected: Sequence[EyeScore], truth, match_px: float, out: list[Candidate], where: tuple[int, int]
) -> None:
    """Candidates of one box (`where`: frame and box index) with their truth: a hit matches a visible true eye; a detection matched to a hidden eye is left out, as in `score_box`."""
    matches = dict(match_points([(d.x, d.y) for d in detected], [(t.x, t.y) for t in truth], match_px))
    for i, eye in enumerate(detected):
        if not (eye.quality_ok or eye.abstained):
            continue
        j = matches.get(i)
        if j is not None and not truth[j].visible:
            continue
        score = truth[j].score if j is not None else None
        key = None if j is None else (*where, j)
        out.append(Candidate(eye, j is not None, None if score is None else float(score), key))


def scored_labelled_hits(candidates: Sequence[Candidate], threshold: float) -> list[Candidate]:
    """The correctly found eyes with a true score that get a score at `threshold`: the eyes an MAE is taken over."""
    return [c for c in candidates if c.eye.confidence >= threshold and c.hit and c.true_score is not None]


def operating_point(candidates: Sequence[Candidate], n_true_visible: int, threshold: float) -> dict[str, Any]:
    """What the device reports at one confidence threshold: scored eyes, their precision, recall and MAE.

    `coverage` is the share of correctly found, labelled eyes that still get a score.
    """
    kept = [c for c in candidates if c.eye.confidence >= threshold]
    hits = sum(c.hit for c in kept)
    errors = [abs(c.eye.score - c.true_score) for c in scored_labelled_hits(candidates, threshold)]
    labelled = sum(1 for c in candidates if c.hit and c.true_score is not None)
    precision, recall = precision_recall(hits, len(kept) - hits, n_true_visible - hits)
    return {
        "threshold": round(float(threshold), 4),
        "scored": len(kept),
        "hits": hits,
        "false": len(kept) - hits,
        "precision": precision,
        "recall": recall,
        "coverage": len(errors) / labelled if labelled else None,
        "mae": float(np.mean(errors)) if errors else None,
    }


def risk_coverage(candidates: Sequence[Candidate], n_true_visible: int, steps: int = 101) -> list[dict[str, Any]]:
    """The operating point at every threshold from 0 to 1 (sweeping the confidence threshold)."""
    return [operating_point(candidates, n_true_visible, t) for t in np.linspace(0.0, 1.0, steps)]


def abstention_report(candidates: Sequence[Candidate], n_true_visible: int, min_confidence: float) -> dict[str, Any]:
    """The risk-coverage curve, the scoring-everything baseline and the operating point the device uses."""
    return {
        "min_confidence": min_confidence,
        "candidates": len(candidates),
        "abstained_at_operating_point": sum(c.eye.confidence < min_confidence for c in candidates),
        "all_scored": operating_point(candidates, n_true_visible, 0.0),
        "operating_point": operating_point(candidates, n_true_visible, min_confidence),
        "risk_coverage": risk_coverage(candidates, n_true_visible),
    }


def risk_coverage_axes(ax, abstention: dict[str, Any], title: str) -> None:
    """MAE against coverage over the threshold sweep, precision and recall on a second axis, the operating point marked."""
    curve = [p for p in abstention["risk_coverage"] if p["mae"] is not None]
    ax.plot([p["coverage"] for p in curve], [p["mae"] for p in curve], color="tab:blue", label="MAE of scored eyes")
    op = abstention["operating_point"]
    if op["mae"] is not None:
        ax.plot(
            [op["coverage"]],
            [op["mae"]],
            "o",
            color="tab:red",
            ms=8,
            label=f"operating point (confidence >= {abstention['min_confidence']:g})",
        )
    ax.set_xlabel("coverage (share of found eyes scored)")
    ax.set_ylabel("MAE (0-9)")
    ax.set_xlim(0, 1.02)
    twin = ax.twinx()
    twin.plot(
        [p["coverage"] for p in curve],
        [p["precision"] for p in curve],
        color="tab:green",
        ls="--",
        lw=1,
        label="precision",
    )
    twin.plot(
        [p["coverage"] for p in curve], [p["recall"] for p in curve], color="tab:orange", ls=":", lw=1, label="recall"
    )
    twin.set_ylim(0, 1.02)
    twin.set_ylabel("precision / recall")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="center left")
    p_txt = "-" if op["precision"] is None else f"{op['precision']:.3f}"
    r_txt = "-" if op["recall"] is None else f"{op['recall']:.3f}"
    ax.set_title(f"risk-coverage, {title}\nat the operating point: recall {r_txt}, precision {p_txt}", fontsize=9)


def write_risk_coverage_plot(report: dict[str, Any], out_dir: Path) -> list[str]:
    """risk_coverage.png, one panel per pipeline; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = [
        (kind, a)
        for kind, a in report.get("abstention", {}).items()
        if any(p["mae"] is not None for p in a["risk_coverage"])
    ]
    if not sets:
        return []
    fig, axes = plt.subplots(1, len(sets), figsize=(5.5 * len(sets), 4.2), squeeze=False)
    for ax, (kind, abstention) in zip(axes[0], sets):
        risk_coverage_axes(ax, abstention, f"{kind} pipeline")
    fig.tight_layout()
    fig.savefig(out_dir / "risk_coverage.png", dpi=110)
    plt.close(fig)
    return ["risk_coverage.png"]


def _iou_report(cm: np.ndarray) -> dict[str, Any]:
    iou = iou_from_confusion(cm)
    present = [v for v in iou if v is not None]
    return {
        "iou": dict(zip(CLASS_NAMES, iou)),
        "mean_iou": float(np.mean(present)) if present else None,
        "pixels": int(cm.sum()),
    }


def write_plots(report: dict[str, Any], out_dir: Path) -> list[str]:
    """PNG figures next to report.json; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    pairs: dict[str, Pairs] = report["_pairs"]
    sets = [(name, p) for name, p in pairs.items() if p.pred]
    if sets:
        for filename, draw, height in (
            ("bland_altman.png", bland_altman_axes, 4.2),
            ("pred_vs_true.png", pred_vs_true_axes, 4.6),
        ):
            fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), height), squeeze=False)
            for ax, (name, p) in zip(axes[0], sets):
                draw(ax, np.array(p.pred), np.array(p.true), name.replace("_", " "))
            fig.tight_layout()
            fig.savefig(out_dir / filename, dpi=110)
            plt.close(fig)
            written.append(filename)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    width = 0.38
    x = np.arange(len(CLASS_NAMES))
    for k, (name, seg) in enumerate(report["segmentation"].items()):
        vals = [seg["iou"][c] or 0.0 for c in CLASS_NAMES]
        ax.bar(x + (k - 0.5) * width, vals, width, label=name.replace("_", " "))
    ax.set_xticks(x, CLASS_NAMES)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU")
    ax.axhline(0.7, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    ax.set_title("segmentation IoU per class")
    fig.tight_layout()
    fig.savefig(out_dir / "iou.png", dpi=110)
    plt.close(fig)
    written.append("iou.png")
    bins = report["regressor_only"]["per_true_score"]
    if bins:
        fig, ax = plt.subplots(figsize=(6, 3.8))
        keys = sorted(bins, key=int)
        ax.bar([int(k) for k in keys], [bins[k]["mae"] for k in keys], color="tab:orange")
        ax.set_xlabel("true score (rounded)")
        ax.set_ylabel("MAE")
        ax.set_title("regressor-only MAE per true score")
        fig.tight_layout()
        fig.savefig(out_dir / "mae_per_score.png", dpi=110)
        plt.close(fig)
        written.append("mae_per_score.png")
    return written


def bland_altman_axes(ax, pred: np.ndarray, true: np.ndarray, title: str) -> None:
    mean = (pred + true) / 2
    diff = pred - true
    m, sd = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else 0.0
    ax.scatter(mean, diff, s=8, alpha=0.5)
    for y, style in ((m, "-"), (m + 1.96 * sd, "--"), (m - 1.96 * sd, "--")):
        ax.axhline(y, color="tab:red", ls=style, lw=1)
    ax.set_xlabel("mean of predicted and true score")
    ax.set_ylabel("predicted - true")
    ax.set_title(
        f"Bland-Altman, {title}\nmean diff {m:+.2f}, LoA [{m - 1.96 * sd:.2f}, {m + 1.96 * sd:.2f}]", fontsize=9
    )


def pred_vs_true_axes(ax, pred: np.ndarray, true: np.ndarray, title: str) -> None:
    ax.scatter(true, pred, s=8, alpha=0.5)
    ax.plot([0, 9], [0, 9], color="grey", lw=1)
    ax.set_xlim(-0.5, 9.5)
    ax.set_ylim(-0.5, 9.5)
    ax.set_xlabel("true score")
    ax.set_ylabel("predicted score")
    ax.set_title(f"{title}: MAE {np.mean(np.abs(pred - true)):.2f}", fontsize=9)


def write_report(report: dict[str, Any], out_dir: Path) -> Path:
    """report.json (without the raw pairs) plus the PNGs; returns the JSON path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, out_dir) + write_risk_coverage_plot(report, out_dir)
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    clean["plots"] = plots
    path = out_dir / "report.json"
    path.write_text(json.dumps(clean, indent=2) + "\n")
    return path
