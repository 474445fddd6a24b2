"""The server's model registry: checked model sets on disk, one row per version in the database.

An admin uploads a set built by `mgs-export package`; `server.model_sets` checks it in a private
folder next to the registry, and only a set that passes is moved to `<dir>/<version>/` and recorded
(version, manifest sha256, the manifest, its evaluate figures, who uploaded it and when). Files stay
on disk rather than in the database: devices download them with `send_file`, and the database stays
small. A version is never replaced: the same set uploaded again is refused as already there, another
set under a used version name is refused, so a version name means one set for ever.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, BinaryIO, ClassVar

import sqlite_utils

from mgs_core.errors import MgsError
from mgs_core.manifest import MANIFEST_NAME
from mgs_core.tomlconfig import Range
from server.db import transaction
from server.model_sets import ModelSet, SetRefused, check_archive

log = logging.getLogger(__name__)

MIB = 1024 * 1024
_REGISTERING = threading.Lock()


@dataclass
class ModelsConfig:
    """`[models]`: where the registry keeps uploaded model sets."""

    SECTION: ClassVar[str] = "models"

    dir: Path = field(
        default=Path(""),
        metadata={
            "doc": "folder of the model registry's sets (relative to the database folder); empty = 'model-sets' next to the database"
        },
    )
    max_set_mb: Annotated[int, Range(1, 64 * 1024, unit="MiB")] = field(
        default=512, metadata={"doc": "largest model set accepted, in MiB, as uploaded and unpacked"}
    )

    def resolved_dir(self, database: Path) -> Path:
        if str(self.dir) in ("", "."):
            return Path(database).parent / "model-sets"
        return self.dir if self.dir.is_absolute() else Path(database).parent / self.dir


@dataclass(frozen=True)
class Registry:
    """The registry of one server: sets under `folder`, rows in the database."""

    folder: Path
    max_bytes: int

    @classmethod
    def of(cls, config: ModelsConfig, database: Path) -> Registry:
        return cls(config.resolved_dir(database), config.max_set_mb * MIB)

    def add(self, db: sqlite_utils.Database, upload: BinaryIO, uploaded_by: str) -> dict[str, Any]:
        """Check the uploaded archive and register it; returns the new version's row.

        Raises SetRefused (what is wrong with the set) or MgsError (the version exists)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".upload-", dir=self.folder))
        try:
            archive = work / "set.tar.gz"
            with open(archive, "wb") as out:
                copied = _copy_capped(upload, out, self.max_bytes)
            if copied == 0:
                raise SetRefused("the upload is empty; choose the .tar.gz file `mgs-export package` wrote")
            checked = check_archive(archive, work / "set", self.max_bytes)
            with _REGISTERING:  # two uploads of one version: the second is refused, never moved over the first
                self._register(db, checked, uploaded_by)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("model set %s registered (manifest %s) by %s", checked.version, checked.manifest_sha256, uploaded_by)
        return version(db, checked.version)

    def _register(self, db: sqlite_utils.Database, checked: ModelSet, uploaded_by: str) -> None:
        self._refuse_known(db, checked.version, checked.manifest_sha256)
        target = self.folder / checked.version
        if target.exists():  # left by a crash between the move and the insert: not registered
            shutil.rmtree(target)
        checked.folder.rename(target)
        try:
            with transaction(db) as conn:
                conn.execute(
                    "INSERT INTO model_versions (version, manifest_sha256, manifest_json, created, evaluate_json, "
                    "size_bytes, uploaded_by, uploaded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        checked.version,
                        checked.manifest_sha256,
                        json.dumps(checked.manifest),
                        checked.created,
                        None if checked.evaluate is None else json.dumps(checked.evaluate),
                        checked.size_bytes,
                        uploaded_by,
                        time.time(),
                    ],
                )
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def _refuse_known(self, db: sqlite_utils.Database, name: str, manifest_sha256: str) -> None:
        row = db.execute(
            "SELECT version, manifest_sha256 FROM model_versions WHERE version = ? OR manifest_sha256 = ?",
            [name, manifest_sha256],
        ).fetchone()
        if row is None:
            return
        if row[1] == manifest_sha256:
            raise MgsError(f"this set is already registered as version {row[0]}; nothing to do")
        raise MgsError(
            f"version {name} is already registered with another set (manifest {row[1][:12]}…); "
            "package the new models under a new --version"
        )

    def file(self, db: sqlite_utils.Database, name: str, filename: str) -> Path | None:
        """The path of one downloadable file of a registered version, or None when there is none."""
        row = find_version(db, name)
        if row is None or filename not in downloadable(row["manifest"]):
            return None
        path = self.folder / name / filename
        return path if path.is_file() else None


def _copy_capped(source: BinaryIO, out: BinaryIO, limit: int) -> int:
    copied = 0
    while chunk := source.read(1 << 20):
        copied += len(chunk)
        if copied > limit:
            raise SetRefused(f"the upload is larger than {limit // MIB} MiB ([models] max_set_mb)")
        out.write(chunk)
    return copied


def downloadable(manifest: dict[str, Any]) -> set[str]:
    """The files a device may download: the manifest and the files it lists."""
    names = {MANIFEST_NAME, *(m["file"] for m in manifest.get("models", []))}
    names.add(manifest["selftest"]["file"])
    names.update(r["file"] for r in manifest.get("reports", {}).values())
    return names


def _row(row: dict[str, Any]) -> dict[str, Any]:
    row["manifest"] = json.loads(row.pop("manifest_json"))
    row["evaluate"] = json.loads(row.pop("evaluate_json") or "null")
    return row


def find_version(db: sqlite_utils.Database, name: str) -> dict[str, Any] | None:
    rows = list(db.query("SELECT * FROM model_versions WHERE version = ?", [name]))
    return _row(rows[0]) if rows else None


def version(db: sqlite_utils.Database, name: str) -> dict[str, Any]:
    row = find_version(db, name)
    if row is None:
        raise MgsError(f"no model version {name!r} is registered; upload it on the Models page first")
    return row


def versions(db: sqlite_utils.Database) -> list[dict[str, Any]]:
    """Every registered version, newest upload first."""
    return [_row(r) for r in db.query("SELECT * FROM model_versions ORDER BY uploaded_at DESC, version")]
