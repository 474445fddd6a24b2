"""Score windows as CSV or JSON, streamed: a month of one-second windows never sits in memory.

The columns are the wire's ScoreWindow fields plus the animal assigned to the box at the time; an
empty score means "no face visible", never 0. Text that people typed (animal names) is exported
verbatim, except that a cell starting with = + - @ gets a leading apostrophe, so a spreadsheet
shows it instead of running it as a formula (CSV injection).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

COLUMNS = ("device", "box", "seq", "window_start", "window_end", "frames", "valid_eyes", "score", "median", "p90",
           "face_visible_fraction", "model_sha256", "received_at", "animal_id", "animal_name")
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return "" if value is None else value


def csv_chunks(rows: Iterable[dict[str, Any]], chunk_rows: int = 2000) -> Iterator[str]:
    """A header line, then the rows in chunks of text (for a streamed HTTP response)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    n = 0
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in COLUMNS])
        n += 1
        if n % chunk_rows == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def json_chunks(rows: Iterable[dict[str, Any]], query: dict[str, Any], chunk_rows: int = 2000) -> Iterator[str]:
    """`{"query": {...}, "columns": [...], "windows": [{...}, ...]}`, produced piece by piece."""
    yield '{"query": ' + json.dumps(query) + ', "columns": ' + json.dumps(COLUMNS) + ', "windows": ['
    parts: list[str] = []
    first = True
    for row in rows:
        parts.append(("" if first else ",") + "\n" + json.dumps({c: row.get(c) for c in COLUMNS}, allow_nan=False))
        first = False
        if len(parts) >= chunk_rows:
            yield "".join(parts)
            parts = []
    yield "".join(parts) + "\n]}\n"
