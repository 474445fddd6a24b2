"""`mgs-export evaluate`: the full pipeline over a labelled dataset -> report.json + PNG plots."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device.pipeline import PipelineConfig
    from export.dataset import Dataset
    from export.evaluate import EvalOptions


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        type=Path,
        nargs="+",
        required=True,
        help="labelled dataset folder (docs/dataset.md format); several folders are evaluated as one set, every "
        "figure pooled over their frames (e.g. 1,200 fresh frames rendered as six sets)",
    )
    parser.add_argument("--out", type=Path, required=True, help="report folder (report.json and PNG plots)")
    parser.add_argument(
        "--models",
        type=Path,
        default=Path(__file__).resolve().parents[2] / "models",
        help="folder with seg_fine.pt, seg_coarse.pt, eye.pt (default: the shipped models/), or one eye .pt file "
        "(scored with the shipped U-Nets)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the models to compare with (a folder or one eye .pt file, as --models), e.g. the shipped models/ "
        "against a fine-tuned eye.pt: report.json gains a `comparison` section, the baseline's own report goes "
        "to OUT/baseline/",
    )
    parser.add_argument(
        "--runtime",
        choices=("torch", "fp32", "int8"),
        default="torch",
        help="torch: the .pt weights; fp32/int8: the exported ONNX files via models/manifest.json, as the device runs them",
    )
    parser.add_argument(
        "--pipeline",
        choices=("full", "fast", "both"),
        default="both",
        help="full: seg_fine over whole ROIs (reference); fast: coarse head search + fine crops (the device default)",
    )
    parser.add_argument(
        "--match-px",
        type=float,
        default=8.0,
        help="a detected eye matches a true eye within this distance (full-frame px)",
    )
    parser.add_argument(
        "--frames", type=int, help="evaluate only the first N frames of each --data folder; default all"
    )
    parser.add_argument(
        "--train-data",
        type=Path,
        help="the dataset the models were trained on: its conditions' ranges split the report into seen and held-out styles (docs/generalisation.md)",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="a device config (device.toml) whose [pipeline] settings the eyes are found and scored with, e.g. a "
        "facility's own min_eyeness or min_confidence; other sections are ignored, so a file with only "
        "[pipeline.eyes] will do (default: the shipped settings)",
    )
    parser.add_argument(
        "--translate-scores",
        action="store_true",
        help="score another renderer's eyes against the score the training generator gives the lid opening that "
        "renderer drew, not its own label (export/score_definition.py): whether a model reads an unfamiliar eye's "
        "opening, without the renderers' different conventions; for choosing between models on the choice "
        "renderer's frames (docs/generalisation.md, 'The definition gap'). Acceptance figures use the labels",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from export.breakdown import format_table, training_ranges
    from export.compare import compare, format_comparison
    from export.dataset import open_dataset
    from export.evaluate import EvalOptions, write_report
    from export.metrics import format_value
    from export.score_definition import definition_gap, translate_scores
    from export.train.options import open_data

    settings = pipeline_settings(args.config)  # first: a bad config stops the command before any data is read
    data = open_data(args.data, args.frames)
    gap = definition_gap(data)
    if args.translate_scores:
        data = translate_scores(data)
    seen = training_ranges(open_dataset(args.train_data)) if args.train_data else None
    pipelines = ("full", "fast") if args.pipeline == "both" else (args.pipeline,)
    options = EvalOptions(
        match_px=args.match_px, pipelines=pipelines, progress=not args.quiet, seen_conditions=seen, pipeline=settings
    )
    report = _evaluate(args, args.models, data, options)
    report["score_definition"] = {"scores": data.info.get("scores", "as labelled"), "gap": gap}
    comparison = None
    if args.baseline is not None:
        baseline = _evaluate(args, args.baseline, data, options)
        comparison = compare(report, baseline)
        report["comparison"] = comparison
        write_report(baseline, args.out / "baseline")
    path = write_report(report, args.out)
    seg = report["segmentation"]["seg_fine_full_resolution"]["iou"]
    print(f"wrote {path}")
    print(f"  scores: {report['score_definition']['scores']}")
    if gap is not None:
        print(
            f"  definition gap: a perfect reader of the training generator's lid openings would score these labels at "
            f"MAE {gap['mae']} (mean difference {gap['mean_difference']}, {gap['eyes']} eyes of {gap['renderer']})"
        )
    print("  seg_fine IoU  " + "  ".join(f"{k} {v:.3f}" if v is not None else f"{k} -" for k, v in seg.items()))
    for kind, d in report["detection"].items():
        p, r = d["precision"], d["recall"]
        e2e = report["end_to_end"][kind]
        print(
            f"  {kind:4s} pipeline: eye precision {p if p is None else round(p, 3)}  recall {r if r is None else round(r, 3)}"
            f"  end-to-end MAE {e2e['mae'] if e2e['mae'] is None else round(e2e['mae'], 3)} (n={e2e['n']})"
        )
        print(f"  {kind:4s} recall by true score (found / scored):  " + recall_split_line(d["by_true_score"]))
        print(
            f"  {kind:4s} by whether the frame shows the eye (found / scored, scored MAE):  "
            + recall_split_line(d["by_discernible"])
        )
        if "lost_at" in d:
            print(
                f"  {kind:4s} where the true eyes went:  "
                + "  ".join(f"{stage} {v['n']}" for stage, v in d["lost_at"].items())
            )
            for stage, reasons in d["lost_why"].items():
                print(f"  {kind:4s}   {stage}: " + ", ".join(f"{why} {n}" for why, n in reasons.items()))
        print(
            f"  {kind:4s} what became of the found eyes (MAE):  "
            + "  ".join(f"{fate} {v['n']} ({format_value(v['mae'])})" for fate, v in d["found_as"].items())
        )
    for kind, a in report["abstention"].items():
        op = a["operating_point"]
        print(
            f"  {kind:4s} at min_confidence {a['min_confidence']}: {a['abstained_at_operating_point']} of {a['candidates']} eyes abstained;"
            f" scored eyes: precision {op['precision'] if op['precision'] is None else round(op['precision'], 3)}"
            f"  recall {op['recall'] if op['recall'] is None else round(op['recall'], 3)}"
            f"  MAE {op['mae'] if op['mae'] is None else round(op['mae'], 3)}  coverage {op['coverage'] if op['coverage'] is None else round(op['coverage'], 3)}"
        )
    ro = report["regressor_only"]
    print(
        f"  regressor only: MAE {ro['mae'] if ro['mae'] is None else round(ro['mae'], 3)}  r {ro['pearson_r'] if ro['pearson_r'] is None else round(ro['pearson_r'], 3)}"
        f"  ICC(2,1) {ro['icc_2_1'] if ro['icc_2_1'] is None else round(ro['icc_2_1'], 3)}  (n={ro['n']})"
    )
    if report["by_condition"]["frame"] or report["by_condition"]["box"] or seen:
        print(format_table(report["by_condition"], pipelines))
    if comparison is not None:
        print(f"  compared with the baseline {args.baseline} (its own report: {args.out / 'baseline'}):")
        print(format_comparison(comparison))
    return 0


def recall_split_line(split: dict[str, dict[str, Any]]) -> str:
    """One printed line of a recall split (`export.eye_losses.RecallSplit.report`): per group
    found / scored recall, the scored eyes' MAE where the split has it, and the number of eyes."""
    from export.metrics import format_value

    return "  ".join(
        f"{name} {format_value(row['recall'])} / {format_value(row['scored_recall'])}"
        + (f", {format_value(row['scored_mae'])}" if "scored_mae" in row else "")
        + f" (n={row['n']})"
        for name, row in split.items()
    )


def _evaluate(args: argparse.Namespace, models_path: Path, data: Dataset, options: EvalOptions) -> dict[str, Any]:
    from export.evaluate import evaluate, onnx_runners, torch_runners
    from mgs_core.errors import MgsError

    if args.runtime == "torch":
        models, info = torch_runners(models_path)
    elif models_path.is_file():
        raise MgsError(f"{models_path}: --runtime {args.runtime} needs a models folder with ONNX files and a manifest")
    else:
        models, info = onnx_runners(models_path, args.runtime)
    started = time.monotonic()
    report = evaluate(data, models, options)
    report.update(
        dataset=", ".join(str(path) for path in args.data),
        runtime=args.runtime,
        models=info,
        seconds=round(time.monotonic() - started, 1),
    )
    return report


def pipeline_settings(path: Path | None) -> PipelineConfig:
    """The [pipeline] tables of a device config, checked as the device checks them; the shipped ones without one."""
    from device.pipeline import PipelineConfig
    from mgs_core.tomlconfig import from_dict, read_toml

    if path is None:
        return PipelineConfig()
    return from_dict(PipelineConfig, read_toml(path).get("pipeline", {}), source=str(path))
