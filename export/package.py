"""A models folder -> one model-set archive (docs/model-sets.md) that the server registry takes and
devices roll out.

Only a folder the toolchain vouches for is packaged: every file matches its manifest hash, and the
INT8 eye, seg_coarse and seg_fine are "accepted" by `mgs-export verify`. The set carries its own
self-test (device.model_store): reference box images rendered by the synthetic generator at a
fixed seed, run through the device pipeline with the set's INT8 models, so a device can prove
after the download that the set behaves there as it did here.
"""

from __future__ import annotations

import io
import json
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from device.inference import MODEL_NAMES, open_models
from device.model_store import SELFTEST_NAME, SelftestEyes, write_selftest
from mgs_core.errors import MgsError
from mgs_core.manifest import (
    MANIFEST_NAME,
    SET_FIGURES,
    Manifest,
    check_plain_name,
    load_manifest,
    read_verified_model,
    sha256_bytes,
    sha256_file,
)
from mgs_core.messages import validate_name

EVALUATE_NAME = "evaluate.json"
SET_PRECISION = "int8"
# First synthetic frame the self-test images come from: fixed, so the same models give the same set.
SELFTEST_SEED = 424242
# Frames rendered at most while looking for boxes with a visible face.
SELFTEST_MAX_FRAMES = 50


@dataclass(frozen=True)
class Packaged:
    """What `package` wrote: the archive, its manifest's sha256 (the set's identity) and the self-test."""

    path: Path
    manifest_sha256: str
    files: tuple[str, ...]
    selftest: SelftestEyes


def check_models_folder(manifest: Manifest) -> dict[str, bytes]:
    """Every listed file, verified; refuses a folder a device would refuse or must not trust."""
    found = {e.name: e for e in manifest.entries if e.precision == SET_PRECISION}
    missing = [n for n in MODEL_NAMES if n not in found]
    if missing:
        raise MgsError(
            f"{manifest.path} has no {SET_PRECISION} model for {', '.join(missing)}; run `mgs-export onnx`, "
            "`mgs-export quantize` and `mgs-export verify` on this folder first"
        )
    unchecked = [f"{e.file} ({e.status})" for e in found.values() if not e.accepted]
    if unchecked:
        raise MgsError(
            f"{manifest.path}: {', '.join(unchecked)} not accepted by the parity gate; run `mgs-export verify "
            f"--models {manifest.models_dir} --data HELD_OUT` and package only what it accepts"
        )
    data: dict[str, bytes] = {}
    for entry in manifest.entries:
        try:
            check_plain_name(entry.file)
        except ValueError as exc:
            raise MgsError(f"{manifest.path}: model file {entry.file!r} {exc}; a set is one flat folder") from None
        data[entry.file] = read_verified_model(entry)
    return data


def selftest_images(count: int, seed: int = SELFTEST_SEED) -> list[np.ndarray]:
    """`count` box images with a face visible, from synthetic rack frames at a fixed seed."""
    from export.synth.rack import render_frame

    images: list[np.ndarray] = []
    for frame_seed in range(seed, seed + SELFTEST_MAX_FRAMES):
        frame = render_frame(frame_seed)
        for box in frame.boxes:
            if box.face_visible and len(images) < count:
                x, y, w, h = (int(round(v)) for v in box.roi)
                images.append(np.ascontiguousarray(frame.image[y : y + h, x : x + w]))
        if len(images) == count:
            return images
    raise MgsError(f"no {count} boxes with a visible face in {SELFTEST_MAX_FRAMES} synthetic frames; ask for fewer")


def evaluate_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the registry shows side by side, from an `mgs-export evaluate` report (fast
    pipeline, the one devices run, when the report has it)."""
    try:
        kind = "fast" if "fast" in report["end_to_end"] else next(iter(report["end_to_end"]))
        detection = report["detection"][kind]
        figures = (
            report["end_to_end"][kind]["mae"],
            detection["recall"],
            detection["precision"],
            (report.get("facility_labels") or {}).get("mae"),
        )
        return {"pipeline": kind, "frames": report.get("frames"), **dict(zip(SET_FIGURES, figures, strict=True))}
    except (KeyError, TypeError, StopIteration, AttributeError) as exc:
        raise MgsError(
            f"the --evaluate report has no end_to_end/detection figures ({exc!r}); give the evaluate.json that "
            "`mgs-export evaluate --models ... --onnx int8` wrote"
        ) from None


def package(
    models_dir: Path, out: Path, version: str, evaluate: Path | None = None, selftest_frames: int = 4
) -> Packaged:
    """Check the folder, run the self-test with its INT8 models and write the archive to `out`."""
    try:
        validate_name(version, "model version")
    except MgsError as exc:
        raise MgsError(f"--version {version!r}: {exc}") from None
    if selftest_frames < 1:
        raise MgsError("--selftest-frames must be at least 1")
    manifest = load_manifest(models_dir)
    data = check_models_folder(manifest)
    raw = json.loads(manifest.path.read_text(encoding="utf-8"))
    report: bytes | None = None
    summary = None
    if evaluate is not None:
        try:
            report = evaluate.read_bytes()
            summary = evaluate_summary(json.loads(report))
        except (OSError, ValueError) as exc:
            raise MgsError(f"--evaluate {evaluate}: cannot read the report ({exc})") from None
    entries = {e.name: e for e in manifest.entries if e.precision == SET_PRECISION}
    models = open_models(
        {n: entries[n].path for n in MODEL_NAMES}, data={n: data[entries[n].file] for n in MODEL_NAMES}
    )
    with tempfile.TemporaryDirectory() as tmp:
        selftest_path = Path(tmp) / SELFTEST_NAME
        eyes = write_selftest(selftest_path, models, selftest_images(selftest_frames))
        raw["set"] = {
            "version": version,
            "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "evaluate": summary,
        }
        raw["selftest"] = _ref(SELFTEST_NAME, selftest_path)
        raw["reports"] = {}
        extra: dict[str, bytes] = {SELFTEST_NAME: selftest_path.read_bytes()}
        if report is not None:
            extra[EVALUATE_NAME] = report
            raw["reports"]["evaluate"] = {
                "file": EVALUATE_NAME,
                "sha256": sha256_bytes(report),
                "size_bytes": len(report),
            }
        manifest_bytes = (json.dumps(raw, indent=2) + "\n").encode()
        members = {MANIFEST_NAME: manifest_bytes, **data, **extra}
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(out.name + ".part")
        with tarfile.open(partial, "w:gz") as tar:
            for name, content in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                info.mode = 0o644
                info.mtime = int(datetime.now(UTC).timestamp())
                tar.addfile(info, io.BytesIO(content))
        partial.replace(out)
    return Packaged(out, sha256_bytes(manifest_bytes), tuple(members), eyes)


def _ref(name: str, path: Path) -> dict[str, Any]:
    return {"file": name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}
