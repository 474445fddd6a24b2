"""Model sets for the registry tests, built in the test from the shipped models/ folder.

A set is what `mgs-export package` writes: the models folder's manifest with `set`, `selftest` and
`reports` added, the ONNX files it lists and a selftest.npz. `build_set` takes hooks that change
the unpacked folder or the manifest before the archive is written, so each test breaks one thing.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mgs_core.manifest import DEFAULT_MODELS_DIR, sha256_file

Hook = Callable[[Path, dict[str, Any]], None]


def selftest_npz() -> bytes:
    out = io.BytesIO()
    rois = np.zeros((2, 64, 64, 3), dtype=np.uint8)
    np.savez(out, rois=rois, eye_xy=np.zeros((2, 2, 2), np.float32), tolerance=np.float32(0.05))
    return out.getvalue()


def set_folder(folder: Path, version: str = "v2", precisions: tuple[str, ...] = ("int8",)) -> dict[str, Any]:
    """Write an unpacked set into `folder`; returns its manifest (already written)."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = json.loads((DEFAULT_MODELS_DIR / "manifest.json").read_text())
    manifest["models"] = [m for m in manifest["models"] if m["precision"] in precisions]
    for m in manifest["models"]:
        shutil.copy(DEFAULT_MODELS_DIR / m["file"], folder / m["file"])
    (folder / "selftest.npz").write_bytes(selftest_npz())
    (folder / "evaluate.json").write_text('{"heldout": {"mae": 0.41}}')
    manifest["set"] = {
        "version": version,
        "created": "2026-12-02T10:00:00Z",
        "evaluate": {"heldout_mae": 0.41, "eye_recall": 0.93, "eye_precision": 0.97},
    }
    manifest["selftest"] = file_ref(folder, "selftest.npz")
    manifest["reports"] = {"evaluate": file_ref(folder, "evaluate.json")}
    write_manifest(folder, manifest)
    return manifest


def file_ref(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    return {"file": name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))


def entry(manifest: dict[str, Any], name: str, precision: str = "int8") -> dict[str, Any]:
    return next(m for m in manifest["models"] if m["name"] == name and m["precision"] == precision)


def archive(folder: Path, out: Path, extra: Callable[[tarfile.TarFile], None] | None = None) -> Path:
    with tarfile.open(out, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
        if extra is not None:
            extra(tar)
    return out


def build_set(
    tmp: Path,
    version: str = "v2",
    hook: Hook | None = None,
    extra: Callable[[tarfile.TarFile], None] | None = None,
    precisions: tuple[str, ...] = ("int8",),
) -> Path:
    """A .tar.gz model set in `tmp`; `hook(folder, manifest)` may change files and the manifest (it
    is rewritten afterwards), `extra(tar)` may add members to the archive."""
    folder = tmp / f"set-{version}"
    manifest = set_folder(folder, version, precisions)
    if hook is not None:
        hook(folder, manifest)
        write_manifest(folder, manifest)
    return archive(folder, tmp / f"{version}.tar.gz", extra)


def add_member(
    name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = ""
) -> Callable[[tarfile.TarFile], None]:
    def add(tar: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = link
        info.size = len(data) if kind == tarfile.REGTYPE else 0
        tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    return add
