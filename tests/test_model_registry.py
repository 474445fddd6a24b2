"""The model-set checks of the registry: a set `mgs-export package` would write passes, and each way
of breaking one is refused with a message that names the file and what is wrong."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from server import model_sets
from server.db import connect
from server.model_registry import Registry, find_version, versions
from server.model_sets import SetRefused, check_archive
from tests.model_set_support import add_member, build_set, entry, file_ref, set_folder

MAX = 64 * 1024 * 1024


def refused(tmp_path: Path, archive: Path, max_bytes: int = MAX) -> str:
    with pytest.raises(SetRefused) as info:
        check_archive(archive, tmp_path / "unpacked", max_bytes)
    assert not (tmp_path / "unpacked").exists(), "a refused set must leave nothing behind"
    return str(info.value)


def test_a_packaged_set_passes_and_is_identified_by_its_manifest_hash(tmp_path: Path) -> None:
    checked = check_archive(build_set(tmp_path), tmp_path / "unpacked", MAX)
    assert checked.version == "v2"
    assert checked.manifest_sha256 == model_sets.sha256_file(tmp_path / "unpacked" / "manifest.json")
    assert set(checked.files) == {
        "manifest.json",
        "eye.int8.onnx",
        "seg_coarse.int8.onnx",
        "seg_fine.int8.onnx",
        "selftest.npz",
        "evaluate.json",
    }
    assert checked.evaluate == {"heldout_mae": 0.41, "eye_recall": 0.93, "eye_precision": 0.97}


def test_a_set_made_with_tar_in_its_folder_passes(tmp_path: Path) -> None:
    """`tar czf set.tar.gz -C DIR .` names members ./manifest.json ... after a "." folder entry."""
    folder = tmp_path / "set-v2"
    set_folder(folder)
    archive = tmp_path / "by-tar.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")
    assert check_archive(archive, tmp_path / "unpacked", MAX).version == "v2"


def test_a_set_with_fp32_files_too_passes(tmp_path: Path) -> None:
    checked = check_archive(build_set(tmp_path, precisions=("fp32", "int8")), tmp_path / "unpacked", MAX)
    assert "eye.fp32.onnx" in checked.files


def _corrupt_file(folder: Path, manifest: dict[str, Any]) -> None:
    path = folder / "seg_fine.int8.onnx"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_file_whose_hash_differs_from_the_manifest_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, build_set(tmp_path, hook=_corrupt_file))
    assert message.startswith("seg_fine.int8.onnx: sha256 ")
    assert "does not match the manifest's" in message


def test_a_listed_file_that_is_missing_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, build_set(tmp_path, hook=lambda f, m: (f / "eye.int8.onnx").unlink()))
    assert message == "eye.int8.onnx: listed in manifest.json but missing from the archive"


def test_a_file_the_manifest_does_not_list_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, build_set(tmp_path, hook=lambda f, m: (f / "notes.txt").write_text("hi")))
    assert message.startswith("notes.txt: not listed in manifest.json")


def test_a_truncated_file_is_refused_by_its_size(tmp_path: Path) -> None:
    def truncate(folder: Path, manifest: dict[str, Any]) -> None:
        path = folder / "eye.int8.onnx"
        path.write_bytes(path.read_bytes()[:100])

    assert "eye.int8.onnx: 100 bytes, the manifest says" in refused(tmp_path, build_set(tmp_path, hook=truncate))


@pytest.mark.parametrize("name", ["../evil.onnx", "/etc/evil", "sub/evil.onnx", "./../x"])
def test_paths_out_of_the_set_folder_are_refused(tmp_path: Path, name: str) -> None:
    message = refused(tmp_path, build_set(tmp_path, extra=add_member(name)))
    assert "a model set is flat" in message
    assert not (tmp_path / "evil.onnx").exists() and not (tmp_path / "unpacked").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE])
def test_links_folders_and_devices_are_refused(tmp_path: Path, kind: bytes) -> None:
    message = refused(tmp_path, build_set(tmp_path, extra=add_member("link.onnx", kind=kind, link="/etc/passwd")))
    assert message.startswith("link.onnx: only regular files")


def test_a_name_twice_in_the_archive_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, build_set(tmp_path, extra=add_member("selftest.npz")))
    assert "selftest.npz" in message


def test_a_set_larger_than_the_limit_is_refused_while_unpacking(tmp_path: Path) -> None:
    message = refused(tmp_path, build_set(tmp_path, precisions=("fp32", "int8")), max_bytes=1024 * 1024)
    assert "the unpacked set exceeds 1 MiB ([models] max_set_mb)" in message


def test_an_upload_that_is_no_archive_is_refused(tmp_path: Path) -> None:
    bogus = tmp_path / "set.tar.gz"
    bogus.write_bytes(b"PK\x03\x04 this is a zip, not a tarball")
    assert "not a readable .tar.gz model set" in refused(tmp_path, bogus)


def _model(folder: Path, name: str) -> onnx.ModelProto:
    return onnx.load(folder / name)


def _resave(folder: Path, manifest: dict[str, Any], name: str, model: onnx.ModelProto) -> None:
    onnx.save(model, folder / name)
    for m in manifest["models"]:
        if m["file"] == name:
            ref = file_ref(folder, name)
            m["sha256"], m["size_bytes"] = ref["sha256"], ref["size_bytes"]


def test_a_manifest_whose_input_shape_differs_from_the_graph_is_refused(tmp_path: Path) -> None:
    def shape(folder: Path, manifest: dict[str, Any]) -> None:
        entry(manifest, "eye")["inputs"][0]["shape"] = ["N", 3, 64, 64]

    message = refused(tmp_path, build_set(tmp_path, hook=shape))
    assert message.startswith(
        "eye.int8.onnx: graph inputs are [{'name': 'patch', 'dtype': 'float32', 'shape': ['N', 3, 50, 50]}]"
    )


def test_a_graph_with_another_input_size_than_the_device_feeds_is_refused(tmp_path: Path) -> None:
    def resize(folder: Path, manifest: dict[str, Any]) -> None:
        model = _model(folder, "eye.int8.onnx")
        for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
            dim.dim_value = 64
        _resave(folder, manifest, "eye.int8.onnx", model)
        entry(manifest, "eye")["inputs"][0]["shape"] = ["N", 3, 64, 64]

    message = refused(tmp_path, build_set(tmp_path, hook=resize))
    assert message == "eye.int8.onnx (eye): input must be 50x50 eye patches, is [64, 64]"


def test_manifest_classes_that_differ_from_the_file_metadata_are_refused(tmp_path: Path) -> None:
    def classes(folder: Path, manifest: dict[str, Any]) -> None:
        entry(manifest, "seg_fine")["class_names"] = ["background", "animal", "eyes", "ears"]

    message = refused(tmp_path, build_set(tmp_path, hook=classes))
    assert message.startswith("seg_fine.int8.onnx: metadata class_names is ['background', 'animal', 'ears', 'eyes']")


def test_classes_the_device_does_not_know_are_refused_even_when_file_and_manifest_agree(tmp_path: Path) -> None:
    def classes(folder: Path, manifest: dict[str, Any]) -> None:
        model = _model(folder, "seg_coarse.int8.onnx")
        for p in model.metadata_props:
            if p.key == "class_names":
                p.value = '["background", "mouse", "ears", "eyes"]'
        _resave(folder, manifest, "seg_coarse.int8.onnx", model)
        entry(manifest, "seg_coarse")["class_names"] = ["background", "mouse", "ears", "eyes"]

    message = refused(tmp_path, build_set(tmp_path, hook=classes))
    assert message.startswith(
        "seg_coarse.int8.onnx (seg_coarse): classes must be ['background', 'animal', 'ears', 'eyes']"
    )


def test_a_file_that_is_no_onnx_model_is_refused(tmp_path: Path) -> None:
    def garbage(folder: Path, manifest: dict[str, Any]) -> None:
        (folder / "eye.int8.onnx").write_bytes(os.urandom(4096))
        ref = file_ref(folder, "eye.int8.onnx")
        entry(manifest, "eye").update(sha256=ref["sha256"], size_bytes=ref["size_bytes"])

    assert refused(tmp_path, build_set(tmp_path, hook=garbage)).startswith("eye.int8.onnx: not a valid ONNX model")


def test_a_set_verify_refused_is_refused(tmp_path: Path) -> None:
    def refuse(folder: Path, manifest: dict[str, Any]) -> None:
        e = entry(manifest, "seg_fine")
        e["status"] = "refused"
        e["metrics"]["refused_because"] = "seg_fine INT8 argmax agrees with FP32 on 91.00% of pixels (< 99%)"

    message = refused(tmp_path, build_set(tmp_path, hook=refuse))
    assert message == (
        "seg_fine.int8.onnx: status 'refused' (seg_fine INT8 argmax agrees with FP32 on 91.00% of pixels (< 99%)); "
        "only sets `mgs-export verify` accepted can be rolled out"
    )


def test_parity_figures_outside_the_gate_are_refused_even_when_marked_accepted(tmp_path: Path) -> None:
    def edit(folder: Path, manifest: dict[str, Any]) -> None:
        entry(manifest, "eye")["metrics"]["int8_vs_fp32"]["seg_coarse"]["argmax_agreement"] = 0.95

    message = refused(tmp_path, build_set(tmp_path, hook=edit))
    assert message == "eye.int8.onnx: seg_coarse INT8 argmax agreement with FP32 is 0.95, the gate needs >= 0.99"


def test_an_int8_mae_far_above_fp32_is_refused(tmp_path: Path) -> None:
    fp32_mae = {}

    def edit(folder: Path, manifest: dict[str, Any]) -> None:
        entry(manifest, "seg_fine")["metrics"]["end_to_end_mae"]["fast"] = 9.0
        fp32_mae["fast"] = entry(manifest, "seg_fine", "fp32")["metrics"]["end_to_end_mae"]["fast"]

    message = refused(tmp_path, build_set(tmp_path, hook=edit, precisions=("fp32", "int8")))
    assert message.startswith(
        f"seg_fine.int8.onnx: fast pipeline INT8 end-to-end MAE 9.000 vs FP32 {fp32_mae['fast']:.3f}"
    )


def test_a_set_without_an_int8_network_is_refused(tmp_path: Path) -> None:
    def drop(folder: Path, manifest: dict[str, Any]) -> None:
        manifest["models"] = [m for m in manifest["models"] if m["name"] != "seg_coarse"]
        (folder / "seg_coarse.int8.onnx").unlink()

    assert "no seg_coarse model at int8" in refused(tmp_path, build_set(tmp_path, hook=drop))


def test_a_selftest_that_is_no_npz_is_refused(tmp_path: Path) -> None:
    def bad(folder: Path, manifest: dict[str, Any]) -> None:
        (folder / "selftest.npz").write_bytes(b"not an npz")
        manifest["selftest"] = file_ref(folder, "selftest.npz")

    assert refused(tmp_path, build_set(tmp_path, hook=bad)).startswith("selftest.npz: not a readable .npz")


def test_a_pickled_selftest_is_refused(tmp_path: Path) -> None:
    def pickled(folder: Path, manifest: dict[str, Any]) -> None:
        out = io.BytesIO()
        np.savez(out, rois=np.array([{"x": 1}], dtype=object))
        (folder / "selftest.npz").write_bytes(out.getvalue())
        manifest["selftest"] = file_ref(folder, "selftest.npz")

    assert refused(tmp_path, build_set(tmp_path, hook=pickled)).startswith("selftest.npz: not a readable .npz")


def test_a_set_without_a_version_or_selftest_is_refused(tmp_path: Path) -> None:
    assert '"set" is missing' in refused(tmp_path, build_set(tmp_path, hook=lambda f, m: m.pop("set")))
    assert '"set.version"' in refused(
        tmp_path, build_set(tmp_path, version="v3", hook=lambda f, m: m["set"].update(version="../v3"))
    )
    assert '"selftest" is missing' in refused(
        tmp_path, build_set(tmp_path, version="v4", hook=lambda f, m: m.pop("selftest"))
    )


def test_the_gate_and_the_device_contract_match_the_toolchain_and_the_device() -> None:
    from device.eyes import PATCH_SIZE
    from device.inference import MODEL_NAMES
    from export import verify

    assert model_sets.MAX_MAE_INCREASE == verify.MAX_MAE_INCREASE
    assert model_sets.MIN_ARGMAX_AGREEMENT == verify.MIN_ARGMAX_AGREEMENT
    assert model_sets.EYE_PATCH == PATCH_SIZE
    assert set(model_sets.REQUIRED) == set(MODEL_NAMES)


def test_the_registry_keeps_a_version_once_and_serves_only_its_listed_files(tmp_path: Path) -> None:
    db = connect(tmp_path / "server.sqlite")
    registry = Registry(tmp_path / "models", MAX)
    with open(build_set(tmp_path), "rb") as f:
        row = registry.add(db, f, "alice")
    assert row["version"] == "v2" and row["uploaded_by"] == "alice"
    assert row["evaluate"]["eye_recall"] == 0.93
    assert (tmp_path / "models" / "v2" / "seg_fine.int8.onnx").is_file()
    assert registry.file(db, "v2", "manifest.json") == tmp_path / "models" / "v2" / "manifest.json"
    assert registry.file(db, "v2", "server.sqlite") is None
    assert registry.file(db, "v9", "manifest.json") is None
    with (
        open(build_set(tmp_path), "rb") as f,
        pytest.raises(model_sets.MgsError, match="already registered as version v2"),
    ):
        registry.add(db, f, "bob")
    other = build_set(tmp_path / "other", hook=lambda folder, m: m["set"].update(created="another build"))
    with (
        open(other, "rb") as f,
        pytest.raises(model_sets.MgsError, match="version v2 is already registered with another set"),
    ):
        registry.add(db, f, "bob")
    assert [v["version"] for v in versions(db)] == ["v2"]
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["v2"], "no upload leftovers"
    assert find_version(db, "v2")["uploaded_by"] == "alice"
