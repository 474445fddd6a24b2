"""`mgs-export average-weights`: the mean of networks fine-tuned from one start, and refusals of the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from export.cli import main as mgs_export
from export.train.weights import load_network, read_record, save_atomic, weight_record
from mgs_core.manifest import sha256_file
from models.eye_regressor import EyeRegressor
from models.unet import UNet


def eye_file(path: Path, seed: int, init: Path | None = None) -> Path:
    """An eye weight file; with `init`, its weights are `init`'s moved a little, as a fine-tune leaves them."""
    torch.manual_seed(seed)
    if init is None:
        module = EyeRegressor(outputs=2, arch="wide", eye_width=20.0)
        training: dict = {}
    else:
        module, _ = load_network(init)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(0.01 * torch.randn_like(p))
        training = {"init": {"path": str(init), "sha256": sha256_file(init)}}
    save_atomic(weight_record(module, "eye", (50, 50), f"{seed:064d}", f"train {seed}", training), path)
    return path


@pytest.fixture()
def family(tmp_path: Path) -> list[Path]:
    start = eye_file(tmp_path / "start.pt", 1)
    return [start, eye_file(tmp_path / "a.pt", 2, init=start), eye_file(tmp_path / "b.pt", 3, init=start)]


def test_the_average_is_the_mean_of_the_weights_and_names_its_ingredients(family: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "soup.pt"
    assert mgs_export(["average-weights", *map(str, family), "--out", str(out)]) == 0
    module, record = load_network(out)
    states = [read_record(p)["state_dict"] for p in family]
    for key, value in module.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, sum(s[key] for s in states) / 3, atol=1e-6), key
    assert not torch.equal(record["state_dict"]["head.1.weight"], states[0]["head.1.weight"])
    assert record["kind"] == "eye" and record["config"]["eye_width"] == 20.0
    assert [a["sha256"] for a in record["training"]["average_of"]] == [sha256_file(p) for p in family]
    assert record["training"]["start_sha256"] == sha256_file(family[0])
    assert "average-weights" in record["command"] and len(record["data_fingerprint"]) == 64
    assert module(torch.rand(2, 3, 50, 50)).shape == (2, 2)


def test_networks_from_different_starts_are_refused(
    family: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stranger = eye_file(tmp_path / "stranger.pt", 9)
    out = tmp_path / "soup.pt"
    assert mgs_export(["average-weights", str(family[1]), str(stranger), "--out", str(out)]) == 2
    assert "not fine-tuned from one start" in capsys.readouterr().err
    assert not out.exists()


def test_networks_of_another_kind_or_a_single_file_are_refused(
    family: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unet = tmp_path / "seg_fine.pt"
    save_atomic(weight_record(UNet(base=4), "seg_fine", (96, 96), "0" * 64, "train", {}), unet)
    assert mgs_export(["average-weights", str(family[0]), str(unet), "--out", str(tmp_path / "x.pt")]) == 2
    assert "differs from" in capsys.readouterr().err
    assert mgs_export(["average-weights", str(family[0]), "--out", str(tmp_path / "x.pt")]) == 2
    assert "at least two" in capsys.readouterr().err
