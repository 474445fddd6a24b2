"""Checking an uploaded model set (`mgs-export package` archive) before the registry keeps it.

A set reaches edge boxes that score live animals, so nothing in it is taken on trust: the archive
is unpacked by hand (flat regular files only, names from a safe alphabet, sizes capped while
reading, so a crafted archive can neither write outside its folder nor fill the disk), every file
must be listed in `manifest.json` with its size and sha256 and nothing else may be there, the three
networks the device runs must be present at int8 and accepted by `mgs-export verify` with parity
figures inside its gate, and each ONNX file's real graph inputs, outputs and metadata must be what
the manifest says and what the device pipeline feeds and reads. Every refusal names the file and
the value that is wrong.

The set's identity is the sha256 of its `manifest.json`: every other file is trusted through it.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import re
import shutil
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mgs_core.errors import ConfigError, MessageError, MgsError
from mgs_core.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    ModelEntry,
    decode_metadata,
    sha256_bytes,
    sha256_file,
)
from mgs_core.messages import validate_name

REQUIRED = ("eye", "seg_coarse", "seg_fine")  # device.inference.MODEL_NAMES: what the device loads
REQUIRED_PRECISION = "int8"
# The INT8 parity gate of `mgs-export verify` (export.verify; tests check these stay equal). The
# server re-applies it to the figures in the manifest, so a hand-edited status cannot pass a set.
MAX_MAE_INCREASE = 0.05
MIN_ARGMAX_AGREEMENT = 0.99
# What device.pipeline feeds the networks and reads from them (tests check these against device/).
EYE_PATCH = 50
SEG_CLASSES = ("background", "animal", "ears", "eyes")
NORMALISATION = {"channel_order": "BGR", "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "scale": 1.0 / 255.0}
MAX_FILES = 32
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class SetRefused(MgsError):
    """The uploaded set fails a check; the message says which file and what is wrong."""


@dataclass(frozen=True)
class ModelSet:
    """A checked set, unpacked in `folder`: `files` are the names a device may download."""

    version: str
    manifest_sha256: str
    manifest: dict[str, Any]
    folder: Path
    files: tuple[str, ...]
    size_bytes: int

    @property
    def created(self) -> str:
        return str(self.manifest["set"].get("created") or "")

    @property
    def evaluate(self) -> dict[str, Any] | None:
        return self.manifest["set"].get("evaluate")


def check_archive(archive: Path, dest: Path, max_bytes: int) -> ModelSet:
    """Unpack `archive` into the new folder `dest` and check it; on any refusal `dest` is removed."""
    dest.mkdir(parents=True)
    try:
        size = unpack(archive, dest, max_bytes)
        return check_folder(dest, size)
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def unpack(archive: Path, dest: Path, max_bytes: int) -> int:
    """Write the archive's regular files into `dest`; returns the bytes written.

    Members are read one by one and written by name here (never `extractall`), so a link, a device
    node, a folder or a name with a path in it is refused before anything is written for it."""
    total = 0
    seen: set[str] = set()
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.name in (".", "./") and member.isdir():  # `tar -C DIR .` puts the folder itself first
                    continue
                name = member.name.removeprefix("./")
                if name.startswith("/") or ".." in name.split("/") or "/" in name.strip("/"):
                    raise SetRefused(
                        f"{name}: a model set is flat (no absolute paths, '..' or folders); "
                        "build it with `mgs-export package`"
                    )
                if not member.isfile() or member.issparse():
                    raise SetRefused(f"{name}: only regular files may be in a model set (no links, folders or devices)")
                if not _FILE_RE.match(name):
                    raise SetRefused(f"{name!r}: file names may use letters, digits, '_', '-' and '.' only")
                if name in seen:
                    raise SetRefused(f"{name}: is in the archive twice")
                seen.add(name)
                if len(seen) > MAX_FILES:
                    raise SetRefused(f"the archive holds more than {MAX_FILES} files; a model set has a handful")
                total += member.size
                if total > max_bytes:
                    raise SetRefused(
                        f"{name}: the unpacked set exceeds {max_bytes // (1024 * 1024)} MiB ([models] max_set_mb)"
                    )
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has data
                with open(dest / name, "xb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise SetRefused(
            f"the upload is not a readable .tar.gz model set ({exc}); upload what `mgs-export package` wrote"
        ) from None
    if not seen:
        raise SetRefused("the archive is empty; upload what `mgs-export package` wrote")
    return total


def check_folder(folder: Path, size_bytes: int) -> ModelSet:
    """Check an unpacked set (see the module docstring); returns it or raises SetRefused."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise SetRefused(f"{MANIFEST_NAME} is missing: a model set starts with its manifest")
    raw_manifest = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw_manifest)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SetRefused(f"{MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SetRefused(f"{MANIFEST_NAME}: format must be {FORMAT!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise SetRefused(
            f"{MANIFEST_NAME}: manifest version {manifest.get('version')!r}, this server reads {FORMAT_VERSION}"
        )
    version = _set_header(manifest)
    entries = _entries(manifest, folder)
    listed = {e.file: (e.sha256, e.size_bytes) for e in entries}
    for key, ref in [
        ("selftest", manifest["selftest"]),
        *((f"reports.{k}", v) for k, v in manifest["reports"].items()),
    ]:
        name, sha, size = _file_ref(ref, key)
        if name in listed or name == MANIFEST_NAME:
            raise SetRefused(f"{MANIFEST_NAME}: {key} names {name}, which is listed twice")
        listed[name] = (sha, size)
    present = {p.name for p in folder.iterdir()}
    for name, (sha, size) in sorted(listed.items()):
        _check_file(folder / name, sha, size, present)
    extra = sorted(present - set(listed) - {MANIFEST_NAME})
    if extra:
        raise SetRefused(
            f"{', '.join(extra)}: not listed in {MANIFEST_NAME}; a set holds only the files it vouches for"
        )
    _check_gate(entries)
    for entry in entries:
        check_onnx(entry)
    _check_selftest(folder / _file_ref(manifest["selftest"], "selftest")[0])
    return ModelSet(
        version=version,
        manifest_sha256=sha256_bytes(raw_manifest),
        manifest=manifest,
        folder=folder,
        files=tuple(sorted([MANIFEST_NAME, *listed])),
        size_bytes=size_bytes,
    )


def _set_header(manifest: dict[str, Any]) -> str:
    header = manifest.get("set")
    if not isinstance(header, dict):
        raise SetRefused(f'{MANIFEST_NAME}: "set" is missing; package the models with `mgs-export package --version`')
    version = header.get("version")
    try:
        validate_name(version, "model set version")
    except MessageError as exc:
        raise SetRefused(f'{MANIFEST_NAME}: "set.version": {exc}') from None
    evaluate = header.get("evaluate")
    if evaluate is not None and not isinstance(evaluate, dict):
        raise SetRefused(f'{MANIFEST_NAME}: "set.evaluate" must be a table of figures or null')
    if not isinstance(manifest.get("selftest"), dict):
        raise SetRefused(f'{MANIFEST_NAME}: "selftest" is missing; the device cannot test the set before switching')
    if not isinstance(manifest.get("reports", {}), dict):
        raise SetRefused(f'{MANIFEST_NAME}: "reports" must be a table')
    manifest.setdefault("reports", {})
    return str(version)


def _entries(manifest: dict[str, Any], folder: Path) -> list[ModelEntry]:
    models = manifest.get("models")
    if not isinstance(models, list) or not models:
        raise SetRefused(f'{MANIFEST_NAME}: "models" must be a non-empty list')
    entries = []
    for i, record in enumerate(models):
        try:
            entry = ModelEntry.from_dict(record, folder, MANIFEST_NAME, f"models[{i}]")
        except ConfigError as exc:
            raise SetRefused(str(exc)) from None
        if not _FILE_RE.match(entry.file):
            raise SetRefused(f"{MANIFEST_NAME}: models[{i}].file {entry.file!r} must be a plain file name (flat set)")
        entries.append(entry)
    pairs = [(e.name, e.precision) for e in entries]
    for name in REQUIRED:
        if (name, REQUIRED_PRECISION) not in pairs:
            raise SetRefused(
                f"{MANIFEST_NAME}: no {name} model at {REQUIRED_PRECISION}; the device runs all of {', '.join(REQUIRED)}"
            )
    duplicates = {p for p in pairs if pairs.count(p) > 1}
    if duplicates:
        raise SetRefused(f"{MANIFEST_NAME}: {sorted(duplicates)} listed more than once")
    return entries


def _file_ref(ref: Any, key: str) -> tuple[str, str, int]:
    if not isinstance(ref, dict):
        raise SetRefused(f'{MANIFEST_NAME}: "{key}" must be a table with file, sha256 and size_bytes')
    name, sha, size = ref.get("file"), ref.get("sha256"), ref.get("size_bytes")
    if not isinstance(name, str) or not _FILE_RE.match(name):
        raise SetRefused(f'{MANIFEST_NAME}: "{key}.file" = {name!r} must be a plain file name')
    if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
        raise SetRefused(f'{MANIFEST_NAME}: "{key}.sha256" must be 64 lowercase hex digits')
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SetRefused(f'{MANIFEST_NAME}: "{key}.size_bytes" must be a positive integer')
    return name, sha, size


def _check_file(path: Path, sha: str, size: int, present: set[str]) -> None:
    if path.name not in present:
        raise SetRefused(f"{path.name}: listed in {MANIFEST_NAME} but missing from the archive")
    actual_size = path.stat().st_size
    if actual_size != size:
        raise SetRefused(f"{path.name}: {actual_size} bytes, the manifest says {size}")
    digest = sha256_file(path)
    if digest != sha:
        raise SetRefused(f"{path.name}: sha256 {digest} does not match the manifest's {sha}")


def _check_gate(entries: list[ModelEntry]) -> None:
    """Every network accepted by `verify`, and the INT8 figures inside the parity gate."""
    by_pair = {(e.name, e.precision): e for e in entries}
    for e in entries:
        if e.status != "accepted":
            because = e.metrics.get("refused_because") or "not verified"
            raise SetRefused(
                f"{e.file}: status {e.status!r} ({because}); only sets `mgs-export verify` accepted can be rolled out"
            )
    for name in REQUIRED:
        e = by_pair[(name, REQUIRED_PRECISION)]
        m = e.metrics
        if m.get("refused_because"):
            raise SetRefused(f"{e.file}: verify refused it ({m['refused_because']})")
        agreement = m.get("int8_vs_fp32")
        if not isinstance(agreement, dict):
            raise SetRefused(f"{e.file}: the manifest has no int8_vs_fp32 parity figures; run `mgs-export verify`")
        for seg in ("seg_fine", "seg_coarse"):
            value = (agreement.get(seg) or {}).get("argmax_agreement")
            if not _number(value) or value < MIN_ARGMAX_AGREEMENT:
                raise SetRefused(
                    f"{e.file}: {seg} INT8 argmax agreement with FP32 is {value!r}, the gate needs "
                    f">= {MIN_ARGMAX_AGREEMENT}"
                )
        fp32 = by_pair.get((name, "fp32"))
        if fp32 is None:
            continue
        int8_mae, fp32_mae = m.get("end_to_end_mae") or {}, fp32.metrics.get("end_to_end_mae") or {}
        for pipeline, value in int8_mae.items():
            ref = fp32_mae.get(pipeline)
            if _number(value) and _number(ref) and value - ref > MAX_MAE_INCREASE:
                raise SetRefused(
                    f"{e.file}: {pipeline} pipeline INT8 end-to-end MAE {value:.3f} vs FP32 {ref:.3f} "
                    f"(+{value - ref:.3f} > {MAX_MAE_INCREASE})"
                )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _shape(value: Any) -> list[int | str]:
    dims = value.type.tensor_type.shape.dim
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in dims]


def check_onnx(entry: ModelEntry) -> None:
    """The file's graph and metadata against its manifest entry and what the device expects."""
    import onnx
    from onnx import helper

    try:
        model = onnx.load_model_from_string(entry.path.read_bytes())
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises protobuf DecodeError, ValidationError and others
        raise SetRefused(
            f"{entry.file}: not a valid ONNX model ({str(exc).splitlines()[0] if str(exc) else exc!r})"
        ) from None
    initializers = {i.name for i in model.graph.initializer}
    graph = {
        "inputs": [v for v in model.graph.input if v.name not in initializers],
        "outputs": list(model.graph.output),
    }
    for kind, values in graph.items():
        actual = [
            {
                "name": v.name,
                "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name,
                "shape": _shape(v),
            }
            for v in values
        ]
        declared = [t.to_dict() for t in getattr(entry, kind)]
        if actual != declared:
            raise SetRefused(f"{entry.file}: graph {kind} are {actual}, the manifest says {declared}")
    try:
        meta = decode_metadata((p.key, p.value) for p in model.metadata_props)
    except ValueError:
        raise SetRefused(f"{entry.file}: metadata_props are not JSON; re-export it with `mgs-export onnx`") from None
    expected = {
        "model_name": entry.name,
        "precision": entry.precision,
        "input_size": list(entry.input_size),
        "dynamic_hw": entry.dynamic_hw,
        "class_names": list(entry.class_names),
        "normalisation": entry.normalisation,
    }
    for key, value in expected.items():
        if meta.get(key) != value:
            raise SetRefused(f"{entry.file}: metadata {key} is {meta.get(key)!r}, the manifest says {value!r}")
    if entry.precision == "int8" and not meta.get("quantization"):
        raise SetRefused(
            f"{entry.file}: precision int8 but no quantization metadata; quantize it with `mgs-export quantize`"
        )
    _check_device_contract(entry)


def _check_device_contract(entry: ModelEntry) -> None:
    """What device.pipeline feeds each network and reads from it."""
    inp, out = entry.input, entry.output
    problems = []
    if len(entry.inputs) != 1 or len(entry.outputs) != 1:
        problems.append("needs exactly one input and one output")
    if inp.dtype != "float32" or len(inp.shape) != 4 or inp.shape[1] != 3:
        problems.append(f"input must be float32 [N, 3, H, W], is {inp.dtype} {list(inp.shape)}")
    if entry.name == "eye":
        if list(inp.shape[2:]) != [EYE_PATCH, EYE_PATCH]:
            problems.append(f"input must be {EYE_PATCH}x{EYE_PATCH} eye patches, is {list(inp.shape[2:])}")
        if out.dtype != "float32" or len(out.shape) != 2 or out.shape[1] not in (1, 2):
            problems.append(
                f"output must be float32 [N, 1] scores (or [N, 2]: scores, eye-verifier logits), "
                f"is {out.dtype} {list(out.shape)}"
            )
    else:
        if tuple(entry.class_names) != SEG_CLASSES:
            problems.append(f"classes must be {list(SEG_CLASSES)}, are {list(entry.class_names)}")
        if out.dtype != "uint8" or len(out.shape) != 3:
            problems.append(f"output must be uint8 [N, H, W] classes, is {out.dtype} {list(out.shape)}")
        if entry.name == "seg_coarse" and not all(isinstance(d, int) for d in inp.shape[2:]):
            problems.append("seg_coarse must have a fixed input size")
    norm = entry.normalisation
    if norm.get("channel_order") != NORMALISATION["channel_order"] or any(
        not np.allclose(norm.get(k, []), v) for k, v in NORMALISATION.items() if k != "channel_order"
    ):
        problems.append(f"normalisation must be {NORMALISATION} (what the device applies), is {norm}")
    if problems:
        raise SetRefused(f"{entry.file} ({entry.name}): {'; '.join(problems)}")


def _check_selftest(path: Path) -> None:
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as data:
            arrays = list(data.files)
            for key in arrays:
                data[key]
    except Exception as exc:  # numpy raises ValueError, BadZipFile, OSError ... for a bad npz
        raise SetRefused(f"{path.name}: not a readable .npz of arrays ({exc})") from None
    if not arrays:
        raise SetRefused(f"{path.name}: holds no arrays; the device has nothing to test the set with")
