"""`mgs-export triton-repo`: Triton's layout, and config.pbtxt that Triton's own schema parses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from google.protobuf import text_format

from device.eyes import VERIFIER_COLUMN
from export.cli import main as mgs_export
from mgs_core.manifest import DEFAULT_MODELS_DIR, load_manifest, sha256_file


def triton_model_config():
    """Triton's ModelConfig message from tritonclient's generated model_config_pb2 (no gRPC needed)."""
    spec = importlib.util.find_spec("tritonclient")
    path = Path(spec.submodule_search_locations[0]) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelConfig


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("triton")
    assert mgs_export(["triton-repo", str(out)]) == 0
    return out


def test_layout_and_files_match_the_manifest(repo: Path):
    manifest = load_manifest(DEFAULT_MODELS_DIR)
    assert sorted(p.name for p in repo.iterdir()) == ["eye", "seg_coarse", "seg_fine"]
    for name in ("eye", "seg_coarse", "seg_fine"):
        assert (repo / name / "config.pbtxt").is_file()
        assert sha256_file(repo / name / "1" / "model.onnx") == manifest.entry(name, "fp32").sha256


def test_configs_parse_as_triton_model_config(repo: Path):
    ModelConfig = triton_model_config()
    fine = text_format.Parse((repo / "seg_fine" / "config.pbtxt").read_text(), ModelConfig())
    assert fine.name == "seg_fine" and fine.platform == "onnxruntime_onnx" and fine.max_batch_size >= 4
    assert [(i.name, list(i.dims)) for i in fine.input] == [("image", [3, -1, -1])]
    assert [(o.name, list(o.dims)) for o in fine.output] == [("classes", [-1, -1])]
    assert (
        ModelConfig.DESCRIPTOR.fields_by_name["input"]
        .message_type.fields_by_name["data_type"]
        .enum_type.values_by_number[fine.output[0].data_type]
        .name
        == "TYPE_UINT8"
    )
    assert 4 in fine.dynamic_batching.preferred_batch_size
    assert fine.instance_group[0].kind == fine.instance_group[0].KIND_GPU
    assert fine.parameters["sha256"].string_value == load_manifest(DEFAULT_MODELS_DIR).entry("seg_fine", "fp32").sha256
    coarse = text_format.Parse((repo / "seg_coarse" / "config.pbtxt").read_text(), ModelConfig())
    h, w = load_manifest(DEFAULT_MODELS_DIR).entry("seg_coarse", "fp32").input_size
    assert list(coarse.input[0].dims) == [3, h, w] and list(coarse.output[0].dims) == [h, w]
    eye = text_format.Parse((repo / "eye" / "config.pbtxt").read_text(), ModelConfig())
    assert [(i.name, list(i.dims)) for i in eye.input] == [("patch", [3, 50, 50])]
    assert [(o.name, list(o.dims)) for o in eye.output] == [("score", [VERIFIER_COLUMN + 1])], (
        "score and verifier logit"
    )
    assert max(eye.dynamic_batching.preferred_batch_size) <= eye.max_batch_size


def test_cpu_instances_and_a_corrupt_file_is_refused(tmp_path: Path, capsys):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(DEFAULT_MODELS_DIR, models, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    assert mgs_export(["triton-repo", str(tmp_path / "cpu"), "--models", str(models), "--instance-kind", "cpu"]) == 0
    assert "kind: KIND_CPU" in (tmp_path / "cpu" / "eye" / "config.pbtxt").read_text()
    (models / "eye.fp32.onnx").write_bytes(b"not a model")
    assert mgs_export(["triton-repo", str(tmp_path / "bad"), "--models", str(models)]) == 2
    assert "eye.fp32.onnx" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
