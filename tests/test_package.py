"""`mgs-export package`: a verified models folder -> a model set that a device can load, check and
self-test; a folder or set that is not what it claims is refused with a message that says why."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from device.inference import load_models
from device.model_store import SELFTEST_NAME, run_selftest
from export.package import package
from mgs_core.errors import MgsError
from mgs_core.manifest import MANIFEST_NAME, load_manifest, save_entry, set_status, sha256_bytes

REPO = Path(__file__).resolve().parents[1]


def models_copy(dest: Path) -> Path:
    """The shipped models folder (manifest and ONNX files only), to change without touching models/."""
    shutil.copytree(
        REPO / "models", dest, ignore=shutil.ignore_patterns("*.py", "*.pt", "*.md", "*.json", "__pycache__")
    )
    shutil.copy(REPO / "models" / MANIFEST_NAME, dest / MANIFEST_NAME)
    return dest


def blind_models(dest: Path) -> Path:
    """A models folder whose seg_coarse sees only background (its class map times 0): it loads, its
    hashes check and it passes its own self-test, but it finds no animal. Stands for a bad training run."""
    folder = models_copy(dest)
    raw = json.loads((folder / MANIFEST_NAME).read_text())
    for record in raw["models"]:
        if record["name"] != "seg_coarse":
            continue
        path = folder / record["file"]
        model = onnx.load(path)
        cast = next(n for n in reversed(model.graph.node) if n.output[0] == model.graph.output[0].name)
        zero = numpy_helper.from_array(np.zeros((), np.int64), "blind_zero")
        model.graph.initializer.append(zero)
        model.graph.node.append(helper.make_node("Mul", [cast.input[0], "blind_zero"], ["blind_classes"]))
        cast.input[0] = "blind_classes"
        nodes = list(model.graph.node)
        nodes.insert(nodes.index(cast), nodes.pop())  # Mul before the final Cast: nodes stay in order
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        data = model.SerializeToString()
        path.write_bytes(data)
        save_entry(folder, {**record, "sha256": sha256_bytes(data), "size_bytes": len(data)})
    return folder


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("set") / "v1.tar.gz"
    report = out.parent / "evaluate.json"
    report.write_text(
        json.dumps(
            {
                "frames": 20,
                "detection": {"fast": {"precision": 0.9, "recall": 0.8}},
                "end_to_end": {"fast": {"mae": 0.7}},
            }
        )
    )
    done = package(REPO / "models", out, "v1", evaluate=report, selftest_frames=3)
    return out, done.manifest_sha256


def test_a_packaged_set_loads_checks_and_passes_its_selftest(packaged, tmp_path: Path) -> None:
    archive, manifest_sha = packaged
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    assert all(m.isfile() and "/" not in m.name for m in members)  # flat, no links, no folders
    folder = unpack(archive, tmp_path / "set")
    assert sha256_bytes((folder / MANIFEST_NAME).read_bytes()) == manifest_sha
    manifest = load_manifest(folder)
    assert manifest.set is not None and manifest.set.version == "v1"
    assert manifest.set.evaluate == {
        "pipeline": "fast",
        "frames": 20,
        "heldout_mae": 0.7,
        "eye_recall": 0.8,
        "eye_precision": 0.9,
        "facility_label_mae": None,
    }
    assert manifest.selftest is not None and manifest.selftest.file == SELFTEST_NAME
    assert set(manifest.reports) == {"evaluate"}
    listed = {e.file for e in manifest.entries} | {SELFTEST_NAME, "evaluate.json", MANIFEST_NAME}
    assert {m.name for m in members} == listed  # nothing unlisted
    assert {(e.name, e.precision) for e in manifest.entries} >= {
        ("eye", "int8"),
        ("seg_coarse", "int8"),
        ("seg_fine", "int8"),
    }
    models = load_models(folder, "int8")
    assert "passed" in run_selftest(models, folder / SELFTEST_NAME)
    with np.load(folder / SELFTEST_NAME) as npz:
        assert int(npz["images"]) == 3 and len(npz["eye_x"]) > 0  # the reference images show eyes


def test_a_corrupted_set_file_is_refused_by_its_hash(packaged, tmp_path: Path) -> None:
    folder = unpack(packaged[0], tmp_path / "set")
    victim = folder / "seg_fine.int8.onnx"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(MgsError, match="seg_fine.int8.onnx does not match the manifest"):
        load_models(folder, "int8")


def test_tampered_selftest_outputs_fail_the_selftest(packaged, tmp_path: Path) -> None:
    folder = unpack(packaged[0], tmp_path / "set")
    path = folder / SELFTEST_NAME
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["eye_score"] = arrays["eye_score"] + 2.0  # what the set claims its models score
    np.savez_compressed(path, **arrays)
    with pytest.raises(MgsError, match="does not behave on this device as it was checked"):
        run_selftest(load_models(folder, "int8"), path)
    arrays["eye_score"] = arrays["eye_score"] - 2.0
    arrays["eye_x"] = arrays["eye_x"][1:]
    for key in ("eye_image", "eye_y", "eye_score", "eye_quality_ok"):
        arrays[key] = arrays[key][1:]
    np.savez_compressed(path, **arrays)
    with pytest.raises(MgsError, match="eye"):
        run_selftest(load_models(folder, "int8"), path)


def test_a_blind_set_passes_its_own_selftest_but_finds_nothing(tmp_path: Path) -> None:
    done = package(blind_models(tmp_path / "models"), tmp_path / "blind.tar.gz", "blind", selftest_frames=2)
    assert len(done.selftest) == 0
    folder = unpack(done.path, tmp_path / "set")
    assert "passed" in run_selftest(load_models(folder, "int8"), folder / SELFTEST_NAME)


def test_folders_that_are_not_ready_are_refused(tmp_path: Path) -> None:
    unverified = models_copy(tmp_path / "unverified")
    set_status(unverified, "seg_fine", "int8", "unverified", {})
    with pytest.raises(MgsError, match="not accepted by the parity gate.*mgs-export verify"):
        package(unverified, tmp_path / "a.tar.gz", "a")
    corrupt = models_copy(tmp_path / "corrupt")
    (corrupt / "eye.fp32.onnx").write_bytes(b"\0" * 100)
    with pytest.raises(MgsError, match="eye.fp32.onnx"):
        package(corrupt, tmp_path / "b.tar.gz", "b")
    lacking = models_copy(tmp_path / "lacking")
    raw = json.loads((lacking / MANIFEST_NAME).read_text())
    raw["models"] = [m for m in raw["models"] if m["name"] != "eye"]
    (lacking / MANIFEST_NAME).write_text(json.dumps(raw))
    with pytest.raises(MgsError, match="no int8 model for eye"):
        package(lacking, tmp_path / "c.tar.gz", "c")
    assert not any(tmp_path.glob("*.tar.gz*"))


def test_the_command_prints_the_identity_and_refuses_in_one_line(tmp_path: Path) -> None:
    out = tmp_path / "set.tar.gz"
    cmd = [sys.executable, "-m", "export.cli", "package", "--out", str(out), "--selftest-frames", "1"]
    done = subprocess.run([*cmd, "--version", "bad name"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "--version 'bad name'" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([*cmd, "--version", "v9"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    digest = sha256_bytes(unpack(out, tmp_path / "x").joinpath(MANIFEST_NAME).read_bytes())
    assert f"manifest sha256 {digest}" in done.stdout
