"""The animals sidecar: which animal sat in which box of which recording, in which group and time point.

A CSV file a researcher writes next to the videos (one row per video and box; `#` starts a
comment line)::

    video,box,animal,group,timepoint,start
    day1_rackA.mp4,0,M01,carprofen,post-op 2h,2026-03-04T09:15:00Z
    day1_rackA.mp4,1,M02,saline,post-op 2h,

`video` is the file name (no folder); `box` is the box number (0 = leftmost); `animal` is required,
`group` and `timepoint` may be empty. `start` (ISO-8601 UTC) is when the recording began; it may be
given on any one row of a video and holds for all its boxes. Summaries are grouped by group and time
point, and the server import files the windows under the animal.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mgs_core.errors import MessageError, MgsError
from mgs_core.messages import MAX_BOXES, parse_utc_iso

COLUMNS = ("video", "box", "animal", "group", "timepoint", "start")
REQUIRED = ("video", "box", "animal")


@dataclass(frozen=True)
class BoxAnimal:
    animal: str
    group: str = ""
    timepoint: str = ""


@dataclass(frozen=True)
class Sidecar:
    """Animals per (video file name, box) and recording starts per video file name."""

    animals: dict[tuple[str, int], BoxAnimal]
    starts: dict[str, float]

    def animal(self, video: Path, box: int) -> BoxAnimal | None:
        return self.animals.get((video.name, box))

    def start(self, video: Path) -> float | None:
        return self.starts.get(video.name)


EMPTY = Sidecar({}, {})


def load_sidecar(path: Path) -> Sidecar:
    """Read and check the whole file; a bad row stops with its line number and what to fix."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise MgsError(f"cannot read the animals file {path} ({exc}); give a UTF-8 CSV file") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in REQUIRED if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        raise MgsError(
            f"{path}: the header must name the columns {', '.join(COLUMNS)} (video, box and animal "
            f"required); missing {missing}, unknown {unknown}"
        )
    animals: dict[tuple[str, int], BoxAnimal] = {}
    starts: dict[str, float] = {}
    for n, row in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        where = f"{path} row {n}"
        video = row["video"]
        if not video or "/" in video or "\\" in video:
            raise MgsError(f"{where}: video {video!r} must be a file name without folders")
        try:
            box = int(row["box"])
        except ValueError:
            raise MgsError(f"{where}: box {row['box']!r} must be a box number (0 = leftmost)") from None
        if not 0 <= box < MAX_BOXES:
            raise MgsError(f"{where}: box {box} must be between 0 and {MAX_BOXES - 1}")
        if not row["animal"]:
            raise MgsError(f"{where}: the animal column is empty; name the animal in box {box}")
        if (video, box) in animals:
            raise MgsError(f"{where}: {video} box {box} is listed twice")
        animals[(video, box)] = BoxAnimal(row["animal"], row.get("group", ""), row.get("timepoint", ""))
        if row.get("start"):
            try:
                start = parse_utc_iso(row["start"])
            except MessageError as exc:
                raise MgsError(f"{where}: start {row['start']!r}: {exc}; write e.g. 2026-03-04T09:15:00Z") from None
            if starts.get(video, start) != start:
                raise MgsError(f"{where}: {video} has two different start times")
            starts[video] = start
    return Sidecar(animals, starts)
