"""mgs_core/manifest.py: the device refuses missing, truncated and altered model files with a message
that names the file and says what to do, before onnxruntime ever parses them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from device.eyes import VERIFIER_COLUMN
from mgs_core.errors import MgsError
from mgs_core.manifest import (
    DEFAULT_MODELS_DIR,
    MANIFEST_NAME,
    MODELS_DIR_ENV,
    load_manifest,
    read_verified_model,
    resolve_models_dir,
    save_entry,
    set_status,
    sha256_file,
    verify_model_file,
)

NAMES = ("seg_coarse", "seg_fine", "eye")


@pytest.fixture()
def models_dir(tmp_path: Path) -> Path:
    """A copy of the shipped models folder (manifest + every ONNX file it lists)."""
    out = tmp_path / "models"
    out.mkdir()
    shutil.copy(DEFAULT_MODELS_DIR / MANIFEST_NAME, out / MANIFEST_NAME)
    for entry in load_manifest(DEFAULT_MODELS_DIR).entries:
        shutil.copy(entry.path, out / entry.file)
    return out


def test_shipped_manifest_lists_every_network_and_matches_its_files():
    manifest = load_manifest(DEFAULT_MODELS_DIR)
    for name in NAMES:
        for precision in ("fp32", "int8"):
            entry = next(e for e in manifest.entries if (e.name, e.precision) == (name, precision))
            assert entry.file == f"{name}.{precision}.onnx"
            assert verify_model_file(entry) == DEFAULT_MODELS_DIR / entry.file
            assert entry.toolchain["onnxruntime"] and entry.toolchain["torch"]
    seg = manifest.entry("seg_fine", "fp32")
    assert seg.input.name == "image" and seg.input.shape == ("N", 3, "H", "W")
    assert seg.output.name == "classes" and seg.output.dtype == "uint8" and seg.output.shape == ("N", "H", "W")
    assert seg.class_names == ("background", "animal", "ears", "eyes")
    coarse = manifest.entry("seg_coarse", "fp32")
    assert all(isinstance(d, int) for d in coarse.input.shape[1:])
    eye = manifest.entry("eye", "fp32")
    assert (eye.input.name, eye.input.shape) == ("patch", ("N", 3, 50, 50))
    assert (eye.output.name, eye.output.shape) == ("score", ("N", VERIFIER_COLUMN + 1)), (
        "score and the verifier's logit"
    )
    int8 = next(e for e in manifest.entries if (e.name, e.precision) == ("seg_fine", "int8"))
    assert int8.calibration["sha256"] and int8.calibration["samples"] > 0 and int8.calibration["source"]


def test_missing_file_is_refused_with_the_file_name_and_what_to_do(models_dir: Path):
    entry = load_manifest(models_dir).entry("eye", "fp32")
    entry.path.unlink()
    with pytest.raises(MgsError) as err:
        verify_model_file(entry)
    message = str(err.value)
    assert str(entry.path) in message and "missing" in message
    assert "mgs-export onnx" in message and "restore models/ from git" in message


def test_truncated_file_is_refused_before_onnxruntime(models_dir: Path):
    from device.inference import load_models

    entry = load_manifest(models_dir).entry("seg_fine", "fp32")
    data = entry.path.read_bytes()
    entry.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MgsError) as err:
        verify_model_file(entry)
    assert str(entry.path) in str(err.value) and "truncated or corrupt" in str(err.value)
    # The device's loader gives the manifest's message, not an onnxruntime protobuf parse error.
    with pytest.raises(MgsError) as err:
        load_models(models_dir, precision="fp32")
    assert "truncated or corrupt" in str(err.value) and "seg_fine.fp32.onnx" in str(err.value)


def test_same_size_alteration_is_a_hash_mismatch(models_dir: Path):
    entry = load_manifest(models_dir).entry("eye", "int8")
    data = bytearray(entry.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    entry.path.write_bytes(bytes(data))
    with pytest.raises(MgsError) as err:
        read_verified_model(entry)
    message = str(err.value)
    assert "does not match the manifest" in message and str(entry.path) in message
    assert "mgs-export quantize" in message


def test_refused_and_absent_entries_say_what_to_do(models_dir: Path):
    set_status(models_dir, "seg_fine", "int8", "refused", {"refused_because": "argmax agreement 97%"})
    manifest = load_manifest(models_dir)
    with pytest.raises(MgsError) as err:
        manifest.entry("seg_fine", "int8")
    assert "refused" in str(err.value) and "argmax agreement 97%" in str(err.value) and "fp32" in str(err.value)
    with pytest.raises(MgsError) as err:
        manifest.entry("seg_fine", "fp16")
    assert "seg_fine/fp32" in str(err.value)


@pytest.mark.parametrize(
    "content, expected",
    [
        (None, "is missing"),
        ("{not json", "cannot be read"),
        (json.dumps({"format": "something-else"}), "not an mgs-rack model manifest"),
        (json.dumps({"format": "mgs-rack-models", "version": 1, "models": [{"name": "eye"}]}), "malformed model entry"),
    ],
)
def test_bad_manifest_is_a_clear_error(tmp_path: Path, content: str | None, expected: str):
    if content is not None:
        (tmp_path / MANIFEST_NAME).write_text(content)
    with pytest.raises(MgsError) as err:
        load_manifest(tmp_path)
    assert expected in str(err.value) and str(tmp_path / MANIFEST_NAME) in str(err.value)


def test_save_entry_replaces_by_name_and_precision(models_dir: Path):
    raw = json.loads((models_dir / MANIFEST_NAME).read_text())
    before = len(raw["models"])
    record = next(m for m in raw["models"] if (m["name"], m["precision"]) == ("eye", "fp32"))
    (models_dir / "eye.copy.onnx").write_bytes((models_dir / "eye.fp32.onnx").read_bytes())
    record = {**record, "file": "eye.copy.onnx", "sha256": sha256_file(models_dir / "eye.copy.onnx")}
    save_entry(models_dir, record)
    manifest = load_manifest(models_dir)
    assert len(manifest.entries) == before
    assert verify_model_file(manifest.entry("eye", "fp32")) == models_dir / "eye.copy.onnx"


def test_models_dir_comes_from_argument_then_environment(monkeypatch, tmp_path: Path):
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    assert resolve_models_dir() == DEFAULT_MODELS_DIR
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert resolve_models_dir() == tmp_path
    assert resolve_models_dir(tmp_path / "x") == tmp_path / "x"
    with pytest.raises(MgsError, match="is missing"):
        load_manifest()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"size_bytes": "big"}, "key 'models[0].size_bytes' = 'big' must be a whole number"),
        ({"sha256": "abc"}, "key 'models[0].sha256' = 'abc': must be 64 lowercase hex digits"),
        ({"status": "maybe"}, "key 'models[0].status' = 'maybe' must be one of 'accepted', 'unverified', 'refused'"),
        ({"inputs": [{"name": "image", "dtype": "float32"}]}, "required key 'models[0].inputs[0].shape' is missing"),
    ],
)
def test_a_malformed_entry_names_its_key(tmp_path: Path, change: dict, expected: str):
    raw = json.loads((DEFAULT_MODELS_DIR / MANIFEST_NAME).read_text())
    raw["models"] = [{**raw["models"][0], **change}]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(MgsError) as err:
        load_manifest(tmp_path)
    assert "malformed model entry" in str(err.value) and expected in str(err.value) and "re-download" in str(err.value)


def test_keys_a_newer_toolchain_adds_are_left_alone(tmp_path: Path):
    raw = json.loads((DEFAULT_MODELS_DIR / MANIFEST_NAME).read_text())
    raw["models"] = [{**raw["models"][0], "written_by": "a later mgs-export"}]
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw))
    assert load_manifest(tmp_path).entries[0].name == raw["models"][0]["name"]


def test_save_entry_refuses_a_record_the_device_could_not_read(models_dir: Path):
    record = json.loads((models_dir / MANIFEST_NAME).read_text())["models"][0]
    with pytest.raises(MgsError, match="status"):
        save_entry(models_dir, {**record, "status": "fine"})
