"""models/manifest.json: which model files a device may run, and proof that a file is the one shipped.

Standard library only: the device reads the manifest through this module and imports nothing from
models/. An entry's fields are checked by their declarations, through mgs_core.tomlconfig. The export
toolchain writes entries (`save_entry`, `set_status`); the device reads them (`load_manifest`,
`Manifest.entry`) and checks a file's size and sha256 (`verify_model_file` / `read_verified_model`)
BEFORE onnxruntime sees it, so a truncated download or a stale file is refused with a message that
names the file and says how to get a good one, instead of an onnxruntime parse error.

An entry's `status` says how far the toolchain vouches for it: "accepted" (passed its parity gate),
"unverified" (quantized, `mgs-export verify` not yet run) or "refused" (failed the gate; the device
will not load it).

Point a device at another models directory with its config (`load_manifest(models_dir)`), or, for
tools without a config, the MGS_MODELS_DIR environment variable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from mgs_core.errors import ConfigError, MgsError
from mgs_core.tomlconfig import Check, Length, Range, from_dict

DEFAULT_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
MANIFEST_NAME = "manifest.json"
MODELS_DIR_ENV = "MGS_MODELS_DIR"
FORMAT = "mgs-rack-models"
FORMAT_VERSION = 1
Status = Literal["accepted", "unverified", "refused"]
STATUSES: tuple[str, ...] = get_args(Status)
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
RESTORE_HINT = (
    "re-download the models, re-run `mgs-export onnx && mgs-export quantize && mgs-export verify`, "
    "or restore models/ from git (`git checkout -- models/`)"
)


def resolve_models_dir(models_dir: str | Path | None = None) -> Path:
    """An explicit directory wins, then $MGS_MODELS_DIR, then the models/ package folder."""
    if models_dir is not None:
        return Path(models_dir)
    return Path(os.environ.get(MODELS_DIR_ENV) or DEFAULT_MODELS_DIR)


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output; a str dimension is symbolic (dynamic), e.g. "N", "H"."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


def _check_sha256(value: str) -> None:
    if not _SHA256_RE.match(value):
        raise ValueError("must be 64 lowercase hex digits")


def check_plain_name(value: str) -> None:
    """A file of a model set is a plain name in the set's folder: a download must not land elsewhere."""
    if not value or "/" in value or "\\" in value or value in (".", "..") or value.startswith("."):
        raise ValueError("must be a plain file name (no folder, no leading dot)")


@dataclass(frozen=True)
class ModelEntry:
    """One shipped file. `path` is absolute; `file` is relative to the models directory."""

    name: str
    precision: str
    file: Annotated[str, Length(1, unit="characters")]
    sha256: Annotated[str, Check(_check_sha256)]
    size_bytes: Annotated[int, Range(1)]
    inputs: Annotated[tuple[TensorSpec, ...], Length(1)]
    outputs: Annotated[tuple[TensorSpec, ...], Length(1)]
    models_dir: Path
    status: Status = "unverified"
    input_size: tuple[int, int] = (0, 0)
    dynamic_hw: bool = False
    class_names: tuple[str, ...] = ()
    normalisation: dict = field(default_factory=dict)
    data_fingerprint: str = ""
    model_version: str = ""
    network_config: dict = field(default_factory=dict)
    calibration: dict | None = None
    metrics: dict = field(default_factory=dict)
    toolchain: dict = field(default_factory=dict)
    command: str = ""

    @property
    def path(self) -> Path:
        return self.models_dir / self.file

    @property
    def accepted(self) -> bool:
        return self.status == "accepted"

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def output(self) -> TensorSpec:
        return self.outputs[0]

    @classmethod
    def from_dict(cls, d: dict, models_dir: Path, source: str = "model entry", key: str = "") -> ModelEntry:
        """The entry for one record, checked by its field declarations; keys it does not declare are
        left alone, so a manifest written by a newer toolchain still loads."""
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: [{key or 'entry'}] must be a table, got {d!r}")
        known = {f.name for f in fields(cls)} - {"models_dir"}
        record = {k: v for k, v in d.items() if k in known}
        return from_dict(cls, {**record, "models_dir": str(models_dir)}, source=source, prefix=key)


@dataclass(frozen=True)
class FileRef:
    """A file of a model set other than a model (the self-test, a report): trusted only through its hash."""

    file: Annotated[str, Check(check_plain_name)]
    sha256: Annotated[str, Check(_check_sha256)]
    size_bytes: Annotated[int, Range(1)]


@dataclass(frozen=True)
class SetInfo:
    """The `set` key `mgs-export package` adds: which version this is and its summary figures."""

    version: Annotated[str, Length(1, unit="characters")]
    created: str
    evaluate: dict | None = None


# The summary figures `mgs-export package` writes into `set.evaluate` (held-out MAE, eye recall and
# precision, facility-label MAE), in the order the server's Models page compares them first.
SET_FIGURES = ("heldout_mae", "eye_recall", "eye_precision", "facility_label_mae")


@dataclass(frozen=True)
class Manifest:
    """A models folder. `set`, `selftest` and `reports` are there only in a packaged model set
    (`mgs-export package`); a folder straight from the toolchain, like the shipped models/, has none."""

    models_dir: Path
    entries: tuple[ModelEntry, ...]
    set: SetInfo | None = None
    selftest: FileRef | None = None
    reports: dict[str, FileRef] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.models_dir / MANIFEST_NAME

    def available(self) -> list[str]:
        return [f"{e.name}/{e.precision} ({e.status})" for e in self.entries]

    def entry(self, name: str, precision: str) -> ModelEntry:
        """The entry for `name` at `precision`; a refused or absent one is an MgsError saying what to do."""
        for e in self.entries:
            if e.name == name and e.precision == precision:
                if e.status == "refused":
                    raise MgsError(
                        f"model {e.file} ({name}, {precision}) was refused by `mgs-export verify` "
                        f"({e.metrics.get('refused_because') or 'parity gate failed'}); use precision 'fp32' for "
                        f"{name} in the device config, or re-run `mgs-export quantize && mgs-export verify`"
                    )
                return e
        listed = ", ".join(self.available()) or "none"
        raise MgsError(
            f"{self.path} has no model {name!r} at precision {precision!r} (it lists: {listed}); "
            f"check the device config's model names/precision, or {RESTORE_HINT}"
        )


def load_manifest(models_dir: str | Path | None = None) -> Manifest:
    directory = resolve_models_dir(models_dir)
    path = directory / MANIFEST_NAME
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MgsError(
            f"model manifest {path} is missing; {RESTORE_HINT}, or point models_dir at a folder that has one"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MgsError(f"model manifest {path} cannot be read ({exc}); {RESTORE_HINT}") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise MgsError(f"{path} is not an mgs-rack model manifest (format must be {FORMAT!r}); {RESTORE_HINT}")
    if raw.get("version") != FORMAT_VERSION:
        raise MgsError(
            f"{path} has manifest version {raw.get('version')!r}, this software reads {FORMAT_VERSION}; update the software or {RESTORE_HINT}"
        )
    models = raw.get("models", [])
    if not isinstance(models, list):
        raise MgsError(f'{path} has a malformed model list ("models" must be a list); {RESTORE_HINT}')
    try:
        entries = tuple(
            ModelEntry.from_dict(d, directory, f"{path} has a malformed model entry", f"models[{i}]")
            for i, d in enumerate(models)
        )
        info = None if raw.get("set") is None else _set_info(raw["set"], path)
        selftest = (
            None
            if raw.get("selftest") is None
            else from_dict(FileRef, raw["selftest"], source=str(path), prefix="selftest")
        )
        reports = raw.get("reports") or {}
        if not isinstance(reports, dict):
            raise ConfigError(f'{path}: "reports" must be a table of files, got {reports!r}')
        refs = {k: from_dict(FileRef, v, source=str(path), prefix=f"reports.{k}") for k, v in reports.items()}
    except ConfigError as exc:
        raise MgsError(f"{exc}; {RESTORE_HINT}") from None
    return Manifest(models_dir=directory, entries=entries, set=info, selftest=selftest, reports=refs)


def _set_info(raw: object, path: Path) -> SetInfo:
    """Keys a newer `package` adds to `set` are left alone, like an entry's."""
    if not isinstance(raw, dict):
        raise ConfigError(f'{path}: "set" must be a table, got {raw!r}')
    known = {f.name for f in fields(SetInfo)}
    return from_dict(SetInfo, {k: v for k, v in raw.items() if k in known}, source=str(path), prefix="set")


def decode_metadata(props: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """An ONNX file's metadata_props as `mgs-export onnx` writes them: every value JSON-encoded, so
    it reads back with its type. Raises ValueError where a value is not JSON."""
    return {key: json.loads(value) for key, value in props}


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check(entry: ModelEntry, data: bytes) -> None:
    if len(data) != entry.size_bytes:
        raise MgsError(
            f"model file {entry.path} is truncated or corrupt: {len(data)} bytes, the manifest says "
            f"{entry.size_bytes}; {RESTORE_HINT}"
        )
    digest = sha256_bytes(data)
    if digest != entry.sha256:
        raise MgsError(
            f"model file {entry.path} does not match the manifest (sha256 {digest[:12]}…, expected "
            f"{entry.sha256[:12]}…): it is corrupt or from another export; {RESTORE_HINT}"
        )


def read_verified_model(entry: ModelEntry) -> bytes:
    """The file's bytes after the size and sha256 check: hand these to onnxruntime.InferenceSession.

    Reading once and checking what was read means the bytes onnxruntime parses are the bytes that
    were verified, even if the file changes on disk in between.
    """
    try:
        data = entry.path.read_bytes()
    except FileNotFoundError:
        raise MgsError(
            f"model file {entry.path} ({entry.name}, {entry.precision}) is missing; {RESTORE_HINT}"
        ) from None
    except OSError as exc:
        raise MgsError(f"model file {entry.path} cannot be read ({exc.strerror}); {RESTORE_HINT}") from None
    _check(entry, data)
    return data


def verify_model_file(entry: ModelEntry) -> Path:
    """Check the file on disk against the manifest; return its path or raise MgsError naming it."""
    read_verified_model(entry)
    return entry.path


def _write_json_atomically(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".manifest-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the manifest is meant to be read by the device user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_raw(directory: Path) -> dict:
    path = directory / MANIFEST_NAME
    if not path.exists():
        return {"format": FORMAT, "version": FORMAT_VERSION, "models": []}
    load_manifest(directory)  # validates; a broken manifest is an error, not silently replaced
    return json.loads(path.read_text(encoding="utf-8"))


def save_entry(models_dir: str | Path, record: dict) -> ModelEntry:
    """Insert or replace the (name, precision) entry; the toolchain's only way to write the manifest."""
    directory = Path(models_dir)
    entry = ModelEntry.from_dict(record, directory, "new manifest record")  # rejects a record the device could not read
    raw = _read_raw(directory)
    models = [m for m in raw["models"] if (m["name"], m["precision"]) != (entry.name, entry.precision)]
    models.append(record)
    raw["models"] = sorted(models, key=lambda m: (m["name"], m["precision"]))
    _write_json_atomically(directory / MANIFEST_NAME, raw)
    return entry


def set_status(models_dir: str | Path, name: str, precision: str, status: str, metrics: dict) -> None:
    """Record a verification outcome (status plus the metrics that decided it) on an existing entry."""
    directory = Path(models_dir)
    raw = _read_raw(directory)
    for m in raw["models"]:
        if (m["name"], m["precision"]) == (name, precision):
            m["status"] = status
            m["metrics"] = {**m.get("metrics", {}), **metrics}
            save_entry(directory, m)
            return
    raise MgsError(
        f"{directory / MANIFEST_NAME} has no entry {name}/{precision}; run `mgs-export onnx` (and `quantize`) first"
    )
