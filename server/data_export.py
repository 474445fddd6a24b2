"""Score windows as CSV or JSON, streamed: a month of one-second windows never sits in memory.

The columns are the wire's ScoreWindow fields plus the registry version of the model that scored
the window ('' = the models shipped on the device), the animal assigned to the box at the time, the
window's `source` (`live` from a rack, or `imported` from a recorded video scored offline,
server.video_imports) and, last so that scripts reading older exports by position keep working,
`abstained_eyes`. An empty score is never 0: it means "no face visible", or "not scorable" when
`abstained_eyes` > 0 (a face seen, the model not confident). Text that people typed
(animal names) is exported verbatim, except that a cell starting with = + - @ gets a leading
apostrophe, so a spreadsheet shows it instead of running it as a formula (CSV injection).

The REST API's CSV is plain (comma, no BOM, ISO UTC) for scripts. The dashboard's download is for
spreadsheets: a BOM, a local-time column Excel reads as a date, a choice of ';' with decimal commas
for European-locale Excel, rows per second, minute, hour or day, and an .xlsx option.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from mgs_core.errors import MgsError
from mgs_core.messages import SCORE_COLUMNS

COLUMNS = (
    "device",
    "box",
    "seq",
    *SCORE_COLUMNS,
    "model_version",
    "received_at",
    "animal_id",
    "animal_name",
    "source",
    "abstained_eyes",
)
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


# --- exports people open in a spreadsheet (the dashboard's Download) --------------------------------

BOM = "\ufeff"
SPREADSHEET_RESOLUTIONS = ("second", "minute", "hour", "day")
SUMMARY_COLUMNS = (
    "device",
    "box",
    "animal_id",
    "animal_name",
    "windows",
    "face_windows",
    "mean",
    "min",
    "max",
    "source",
    "not_scorable_windows",
)
XLSX_MAX_ROWS = 1_048_575


def local_columns(zone: str, resolution: str) -> tuple[str, ...]:
    """Columns of a spreadsheet export: local time first (a cell Excel reads as a date), then UTC."""
    if resolution == "second":
        return (f"time ({zone})", *COLUMNS)
    return (f"period start ({zone})", "period_start_utc", *SUMMARY_COLUMNS)


def spreadsheet_csv(
    rows: Iterable[list[Any]], columns: Sequence[str], european: bool, chunk_rows: int = 2000
) -> Iterator[str]:
    """CSV that Excel opens cleanly: a UTF-8 BOM (so 'Maus-Ä1' is not garbled), and for a
    European-locale Excel ';' between cells and a decimal comma."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";" if european else ",", lineterminator="\r\n")
    buffer.write(BOM)
    writer.writerow(columns)
    for n, row in enumerate(rows, start=1):
        writer.writerow([_spreadsheet_cell(v, european) for v in row])
        if n % chunk_rows == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


def _spreadsheet_cell(value: Any, european: bool) -> Any:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float) and european:
        return repr(round(value, 6)).replace(".", ",")
    return _cell(value)


def write_xlsx(path: str, rows: Iterable[list[Any]], columns: Sequence[str], sheet: str) -> int:
    """An .xlsx file written row by row (constant memory); returns the number of data rows.
    Local times are real date cells; more rows than a sheet holds is an error that says what to do."""
    import xlsxwriter

    book = xlsxwriter.Workbook(path, {"constant_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    try:
        ws = book.add_worksheet(sheet[:31])
        bold = book.add_format({"bold": True})
        stamp = book.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
        ws.set_column(0, 0, 20)
        ws.write_row(0, 0, list(columns), bold)
        ws.freeze_panes(1, 0)
        n = 0
        for n, row in enumerate(rows, start=1):
            if n > XLSX_MAX_ROWS:
                raise MgsError(
                    f"more than {XLSX_MAX_ROWS:,} rows do not fit in one Excel sheet; "
                    "choose a coarser resolution (minute, hour, day) or a shorter period"
                )
            for c, value in enumerate(row):
                if isinstance(value, datetime):
                    ws.write_datetime(n, c, value, stamp)
                elif value is None:
                    continue
                else:
                    ws.write(n, c, _cell(value))
        return n
    finally:
        book.close()
