"""Model sets on the edge box: the self-test every set carries, and the store rolled-out sets live in.

A model set (docs/model-sets.md) ships `selftest.npz`: a few reference box images and what the
device pipeline made of them with the set's own models when `mgs-export package` built it. The
device runs the same images through the same code after a download and refuses the set when the
eyes it finds or their scores differ beyond the tolerance stored with them: a set that hashes
right but behaves differently here (another onnxruntime, a CPU without the INT8 instructions the
set was checked on) never scores an animal. Both sides call `selftest_outputs`, so what is
compared is computed by one piece of code.

The store is a folder, `<store>/<version>/` per set, plus `state.json` (written atomically): the
version that scores now, so a restart keeps running it, and the assignments that were rolled
back, so a retained assignment does not retry a version that already failed here.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from device.inference import Models
from device.pipeline import FastPipeline, PipelineConfig
from device.rois import Roi
from mgs_core.errors import MgsError

log = logging.getLogger(__name__)

SELFTEST_NAME = "selftest.npz"
STATE_NAME = "state.json"
# The settings every selftest was recorded with: fixed here, not the current defaults, so a model set
# packaged before a default changed (fine_zoom_max came later) still passes on an updated device.
SELFTEST_PIPELINE = PipelineConfig(fine_zoom_max=1.0)
# Eyes found at positions this close (px) are the same eye; scores this close are the same score.
# INT8 kernels differ slightly between CPUs, so the tolerance is not zero.
DEFAULT_TOLERANCE_PX = 3.0
DEFAULT_TOLERANCE_SCORE = 0.5


@dataclass(frozen=True)
class SelftestEyes:
    """What the pipeline found in the reference images: one row per eye, `image` says in which."""

    image: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    quality_ok: np.ndarray

    def __len__(self) -> int:
        return len(self.image)


def selftest_outputs(models: Models, images: list[np.ndarray]) -> SelftestEyes:
    """Each image as a one-box frame through a fresh device pipeline (SELFTEST_PIPELINE), so the
    result depends on the models alone, not on tracking state or a device's config."""
    rows: list[tuple[int, float, float, float, bool]] = []
    for i, image in enumerate(images):
        h, w = image.shape[:2]
        result = FastPipeline(models, [Roi(0, 0, w, h)], SELFTEST_PIPELINE)(image)
        rows.extend((i, e.x, e.y, e.score, e.quality_ok) for e in result.boxes[0].eyes)
    return SelftestEyes(
        image=np.array([r[0] for r in rows], np.int32),
        x=np.array([r[1] for r in rows], np.float32),
        y=np.array([r[2] for r in rows], np.float32),
        score=np.array([r[3] for r in rows], np.float32),
        quality_ok=np.array([r[4] for r in rows], bool),
    )


def write_selftest(
    path: Path,
    models: Models,
    images: list[np.ndarray],
    tolerance_px: float = DEFAULT_TOLERANCE_PX,
    tolerance_score: float = DEFAULT_TOLERANCE_SCORE,
) -> SelftestEyes:
    """Store the reference images (uint8 BGR, any sizes) with the outputs `models` give for them."""
    eyes = selftest_outputs(models, images)
    arrays: dict[str, np.ndarray] = {
        "images": np.array(len(images), np.int32),
        "eye_image": eyes.image,
        "eye_x": eyes.x,
        "eye_y": eyes.y,
        "eye_score": eyes.score,
        "eye_quality_ok": eyes.quality_ok,
        "tolerance_px": np.array(tolerance_px, np.float32),
        "tolerance_score": np.array(tolerance_score, np.float32),
    }
    arrays.update({f"image_{i}": image for i, image in enumerate(images)})
    with open(path, "wb") as f:
        np.savez_compressed(f, allow_pickle=False, **arrays)
    return eyes


def run_selftest(models: Models, path: Path) -> str:
    """Run the reference images through `models` and compare; returns a summary, raises MgsError
    saying what differed."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            images = [npz[f"image_{i}"] for i in range(int(npz["images"]))]
            expected = SelftestEyes(
                npz["eye_image"], npz["eye_x"], npz["eye_y"], npz["eye_score"], npz["eye_quality_ok"]
            )
            tol_px, tol_score = float(npz["tolerance_px"]), float(npz["tolerance_score"])
    except (OSError, KeyError, ValueError) as exc:
        raise MgsError(f"self-test file {path.name} cannot be read ({exc}); package the set again") from None
    got = selftest_outputs(models, images)
    for i in range(len(images)):
        want = [(x, y, s, q) for n, x, y, s, q in zip(*_columns(expected)) if n == i]
        have = [(x, y, s, q) for n, x, y, s, q in zip(*_columns(got)) if n == i]
        if len(want) != len(have):
            raise MgsError(
                f"self-test image {i}: the models found {len(have)} eye(s) here, {len(want)} when the set "
                "was packaged; the set does not behave on this device as it was checked"
            )
        for x, y, s, q in want:
            match = min(have, key=lambda e: (e[0] - x) ** 2 + (e[1] - y) ** 2)
            dist = float(np.hypot(match[0] - x, match[1] - y))
            if dist > tol_px or abs(match[2] - s) > tol_score or match[3] != q:
                raise MgsError(
                    f"self-test image {i}: eye at ({x:.0f}, {y:.0f}) scored {s:.2f} when packaged, here "
                    f"({match[0]:.0f}, {match[1]:.0f}) scored {match[2]:.2f} (tolerance {tol_px:g} px, "
                    f"{tol_score:g} score); the set does not behave on this device as it was checked"
                )
    return f"self-test passed: {len(got)} eye(s) in {len(images)} reference image(s) as packaged"


def _columns(eyes: SelftestEyes) -> tuple[np.ndarray, ...]:
    return (eyes.image, eyes.x, eyes.y, eyes.score, eyes.quality_ok)


@dataclass
class StoreState:
    """`state.json`: the rolled-out version that scores ("" = the shipped models), and the
    assignment ids that were rolled back here (never retried; a new assignment id may be)."""

    active_version: str = ""
    manifest_sha256: str = ""
    assignment_id: int = 0
    rolled_back: list[int] = field(default_factory=list)


class ModelStore:
    """`<dir>/<version>/` per downloaded set and `<dir>/state.json`."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)

    def set_dir(self, version: str) -> Path:
        return self.dir / version

    @property
    def state_path(self) -> Path:
        return self.dir / STATE_NAME

    def load_state(self) -> StoreState:
        """The saved state; an unreadable file is reported and treated as none (shipped models)."""
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
            return StoreState(
                active_version=str(raw.get("active_version", "")),
                manifest_sha256=str(raw.get("manifest_sha256", "")),
                assignment_id=int(raw.get("assignment_id", 0)),
                rolled_back=[int(a) for a in raw.get("rolled_back", [])],
            )
        except FileNotFoundError:
            return StoreState()
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("model store state %s is unreadable (%s); starting with the shipped models", self.state_path, exc)
            return StoreState()

    def save_state(self, state: StoreState) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=self.dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(state), f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
