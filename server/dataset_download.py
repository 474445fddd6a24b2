"""The dataset button: officers download reviewed samples as a .zip of the `export-dataset` folder.

The zip is written while it is sent (images stored as they are, text compressed), so a large set
never sits in the server's memory. Every refusal (bad date, nothing to export) is answered before
the download starts, with the same messages as the command line.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Iterator

import sqlite_utils
from flask import Blueprint, Response, current_app, render_template, request, stream_with_context

from mgs_core.errors import MgsError
from server.auth import current_user, require_role
from server.dataset_export import (
    ExportFilter,
    ExportPlan,
    NothingToExport,
    dataset_files,
    parse_when,
    plan_export,
)
from server.request_db import get_db

log = logging.getLogger(__name__)

bp = Blueprint("dataset", __name__)


class _Chunks:
    """A write-only file for ZipFile that hands out what was written since the last `take`."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def zip_stream(db: sqlite_utils.Database, plan: ExportPlan, folder: str, server: str) -> Iterator[bytes]:
    """The dataset as a zip, one piece per file; every path starts with `folder/`."""
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w") as archive:
        for name, data in dataset_files(db, plan, server):
            info = zipfile.ZipInfo(f"{folder}/{name}", time.gmtime()[:6])
            info.compress_type = zipfile.ZIP_STORED if name.startswith("images/") else zipfile.ZIP_DEFLATED
            archive.writestr(info, data)
            yield sink.take()
    yield sink.take()


def _default_min_raters() -> int:
    """A sample counts as reviewed with `[review] raters_per_sample` ratings, so that is the default."""
    return int(current_app.config["MGS_CONFIG"].review.raters_per_sample)


def _filters() -> ExportFilter:
    zone = str(current_app.config["MGS_CONFIG"].dashboard.timezone)
    raw = request.args.get("min_raters", "").strip() or str(_default_min_raters())
    if not raw.isdigit():
        raise MgsError(f"minimum raters {raw!r} must be a whole number of at least 1")
    filters = ExportFilter(
        since=parse_when("from", request.args.get("since"), zone),
        until=parse_when("until", request.args.get("until"), zone, end=True),
        min_raters=int(raw),
        device=request.args.get("device", "").strip(),
    )
    filters.check()
    return filters


@bp.route("/review/dataset")
@require_role("officer")
def page() -> str:
    db = get_db()
    devices = [r[0] for r in db.execute("SELECT DISTINCT device FROM samples ORDER BY device").fetchall()]
    try:
        preview = plan_export(db, ExportFilter(min_raters=_default_min_raters())).counts.describe()
    except NothingToExport as exc:
        preview = str(exc)
    return render_template(
        "review_dataset.html",
        title="Dataset export",
        devices=devices,
        default_min_raters=_default_min_raters(),
        preview=preview,
        facility_tz=current_app.config["MGS_CONFIG"].dashboard.timezone,
    )


@bp.route("/review/dataset/download")
@require_role("officer")
def download() -> Response:
    db = get_db()
    filters = _filters()
    plan = plan_export(db, filters)
    folder = time.strftime("mgs-dataset-%Y%m%d-%H%M%S", time.gmtime())
    user = current_user() or {}
    log.info("%s downloads %s: %s", user.get("username"), folder, plan.counts.describe())
    response = Response(stream_with_context(zip_stream(db, plan, folder, request.host)), mimetype="application/zip")
    response.headers["Content-Disposition"] = f'attachment; filename="{folder}.zip"'
    return response
