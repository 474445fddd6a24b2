"""Loading the shipped models: hash check, backend choice, runner settings."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from device.eyes import VERIFIER_COLUMN
from device.inference import BackendConfig, load_models, providers_for
from mgs_core.errors import ConfigError, MgsError
from mgs_core.manifest import DEFAULT_MODELS_DIR
from mgs_core.tomlconfig import from_dict


def copy_models(tmp_path: Path) -> Path:
    target = tmp_path / "models"
    target.mkdir()
    for f in DEFAULT_MODELS_DIR.iterdir():
        if f.suffix in (".onnx", ".json"):
            shutil.copy(f, target / f.name)
    return target


def test_shipped_fp32_models_load_and_run() -> None:
    models = load_models(precision="fp32")
    h, w = models.coarse_size
    assert models.seg_coarse(np.zeros((2, 3, h, w), np.float32)).shape == (2, h, w)
    assert models.seg_fine(np.zeros((1, 3, 96, 104), np.float32)).dtype == np.uint8
    assert models.eye(np.zeros((3, 3, 50, 50), np.float32)).shape == (3, VERIFIER_COLUMN + 1), (
        "score and verifier logit"
    )
    assert len(models.model_sha256) == 64
    session = models.seg_fine.session  # type: ignore[attr-defined]
    assert session.get_session_options().intra_op_num_threads == 2


def test_a_tampered_model_file_is_refused_with_its_name(tmp_path: Path) -> None:
    models_dir = copy_models(tmp_path)
    victim = models_dir / "seg_fine.fp32.onnx"
    data = bytearray(victim.read_bytes())
    data[-10] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(MgsError, match="seg_fine.fp32.onnx"):
        load_models(models_dir, "fp32")


def test_a_missing_model_file_is_refused(tmp_path: Path) -> None:
    models_dir = copy_models(tmp_path)
    (models_dir / "eye.fp32.onnx").unlink()
    with pytest.raises(MgsError, match="eye.fp32.onnx.*missing"):
        load_models(models_dir, "fp32")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="this machine has CUDA")
def test_gpu_backend_without_gpu_onnxruntime_says_what_to_install() -> None:
    with pytest.raises(MgsError, match="CUDAExecutionProvider.*GPU build of onnxruntime"):
        providers_for("cuda")
    assert providers_for("cpu") == ("CPUExecutionProvider",)


def test_backend_config_validation() -> None:
    assert from_dict(BackendConfig, {"type": "tensorrt", "precision": "fp32"}).type == "tensorrt"
    with pytest.raises(ConfigError, match="backend.threads"):
        from_dict(BackendConfig, {"threads": 0})
    with pytest.raises(ConfigError, match="must be one of"):
        from_dict(BackendConfig, {"type": "tpu"})
