"""`evaluate` and `crossval` on a tiny generated dataset write complete reports and plots."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from device.eyes import EyeConfig
from export.cli import main as mgs_export
from export.crossval import image_folds
from export.synth.writer import write_dataset

REPORT_FIELDS = {
    "frames",
    "true_visible_eyes",
    "match_px",
    "segmentation",
    "detection",
    "end_to_end",
    "regressor_only",
    "dataset",
    "runtime",
    "models",
    "seconds",
    "plots",
}
AGREEMENT_FIELDS = {
    "n",
    "mae",
    "mean_difference",
    "pearson_r",
    "icc_2_1",
    "sd_difference",
    "loa_lower",
    "loa_upper",
    "per_true_score",
}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval")
    data = write_dataset(root / "data", frames=2, seed=11, progress=False)
    models = root / "models"
    common = ["--data", str(data), "--epochs", "1", "--quiet"]
    assert mgs_export(["train-eye", *common, "--batch", "4", "--out", str(models / "eye.pt")]) == 0
    assert (
        mgs_export(
            [
                "train-seg",
                "--model",
                "fine",
                *common,
                "--crop",
                "48",
                "--crops-per-box",
                "2",
                "--out",
                str(models / "seg_fine.pt"),
            ]
        )
        == 0
    )
    assert (
        mgs_export(
            ["train-seg", "--model", "coarse", *common, "--input-size", "64x48", "--out", str(models / "seg_coarse.pt")]
        )
        == 0
    )
    return data, models


def test_evaluate_writes_report_with_all_fields_and_plots(tiny_models: tuple[Path, Path], tmp_path: Path) -> None:
    data, models = tiny_models
    out = tmp_path / "report"
    assert mgs_export(["evaluate", "--data", str(data), "--models", str(models), "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert REPORT_FIELDS <= set(report)
    assert report["frames"] == 2 and report["true_visible_eyes"] > 0
    fine = report["segmentation"]["seg_fine_full_resolution"]
    assert set(fine["iou"]) == {"background", "animal", "ears", "eyes"} and fine["pixels"] > 0
    assert report["segmentation"]["seg_coarse"]["input_size"] == [64, 48]
    for kind in ("full", "fast"):
        d = report["detection"][kind]
        assert d["tp"] + d["fn"] == report["true_visible_eyes"]
        split = d["by_discernible"]
        assert split["discernible"]["n"] + split["indiscernible"]["n"] == report["true_visible_eyes"]
        assert split["discernible"]["found"] + split["indiscernible"]["found"] == d["tp"]
        assert AGREEMENT_FIELDS <= set(report["end_to_end"][kind])
    ro = report["regressor_only"]
    assert AGREEMENT_FIELDS <= set(ro) and ro["n"] > 0 and 0 <= ro["mae"] <= 9
    for png in ("bland_altman.png", "pred_vs_true.png", "iou.png", "mae_per_score.png"):
        assert png in report["plots"]
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_pools_several_folders_into_one_report(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Judging a model on more frames than one folder holds: the pooled report counts every folder's eyes."""
    data, models = tiny_models
    other = write_dataset(tmp_path / "other", frames=2, seed=12, progress=False)
    common = ["--models", str(models), "--pipeline", "fast", "--quiet"]
    reports = []
    for name, folders in (("a", [data]), ("b", [other]), ("both", [data, other])):
        out = tmp_path / name
        assert mgs_export(["evaluate", "--data", *map(str, folders), "--out", str(out), *common]) == 0
        reports.append(json.loads((out / "report.json").read_text()))
    a, b, both = reports
    assert both["frames"] == a["frames"] + b["frames"] == 4
    assert both["true_visible_eyes"] == a["true_visible_eyes"] + b["true_visible_eyes"]
    for key in ("tp", "fp", "fn"):
        assert both["detection"]["fast"][key] == a["detection"]["fast"][key] + b["detection"]["fast"][key]
    assert both["end_to_end"]["fast"]["n"] == a["end_to_end"]["fast"]["n"] + b["end_to_end"]["fast"]["n"]
    assert both["dataset"] == f"{data}, {other}"
    out = tmp_path / "first"
    assert mgs_export(["evaluate", "--data", str(data), str(other), "--frames", "1", "--out", str(out), *common]) == 0
    assert json.loads((out / "report.json").read_text())["frames"] == 2
    assert mgs_export(["evaluate", "--data", str(data), str(data), "--out", str(tmp_path / "twice"), *common]) == 2
    assert "given more than once" in capsys.readouterr().err
    assert not (tmp_path / "twice").exists()


def test_evaluate_without_models_says_what_to_do(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, _ = tiny_models
    assert mgs_export(["evaluate", "--data", str(data), "--models", str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "train it" in capsys.readouterr().err


def test_crossval_splits_by_image_and_reports(tiny_models: tuple[Path, Path], tmp_path: Path) -> None:
    ids = np.array([0, 0, 1, 1, 2, 3, 3, 4])
    folds = image_folds(ids, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == [0, 1, 2, 3, 4]
    assert all(len(f) >= 1 for f in folds)
    data, _ = tiny_models
    out = tmp_path / "cv"
    assert (
        mgs_export(
            [
                "crossval",
                "--data",
                str(data),
                "--folds",
                "2",
                "--epochs",
                "1",
                "--batch",
                "4",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    report = json.loads((out / "crossval.json").read_text())
    assert report["folds"] == 2 and len(report["per_fold"]) == 2
    assert sum(f["test_eyes"] for f in report["per_fold"]) == report["eyes"] == report["pooled"]["n"]
    assert (out / "crossval.png").is_file()


def test_evaluate_with_a_device_configs_pipeline_settings(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A facility judges its own thresholds: the [pipeline] tables of a config change what is found and scored."""
    data, _ = tiny_models
    shipped = Path(__file__).resolve().parents[1] / "models"
    common = ["--data", str(data), "--models", str(shipped), "--runtime", "int8", "--pipeline", "fast", "--quiet"]
    assert mgs_export(["evaluate", *common, "--out", str(tmp_path / "default")]) == 0
    default = json.loads((tmp_path / "default" / "report.json").read_text())
    config = tmp_path / "device.toml"
    config.write_text('name = "rack-1"\n[pipeline.eyes]\nmin_area_px = 2000\nmin_confidence = 0.6\n')
    assert mgs_export(["evaluate", *common, "--config", str(config), "--out", str(tmp_path / "large")]) == 0
    large = json.loads((tmp_path / "large" / "report.json").read_text())
    # An eye is 15-25 px across: no blob of 2,000 px is one, so nothing is found.
    assert default["detection"]["fast"]["detections"] > 0 == large["detection"]["fast"]["detections"]
    assert default["pipeline_settings"]["eyes"]["min_area_px"] == EyeConfig().min_area_px
    assert large["pipeline_settings"]["eyes"]["min_area_px"] == 2000
    assert large["abstention"]["fast"]["min_confidence"] == 0.6
    config.write_text("[pipeline.eyes]\nmin_eyeness = 2\n")
    assert mgs_export(["evaluate", *common, "--config", str(config), "--out", str(tmp_path / "bad")]) == 2
    assert "min_eyeness" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_evaluate_translates_another_renderers_scores_to_the_training_openings(
    tiny_models: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The same predictions, scored against what the training generator's curve makes of each drawn opening:
    the regressor's mean difference moves by exactly the labels' definition gap."""
    choice = tmp_path / "choice"
    assert mgs_export(["render-choice", "--out", str(choice), "--frames", "2", "--seed", "3", "--quiet"]) == 0
    shipped = Path(__file__).resolve().parents[1] / "models"
    common = ["--data", str(choice), "--models", str(shipped), "--runtime", "int8", "--pipeline", "fast", "--quiet"]
    assert mgs_export(["evaluate", *common, "--out", str(tmp_path / "raw")]) == 0
    assert mgs_export(["evaluate", *common, "--translate-scores", "--out", str(tmp_path / "tr")]) == 0
    raw, tr = (json.loads((tmp_path / name / "report.json").read_text()) for name in ("raw", "tr"))
    gap = raw["score_definition"]["gap"]
    assert gap == tr["score_definition"]["gap"] and gap["renderer"] == "export.choicerender"
    assert raw["score_definition"]["scores"] == "as labelled" != tr["score_definition"]["scores"]
    ro_raw, ro_tr = raw["regressor_only"], tr["regressor_only"]
    assert ro_raw["n"] == ro_tr["n"] == gap["eyes"] > 0
    assert ro_tr["mean_difference"] == pytest.approx(ro_raw["mean_difference"] - gap["mean_difference"], abs=2e-3)
    assert raw["detection"]["fast"]["tp"] == tr["detection"]["fast"]["tp"]
    assert "definition gap" in capsys.readouterr().out
    recorded = tmp_path / "recorded"
    data, _ = tiny_models
    shutil.copytree(data, recorded)
    (recorded / "dataset.json").write_text(json.dumps({"format": "mgs-rack-dataset", "version": 1}))
    argv = ["evaluate", "--data", str(recorded), "--models", str(shipped), "--runtime", "int8", "--quiet"]
    assert mgs_export([*argv, "--translate-scores", "--out", str(tmp_path / "no")]) == 2
    assert "can be translated only" in capsys.readouterr().err
    assert not (tmp_path / "no").exists()
