"""`mgs-device detect-boxes`: find the boxes in a rack frame and write them into the config file.

Only the [rois] section of the config is rewritten (tomlkit keeps the rest of the file, comments
included, as it was). A PNG with the boxes drawn on the frame lets the technician check the result
before the device runs with it. A video is reduced to the median of frames spread over it, so the
animals, which move, do not hide the inside of a box.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from device.rois import MAX_ROIS, Roi, detect_boxes, draw_boxes, read_reference_frame
from mgs_core.errors import MgsError


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        type=Path,
        help="device config (TOML) whose [rois] section is rewritten; created if absent",
    )
    parser.add_argument("--source", required=True, help="rack image, video file, camera index or stream URL")
    parser.add_argument(
        "--png", type=Path, help="where to save the picture of the found boxes (default: next to the config)"
    )
    parser.add_argument(
        "--expected",
        type=int,
        help=f"how many boxes the rack has (default: [rois] expected in the config, else {MAX_ROIS})",
    )
    parser.add_argument("--dry-run", action="store_true", help="only show what was found; leave the config alone")


def run(args: argparse.Namespace) -> int:
    import tomlkit

    doc = _read_config(args.config)
    rois_table = doc.get("rois", {})
    expected = args.expected or int(rois_table.get("expected", MAX_ROIS))
    if not 1 <= expected <= MAX_ROIS:
        raise MgsError(f"--expected {expected}: a rack has 1 to {MAX_ROIS} boxes")
    frame = read_reference_frame(args.source)
    boxes = detect_boxes(frame, expected)
    png = args.png or args.config.with_suffix(".boxes.png")
    png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(png), draw_boxes(frame, boxes)):
        raise MgsError(f"cannot write {png}; choose another --png path")
    for i, r in enumerate(boxes):
        print(f"box {i}: x={r.x} y={r.y} w={r.w} h={r.h}")
    print(f"picture: {png}")
    if len(boxes) < expected:
        raise MgsError(
            f"found {len(boxes)} of {expected} boxes (see {png}); the config was not changed. Check that the red "
            "backdrop is lit and visible around every box, that the camera sees the whole rack, or pass "
            "--expected N for a rack with fewer boxes, or type the boxes into [rois] boxes by hand"
        )
    if args.dry_run:
        return 0
    if "rois" not in doc:
        doc["rois"] = tomlkit.table()
    doc["rois"]["boxes"] = _boxes_array(boxes)
    args.config.parent.mkdir(parents=True, exist_ok=True)
    args.config.write_text(tomlkit.dumps(doc), encoding="utf-8")
    print(f"wrote {len(boxes)} boxes to [rois] boxes in {args.config}")
    return 0


def _read_config(path: Path):
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    if not path.exists():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, TOMLKitError) as exc:
        raise MgsError(f"cannot read {path} as TOML ({exc}); fix the file or point --config at another one") from None


def _boxes_array(boxes: list[Roi]):
    import tomlkit

    array = tomlkit.array()
    for r in boxes:
        array.append(r.as_list())
    array.multiline(True)
    return array
