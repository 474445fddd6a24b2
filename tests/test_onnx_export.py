"""ONNX export: the device's I/O contract, folded BatchNorm, metadata, and PyTorch == ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from export.cli import main as mgs_export
from export.onnx_export import fold_batchnorm, onnx_session, random_checkpoint, read_metadata
from mgs_core.manifest import load_manifest, verify_model_file
from models.eye_regressor import EyeRegressor


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """All three untrained stand-ins exported through the real command."""
    out = tmp_path_factory.mktemp("onnx")
    assert mgs_export(["onnx", "--random-init", "--models", str(out), "--out", str(out)]) == 0
    return out


def _io(model: onnx.ModelProto, value: onnx.ValueInfoProto) -> tuple[int, list]:
    t = value.type.tensor_type
    return t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]


def test_unet_contract_and_metadata(exported: Path):
    model = onnx.load(exported / "seg_fine.fp32.onnx")
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["classes"]
    assert _io(model, model.graph.input[0]) == (onnx.TensorProto.FLOAT, ["N", 3, "H", "W"])
    assert _io(model, model.graph.output[0]) == (onnx.TensorProto.UINT8, ["N", "H", "W"])
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    ops = {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in ops and "ArgMax" in ops
    meta = read_metadata(model)
    assert meta["class_names"] == ["background", "animal", "ears", "eyes"]
    assert meta["normalisation"]["channel_order"] == "BGR"
    assert {"torch", "onnx", "onnxruntime"} <= set(meta["toolchain"])
    assert meta["data_fingerprint"] == "untrained" and meta["model_version"] and meta["input_size"] == [128, 128]
    coarse = onnx.load(exported / "seg_coarse.fp32.onnx")
    assert _io(coarse, coarse.graph.input[0])[1] == ["N", 3, 160, 112]


def test_seg_fine_runs_at_any_multiple_of_8_and_matches_torch(exported: Path):
    ckpt = random_checkpoint("seg_fine")
    session = onnx_session(exported / "seg_fine.fp32.onnx")
    for batch, h, w in ((1, 128, 128), (3, 96, 200)):
        x = torch.rand(batch, 3, h, w, generator=torch.Generator().manual_seed(h))
        with torch.no_grad():
            ref = ckpt.module(x).argmax(1).numpy().astype(np.uint8)
        got = session.run(None, {"image": x.numpy()})[0]
        assert got.dtype == np.uint8 and got.shape == (batch, h, w)
        assert np.mean(got == ref) > 0.999


def _with_adaptive_pool(folded_eye: EyeRegressor) -> nn.Module:
    """The paper's layer, nn.AdaptiveAvgPool2d, in place of the MatMul formulation."""

    class Reference(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features, self.head = folded_eye.features, folded_eye.head
            self.pool = nn.AdaptiveAvgPool2d(5)

        def forward(self, x):
            return self.head(self.pool(self.features(x)))

    return Reference().eval()


def test_eye_onnx_equals_torch_and_the_adaptive_avg_pool_reference(exported: Path):
    ckpt = random_checkpoint("eye")
    x = torch.rand(8, 3, 50, 50, generator=torch.Generator().manual_seed(1))
    got = onnx_session(exported / "eye.fp32.onnx").run(None, {"patch": x.numpy()})[0]
    with torch.no_grad():
        ref = ckpt.module.eval()(x).numpy()
        adaptive = _with_adaptive_pool(ckpt.module.eval())(x).numpy()
    assert got.shape == (8, 1)
    assert np.abs(got - ref).max() < 1e-5
    assert np.abs(got - adaptive).max() < 1e-5
    model = onnx.load(exported / "eye.fp32.onnx")
    assert "MatMul" in {n.op_type for n in model.graph.node}
    assert "BatchNormalization" not in {n.op_type for n in model.graph.node}


@pytest.mark.parametrize("name", ["seg_coarse", "eye"])
def test_batchnorm_folding_keeps_outputs(name: str):
    ckpt = random_checkpoint(name, seed=3)
    folded = fold_batchnorm(ckpt.module)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in folded.modules())
    x = torch.rand(4, 3, *ckpt.input_size)
    with torch.no_grad():
        assert torch.allclose(folded(x), ckpt.module.eval()(x), atol=1e-4)


def test_manifest_entries_written_by_export(exported: Path):
    manifest = load_manifest(exported)
    for name in ("seg_fine", "seg_coarse", "eye"):
        entry = manifest.entry(name, "fp32")
        assert entry.accepted and verify_model_file(entry).name == f"{name}.fp32.onnx"
        assert "mgs-export onnx" in entry.command
    assert manifest.entry("eye", "fp32").metrics["onnx_vs_torch_max_abs_diff"] < 1e-5
    assert manifest.entry("seg_fine", "fp32").metrics["onnx_vs_torch_class_agreement"] > 0.999


@pytest.mark.parametrize("arch", ["paper", "wide"])
def test_trained_weight_file_is_exported_with_its_fingerprint(tmp_path: Path, arch: str):
    from export.train.weights import save_atomic, weight_record

    module = EyeRegressor(arch=arch).eval()
    save_atomic(
        weight_record(module, "eye", (50, 50), "abc123", "mgs-export train-eye --data X", {}), tmp_path / "eye.pt"
    )
    assert mgs_export(["onnx", "--models", str(tmp_path), "--only", "eye"]) == 0
    entry = load_manifest(tmp_path).entry("eye", "fp32")
    assert entry.data_fingerprint == "abc123"
    assert json.loads(json.dumps(entry.network_config)) == module.config
    assert entry.network_config["arch"] == arch
    assert entry.metrics["onnx_vs_torch_max_abs_diff"] < 1e-4
    assert read_metadata(onnx.load(entry.path))["training_command"] == "mgs-export train-eye --data X"


def test_the_device_reads_the_eye_width_an_eye_model_was_trained_at(tmp_path: Path):
    from device.inference import eye_width_of, onnx_runner
    from export.train.weights import save_atomic, weight_record

    for eye_width, folder in ((20.0, "normalised"), (0.0, "fixed")):
        module = EyeRegressor(arch="paper", eye_width=eye_width).eval()
        (tmp_path / folder).mkdir()
        save_atomic(weight_record(module, "eye", (50, 50), "abc", "cmd", {}), tmp_path / folder / "eye.pt")
        assert mgs_export(["onnx", "--models", str(tmp_path / folder), "--only", "eye"]) == 0
        runner = onnx_runner(tmp_path / folder / "eye.fp32.onnx")
        assert eye_width_of(runner.metadata.get("network_config")) == eye_width


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, capsys):
    assert mgs_export(["onnx", "--models", str(tmp_path), "--only", "seg_fine"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and "seg_fine.pt" in err and "--random-init" in err
