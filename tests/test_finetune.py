"""Fine-tuning from the shipped weights: facility export -> validate -> train-eye --init -> evaluate --baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from export.cli import main as mgs_export
from export.synth.writer import write_dataset
from mgs_core.manifest import sha256_file
from server.cli import main as mgs_server
from tests.dataset_support import add_rating, add_sample, rack_samples

SHIPPED = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth") / "d", frames=2, seed=3, progress=False)


def record(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def test_exported_facility_set_fine_tunes_the_shipped_regressor_and_compares_old_with_new(
    synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "facility.sqlite"
    (tmp_path / "server.toml").write_text('[database]\npath = "facility.sqlite"\n')
    for s in rack_samples(synth):
        sid = add_sample(db, s.image, s.face_box)
        marks = [(x - s.face_box[0], y - s.face_box[1]) for x, y, _ in s.eyes]
        true = s.eyes[0][2]
        add_rating(db, sid, "anna", ot=max(true - 0.5, 0.0), eyes=marks)
        add_rating(db, sid, "ben", ot=min(true + 0.5, 9.0), eyes=marks)
    data = tmp_path / "facility-set"
    assert mgs_server(["export-dataset", str(data), "--config", str(tmp_path / "server.toml")]) == 0
    assert mgs_export(["validate", str(data)]) == 0

    new = tmp_path / "eye-facility.pt"
    args = ["train-eye", "--data", str(data), "--init", str(SHIPPED / "eye.pt"), "--out", str(new)]
    assert mgs_export([*args, "--epochs", "1", "--batch", "4", "--quiet"]) == 0
    trained = record(new)
    init = trained["training"]["init"]
    assert init["sha256"] == sha256_file(SHIPPED / "eye.pt") and init["kind"] == "eye"
    assert trained["training"]["freeze_features"] is True and trained["training"]["epochs"] == 1
    shipped = record(SHIPPED / "eye.pt")["state_dict"]
    unchanged = {k for k, v in trained["state_dict"].items() if torch.equal(v, shipped[k])}
    assert {k for k in shipped if k.startswith("features.")} <= unchanged  # frozen conv layers stay as shipped
    assert any(k.startswith("head.") and k not in unchanged for k in shipped)

    out = tmp_path / "report"
    capsys.readouterr()
    evaluate = ["evaluate", "--data", str(data), "--models", str(new), "--baseline", str(SHIPPED), "--out", str(out)]
    assert mgs_export([*evaluate, "--pipeline", "fast", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "baseline" in printed and "regressor-only MAE" in printed
    report = json.loads((out / "report.json").read_text())
    comparison = report["comparison"]
    assert comparison["new"]["models"]["eye"]["path"] == str(new)
    assert comparison["baseline"]["models"]["eye"]["path"] == str(SHIPPED / "eye.pt")
    n_eyes = comparison["new"]["regressor-only eyes"]
    assert n_eyes == comparison["baseline"]["regressor-only eyes"] == sum(len(s.eyes) for s in rack_samples(synth))
    new_mae, old_mae = comparison["new"]["regressor-only MAE"], comparison["baseline"]["regressor-only MAE"]
    assert comparison["difference"]["regressor-only MAE"] == pytest.approx(new_mae - old_mae)
    paired = comparison["regressor_only_mae_paired"]
    assert paired["difference"] == pytest.approx(new_mae - old_mae)
    assert paired["ci95"][0] <= paired["difference"] <= paired["ci95"][1]
    assert "fast eye recall" in comparison["new"] and "fast eye recall, true score 6-9" in comparison["new"]
    shared = comparison["scored_eyes"]["fast"]
    assert shared["both"] + shared["only_new"] == report["abstention"]["fast"]["operating_point"]["hits"]
    assert "fast scored eyes:" in printed
    assert report["segmentation"]["seg_fine_full_resolution"]["pixels"] == 0  # no masks: eye figures only
    assert (out / "baseline" / "report.json").is_file()


def test_seg_fine_tunes_from_the_shipped_unet_with_its_shape(synth: Path, tmp_path: Path) -> None:
    out = tmp_path / "seg_fine.pt"
    common = ["train-seg", "--model", "fine", "--data", str(synth), "--init", str(SHIPPED / "seg_fine.pt")]
    assert (
        mgs_export([*common, "--epochs", "1", "--crop", "48", "--crops-per-box", "2", "--out", str(out), "--quiet"])
        == 0
    )
    trained = record(out)
    assert trained["training"]["init"]["sha256"] == sha256_file(SHIPPED / "seg_fine.pt")
    assert trained["config"] == record(SHIPPED / "seg_fine.pt")["config"]
    assert trained["training"]["lr"] == 0.0005  # the fine-tuning default, not the from-scratch 0.002


def test_a_widened_eye_model_starts_from_the_shipped_scores_and_runs_on_the_device(synth: Path, tmp_path: Path) -> None:
    from device.inference import OnnxRunner
    from export.train.weights import load_network

    out = tmp_path / "wider" / "eye.pt"
    out.parent.mkdir()
    args = ["train-eye", "--data", str(synth), "--init", str(SHIPPED / "eye.pt"), "--widen", "24x48x96"]
    assert mgs_export([*args, "--train-all", "--epochs", "1", "--lr", "1e-9", "--out", str(out), "--quiet"]) == 0
    trained = record(out)
    assert trained["config"]["channels"] == [24, 48, 96] and "--widen 24x48x96" in trained["command"]
    assert trained["training"]["init"]["sha256"] == sha256_file(SHIPPED / "eye.pt")
    wider, _ = load_network(out)
    shipped, _ = load_network(SHIPPED / "eye.pt")
    patches = torch.rand(6, 3, 50, 50)
    with torch.no_grad():
        assert torch.allclose(wider(patches)[:, 0], shipped(patches)[:, 0], atol=0.25)  # BatchNorm statistics moved
    assert mgs_export(["onnx", "--models", str(out.parent), "--only", "eye"]) == 0
    with torch.no_grad():
        expected = wider(patches).numpy()
    assert np.allclose(OnnxRunner(out.parent / "eye.fp32.onnx")(patches.numpy()), expected, atol=1e-3)


def test_widen_takes_three_channel_counts(synth: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_code:
        mgs_export(["train-eye", "--data", str(synth), "--init", str(SHIPPED / "eye.pt"), "--widen", "32x64"])
    assert exit_code.value.code == 2
    assert "'32x64' is not three channel counts" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train-eye", "--init", str(SHIPPED / "seg_fine.pt")], "holds a 'seg_fine' network, not 'eye'"),
        (["train-seg", "--model", "coarse", "--init", str(SHIPPED / "seg_fine.pt")], "not 'seg_coarse'"),
        (["train-seg", "--model", "fine", "--init", str(SHIPPED / "seg_fine.pt"), "--base", "32"], "leave out --base"),
        (["train-eye", "--init", str(SHIPPED / "eye.pt"), "--out", str(SHIPPED / "eye.pt")], "would overwrite"),
        (["train-eye", "--train-all"], "use it with --init"),
        (["train-eye", "--init", str(SHIPPED / "eye.pt"), "--arch", "paper"], "leave out --arch"),
        (["train-eye", "--init", str(SHIPPED / "TRAINING.md")], "not a readable weight file"),
        (["train-eye", "--widen", "32x64x128"], "give --init too"),
        (["train-eye", "--init", str(SHIPPED / "eye.pt"), "--widen", "8x64x128"], "at least the network's own"),
    ],
)
def test_init_refuses_the_wrong_file(
    argv: list[str], message: str, synth: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = [] if "--out" in argv else ["--out", str(tmp_path / "x.pt")]
    assert mgs_export([*argv, "--data", str(synth), *out, "--epochs", "1", "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
