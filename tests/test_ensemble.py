"""`mgs-export ensemble`: U-Nets trained apart joined into one network, through to the ONNX the device runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.cli import main as mgs_export
from export.onnx_export import onnx_session
from export.train.weights import load_network, save_atomic, weight_record
from mgs_core.manifest import sha256_file
from models.eye_regressor import EyeRegressor
from models.unet import UNet


def unet_file(path: Path, seed: int, base: int, kind: str = "seg_fine") -> Path:
    """A U-Net weight file with its own random weights, as an independent training run leaves one."""
    torch.manual_seed(seed)
    module = UNet(base=base).eval()
    save_atomic(weight_record(module, kind, (96, 96), f"{seed:064d}", f"train-seg --seed {seed}", {}), path)
    return path


@pytest.fixture()
def members(tmp_path: Path) -> list[Path]:
    return [unet_file(tmp_path / "a.pt", 1, base=4), unet_file(tmp_path / "b.pt", 2, base=6)]


def test_the_ensemble_outputs_the_mean_of_its_members_logits_and_names_them(
    members: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "seg_fine.pt"
    assert mgs_export(["ensemble", *map(str, members), "--out", str(out)]) == 0
    ensemble, record = load_network(out)
    nets = [load_network(p)[0] for p in members]
    x = torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        mean = (nets[0](x) + nets[1](x)) / 2
        got = ensemble(x)
        assert not torch.allclose(nets[0](x), nets[1](x), atol=1e-3)
    assert torch.allclose(got, mean, atol=1e-5)
    assert record["kind"] == "seg_fine" and record["multiple"] == 8
    assert [m["base"] for m in record["config"]["members"]] == [4, 6]
    assert [m["sha256"] for m in record["training"]["ensemble_of"]] == [sha256_file(p) for p in members]
    assert record["command"].startswith(f"mgs-export ensemble {members[0]} {members[1]} --out")
    assert len(record["data_fingerprint"]) == 64


def test_the_exported_ensemble_keeps_the_device_contract(members: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "seg_fine.pt"
    assert mgs_export(["ensemble", *map(str, members), "--out", str(out)]) == 0
    assert mgs_export(["onnx", "--models", str(tmp_path), "--out", str(tmp_path), "--only", "seg_fine"]) == 0
    session = onnx_session(tmp_path / "seg_fine.fp32.onnx")
    x = torch.rand(3, 3, 96, 200, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        reference = load_network(out)[0](x).argmax(1).numpy()
    classes = session.run(None, {"image": x.numpy()})[0]
    assert classes.dtype == np.uint8 and classes.shape == (3, 96, 200)
    assert np.mean(classes == reference) > 0.999


def test_what_cannot_be_an_ensemble_is_refused(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.pt"
    assert mgs_export(["ensemble", str(members[0]), "--out", str(out)]) == 2
    assert "at least two" in capsys.readouterr().err
    coarse = unet_file(tmp_path / "coarse.pt", 3, base=4, kind="seg_coarse")
    assert mgs_export(["ensemble", str(members[0]), str(coarse), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "differs from" in err and "in kind" in err
    eye = tmp_path / "eye.pt"
    save_atomic(weight_record(EyeRegressor().eval(), "eye", (50, 50), "0" * 64, "train-eye", {}), eye)
    assert mgs_export(["ensemble", str(members[0]), str(eye), "--out", str(out)]) == 2
    assert "not a single U-Net" in capsys.readouterr().err
    assert not out.exists()


def test_an_ensemble_fine_tunes_as_one_network_and_keeps_its_members(members: list[Path], tmp_path: Path) -> None:
    """A facility fine-tunes the shipped seg_fine with --init; that must work when it is an ensemble."""
    from export.synth.writer import write_dataset

    data = write_dataset(tmp_path / "synth", frames=2, seed=3, progress=False)
    ensemble = tmp_path / "ensemble.pt"
    assert mgs_export(["ensemble", *map(str, members), "--out", str(ensemble)]) == 0
    out = tmp_path / "tuned.pt"
    common = ["train-seg", "--model", "fine", "--data", str(data), "--init", str(ensemble), "--crop", "48"]
    assert mgs_export([*common, "--epochs", "1", "--out", str(out), "--quiet"]) == 0
    tuned, record = load_network(out)
    assert record["architecture"] == "models.unet.UNetEnsemble"
    assert record["config"] == load_network(ensemble)[1]["config"]
    assert record["training"]["init"]["sha256"] == sha256_file(ensemble)
    before = load_network(ensemble)[0].state_dict()
    assert any(not torch.equal(v, before[k]) for k, v in tuned.state_dict().items() if v.is_floating_point())
    assert mgs_export([*common, "--base", "6", "--out", str(tmp_path / "x.pt")]) == 2


def test_one_member_trains_alone_and_learns_from_the_whole_ensemble(
    members: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Distillation: the device runs one U-Net pass where the ensemble runs one per member."""
    from export.synth.writer import write_dataset

    data = write_dataset(tmp_path / "synth", frames=2, seed=3, progress=False)
    ensemble = tmp_path / "ensemble.pt"
    assert mgs_export(["ensemble", *map(str, members), "--out", str(ensemble)]) == 0
    out = tmp_path / "student.pt"
    common = ["train-seg", "--model", "fine", "--data", str(data), "--crop", "48", "--epochs", "1", "--quiet"]
    distil = [*common, "--init", str(ensemble), "--teacher", str(ensemble)]
    assert mgs_export([*distil, "--init-member", "1", "--out", str(out)]) == 0
    student, record = load_network(out)
    assert record["architecture"] == "models.unet.UNet" and record["config"]["base"] == 6
    assert record["training"]["init"]["member"] == 1 and record["training"]["distil"] == 0.5
    assert record["training"]["teacher"]["sha256"] == sha256_file(ensemble)
    start = load_network(members[1])[0].state_dict()
    assert any(not torch.equal(v, start[k]) for k, v in student.state_dict().items() if v.is_floating_point())
    coarse = unet_file(tmp_path / "coarse.pt", 3, base=4, kind="seg_coarse")
    refused = [
        ([*distil, "--init-member", "2"], "has members 0 to 1"),
        ([*common, "--init", str(members[0]), "--init-member", "0"], "is a single U-Net, not an ensemble"),
        ([*common, "--init-member", "0"], "give --init too"),
        ([*common, "--distil-weight", "0.5"], "give --teacher too"),
        ([*distil, "--distil-weight", "0"], "would leave the --teacher unused"),
        ([*common, "--teacher", str(coarse)], "holds a 'seg_coarse' network, not 'seg_fine'"),
    ]
    for argv, message in refused:
        assert mgs_export([*argv, "--out", str(tmp_path / "x.pt")]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
