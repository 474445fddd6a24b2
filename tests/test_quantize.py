"""INT8 quantization and the parity gate: calibration recorded, QDQ graph, verify accepts/refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from export.cli import main as mgs_export
from export.onnx_export import onnx_session, read_metadata
from export.verify import MAX_MAE_INCREASE, int8_gate
from mgs_core.errors import MgsError
from mgs_core.manifest import load_manifest, verify_model_file


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8")
    assert mgs_export(["onnx", "--random-init", "--models", str(out)]) == 0
    assert mgs_export(["quantize", "--models", str(out), "--frames", "2"]) == 0
    return out


def test_int8_files_are_qdq_with_recorded_calibration(quantized: Path):
    manifest = load_manifest(quantized)
    hashes = set()
    for name in ("seg_fine", "seg_coarse", "eye"):
        entry = manifest.entry(name, "int8")
        assert entry.status == "unverified" and verify_model_file(entry).name == f"{name}.int8.onnx"
        model = onnx.load(entry.path)
        ops = [n.op_type for n in model.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
        meta = read_metadata(model)
        assert meta["precision"] == "int8" and meta["calibration_set"] == entry.calibration
        assert entry.calibration["frames"] == 2 and entry.calibration["samples"] > 0
        assert "mgs-export synth --seed 900" in entry.calibration["source"]
        assert entry.metrics["layer_sqnr"]["layers"] > 0
        assert entry.input == manifest.entry(name, "fp32").input and entry.output == manifest.entry(name, "fp32").output
        hashes.add(entry.calibration["sha256"])
    assert len(hashes) == 1  # one calibration set for the three networks


def _head(model: onnx.ModelProto) -> tuple[onnx.NodeProto, dict]:
    by_output = {o: n for n in model.graph.node for o in n.output}
    node = by_output[model.graph.output[0].name]
    while node.op_type in ("Cast", "ArgMax", "Reshape", "DequantizeLinear", "QuantizeLinear"):
        node = by_output[node.input[0]]
    return node, by_output


def _weight_dequantized(node: onnx.NodeProto, by_output: dict) -> bool:
    producer = by_output.get(node.input[1])
    return producer is not None and producer.op_type == "DequantizeLinear"


def test_regressor_head_stays_float_and_unet_head_follows_the_measurement(quantized: Path):
    eye = onnx.load(quantized / "eye.int8.onnx")
    node, by_output = _head(eye)
    assert node.op_type == "Gemm" and node.name in read_metadata(eye)["kept_float"]
    assert not _weight_dequantized(node, by_output)
    entry = load_manifest(quantized).entry("seg_fine", "int8")
    node, by_output = _head(onnx.load(entry.path))
    assert node.op_type == "Conv" and _weight_dequantized(node, by_output) == entry.metrics["head_quantized"]
    if entry.metrics["head_quantized"]:
        assert entry.metrics["head_quantized_agreement"] >= 0.995


def test_unet_head_goes_back_to_float_when_argmax_disagrees(quantized: Path, tmp_path: Path, monkeypatch):
    import shutil

    import export.quantize as q

    for f in ("manifest.json", "seg_coarse.fp32.onnx"):
        shutil.copy(quantized / f, tmp_path / f)
    rng = np.random.default_rng(2)
    calibration = q.CalibrationSet(
        inputs={"seg_coarse": rng.random((8, 3, 160, 112), dtype=np.float32)}, source="test", frames=1
    )
    monkeypatch.setattr(q, "MIN_HEAD_AGREEMENT", 1.01)  # no agreement is good enough: the head must stay float
    entry = next(e for e in load_manifest(tmp_path).entries if (e.name, e.precision) == ("seg_coarse", "fp32"))
    result = q.quantize_network(entry, calibration)
    node, by_output = _head(onnx.load(result["path"]))
    assert result["metrics"]["head_quantized"] is False and node.name in result["kept_float"]
    assert not _weight_dequantized(node, by_output)


def test_int8_runs_with_the_fp32_contract(quantized: Path):
    x = np.random.default_rng(0).random((2, 3, 64, 96), dtype=np.float32)
    got = onnx_session(quantized / "seg_fine.int8.onnx").run(None, {"image": x})[0]
    assert got.dtype == np.uint8 and got.shape == (2, 64, 96)


def _report(agree_fine: float, mae_fp32: float | None, mae_int8: float | None) -> dict:
    e2e = lambda m: {"fast": {"mae": m, "n": 0 if m is None else 10}}  # noqa: E731
    return {
        "pipelines": ["fast"],
        "agreement": {
            "int8_vs_fp32": {"seg_fine": {"argmax_agreement": agree_fine}, "seg_coarse": {"argmax_agreement": 0.999}}
        },
        "accuracy": {"fp32": {"end_to_end": e2e(mae_fp32)}, "int8": {"end_to_end": e2e(mae_int8)}},
    }


def test_gate_rules():
    assert int8_gate(_report(0.995, 0.80, 0.80 + MAX_MAE_INCREASE / 2))["passed"]
    failed = int8_gate(_report(0.98, 0.80, 0.80))
    assert not failed["passed"] and "seg_fine INT8 argmax agrees with FP32 on 98.00%" in failed["reasons"][0]
    worse = int8_gate(_report(0.999, 0.80, 0.90))
    assert not worse["passed"] and "+0.100 > 0.05" in worse["reasons"][0]
    assert not int8_gate(_report(0.999, None, None))["passed"]


def test_verify_refuses_int8_that_cannot_be_checked_and_the_device_then_refuses_it(
    quantized: Path, tmp_path: Path, capsys
):
    """Untrained stand-ins find no eyes, so the end-to-end MAE gate cannot pass: refused, exit 1."""
    from device.inference import load_models

    data = tmp_path / "held_out"
    assert mgs_export(["synth", "--frames", "1", "--seed", "424242", "--out", str(data), "--quiet"]) == 0
    out = tmp_path / "report"
    code = mgs_export(
        ["verify", "--data", str(data), "--models", str(quantized), "--out", str(out), "--pipeline", "fast"]
    )
    printed = capsys.readouterr().out
    assert code == 1 and "INT8 gate: FAILED" in printed and "REFUSED" in printed
    report = json.loads((out / "verify.json").read_text())
    assert report["agreement"]["int8_vs_fp32"]["seg_coarse"]["calls"] > 0
    assert report["agreement"]["int8_vs_fp32"]["eye"]["score_max_abs_diff"] is not None
    assert (out / "verify.txt").read_text().startswith("runtime")
    manifest = load_manifest(quantized)
    assert next(e for e in manifest.entries if (e.name, e.precision) == ("eye", "int8")).status == "refused"
    with pytest.raises(MgsError, match="refused by `mgs-export verify`"):
        load_models(quantized, precision="int8")
    assert load_models(quantized, precision="fp32").coarse_size == (160, 112)


def test_per_layer_comparison_names_the_nodes_to_keep_in_float(quantized: Path):
    from export.quantize import ArrayReader, layer_errors, weak_nodes

    x = np.random.default_rng(1).random((4, 3, 160, 112), dtype=np.float32)
    errors = layer_errors(
        quantized / "seg_coarse.fp32.onnx", quantized / "seg_coarse.int8.onnx", ArrayReader("image", x)
    )
    assert errors and all(db > 20 for db in errors.values())
    assert weak_nodes(onnx.load(quantized / "seg_coarse.int8.onnx"), errors) == []
    tensor = sorted(errors)[0]
    int8 = onnx.load(quantized / "seg_coarse.int8.onnx")
    producer = next(n.name for n in int8.graph.node if tensor in n.output)
    assert weak_nodes(int8, {**errors, tensor: 5.0}) == [producer]


def test_calibration_from_a_dataset_folder_is_recorded(quantized: Path, tmp_path: Path, capsys):
    import shutil

    for f in ("manifest.json", "seg_coarse.fp32.onnx", "eye.fp32.onnx"):
        shutil.copy(quantized / f, tmp_path / f)
    data = tmp_path / "facility"
    assert mgs_export(["synth", "--frames", "1", "--seed", "515151", "--out", str(data), "--quiet"]) == 0
    assert mgs_export(["quantize", "--models", str(tmp_path), "--data", str(data), "--only", "eye"]) == 0
    calibration = next(
        e for e in load_manifest(tmp_path).entries if (e.name, e.precision) == ("eye", "int8")
    ).calibration
    assert calibration["source"].startswith(f"dataset: {data}") and calibration["frames"] == 1
    assert (
        mgs_export(["quantize", "--models", str(tmp_path), "--data", str(tmp_path / "nothing"), "--only", "eye"]) == 2
    )
    assert "nothing" in capsys.readouterr().err


def test_narrow_boxes_are_calibrated_on_magnified_crops_as_the_device_sees_them():
    """seg_fine's calibration crops come from the device's view: a 215-px box's crop is magnified
    (pipeline.fine_zoom_max), so a dark eye disc covers about zoom^2 times the pixels."""
    import cv2

    from export.dataset import Box, Eye
    from export.quantize import build_calibration

    frame = np.full((600, 800, 3), 160, np.uint8)
    cv2.circle(frame, (200, 300), 5, (0, 0, 0), -1)
    boxes = [Box(box=0, roi=(100, 100, 215, 400), face_visible=True, eyes=(Eye(200.0, 300.0, 3.0),))]

    def dark_pixels(zoom_max: float) -> int:
        calibration = build_calibration([(frame, boxes)], (112, 160), 96, fine_zoom_max=zoom_max)
        head_crop = calibration.inputs["seg_fine"][0]
        assert head_crop.shape == (3, 96, 96)
        return int((head_crop.max(axis=0) < 0.3).sum())

    plain, magnified = dark_pixels(1.0), dark_pixels(1.6)
    assert 1.6**2 * 0.8 < magnified / plain < 1.6**2 * 1.2
