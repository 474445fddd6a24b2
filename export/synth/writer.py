"""Write a synthetic dataset in the docs/dataset.md format, frame by frame, with progress.

Frame i of a dataset with seed S is `render_frame(S * FRAME_STRIDE + i)`: the same dataset comes
back from the same seed, datasets with different seeds share no frame, and runs of 64 frames share
one camera placement (see `rack.SESSION_FRAMES`). Images are JPEG (quality 95) by default: a noisy
1080p PNG is several times larger (docs/synth.md), and the camera stream the device sees is
compressed anyway; masks are always PNG (lossless).
"""

from __future__ import annotations

import errno
import json
from pathlib import Path

import cv2

from export.dataset import FORMAT, VERSION, Frame
from export.synth.progress import FrameProgress
from export.synth.rack import one_opencv_thread, render_frame
from export.synth.randomise import Randomisation
from mgs_core.errors import MgsError

FRAME_STRIDE = 10_000_000
IMAGE_FORMATS = ("jpg", "png")


def frame_seed(seed: int, index: int) -> int:
    return int(seed) * FRAME_STRIDE + int(index)


def _prepare(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise MgsError(f"{out} is a file; give a new or empty folder for the dataset")
    if out.is_dir() and any(out.iterdir()):
        raise MgsError(f"{out} is not empty; give a new or empty folder (existing data is never overwritten)")
    try:
        (out / "images").mkdir(parents=True, exist_ok=True)
        (out / "masks").mkdir(exist_ok=True)
    except OSError as exc:
        raise MgsError(f"cannot create {out}: {exc.strerror}; choose a writable folder") from exc


def _write_image(path: Path, image, params: list[int]) -> None:
    if not cv2.imwrite(str(path), image, params):
        raise MgsError(
            f"could not write {path} (disk full or folder not writable?); free space and run again into a new folder"
        )


def write_dataset(
    out_dir: Path | str,
    frames: int,
    seed: int,
    progress: bool = True,
    image_format: str = "jpg",
    jpeg_quality: int = 95,
    randomise: Randomisation | None = None,
) -> Path:
    """Render `frames` frames into a new dataset folder; returns the folder.

    randomise: None = the original generator (what the shipped models were trained on);
    `mgs-export synth` passes the `default` preset unless told otherwise.
    """
    if frames < 1 or frames >= FRAME_STRIDE:
        raise MgsError(f"--frames must be 1..{FRAME_STRIDE - 1}, got {frames}")
    if image_format not in IMAGE_FORMATS:
        raise MgsError(f"image format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    out = Path(out_dir)
    _prepare(out)
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if image_format == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    options = (randomise or Randomisation("none")).describe()
    info = {
        "format": FORMAT,
        "version": VERSION,
        "score_scale": [0, 9],
        "source": f"synthetic (mgs-export synth --frames {frames} --seed {seed} {options})",
        "generator": {
            "name": "export.synth",
            "seed": int(seed),
            "frames": int(frames),
            "image_format": image_format,
            "randomise": options,
        },
    }
    bar = FrameProgress(frames, 25, progress)
    try:
        (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        with open(out / "labels.jsonl", "w", encoding="utf-8") as labels, one_opencv_thread():
            for i in range(frames):
                f = render_frame(frame_seed(seed, i), randomise=randomise)
                name = f"synth_{seed}_{i:06d}"
                image, mask = f"images/{name}.{image_format}", f"masks/{name}.png"
                _write_image(out / image, f.image, params)
                _write_image(out / mask, f.mask, [cv2.IMWRITE_PNG_COMPRESSION, 3])
                line = Frame(image, mask, f.boxes, ("synthetic",), conditions=f.conditions).to_json()
                labels.write(json.dumps(line, separators=(",", ":")) + "\n")
                bar.update(i + 1)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise MgsError(f"disk full while writing {out}; free space and run again into a new folder") from exc
        raise MgsError(f"could not write {out}: {exc.strerror}") from exc
    bar.close()
    return out
