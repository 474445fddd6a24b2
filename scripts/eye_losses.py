"""Where the device's fast pipeline loses each labelled eye, split by true score.

For every visible, scored eye of a dataset: found (a reported eye within --match-px), or lost with
no fine crop over it, no eye pixel of seg_fine within --match-px, a pixel but no eye blob there
(size, shape or context filters), or a blob the eye model or the per-box cap dropped. A blob that
was dropped is also given the filter that dropped it. The sixth step of issue 10 used it to find
that shut eyes are lost in the segmenter and the blob filters (models/TRAINING.md). A diagnostic
for choosing what to work on: run it on validation sets, not on acceptance sets.

    PYTHONPATH=. .venv/bin/python scripts/eye_losses.py --data /work/data/val-hardest --models models
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from device.eyes import EYES, EyeConfig, blob_rejection, find_eye_blobs
from device.inference import Models, load_models
from device.pipeline import FastPipeline, class_maps
from device.rois import Roi
from export.dataset import open_dataset
from export.evaluate import SEVERITY_BANDS, severity_band


class RecordingPipeline(FastPipeline):
    """The fast pipeline, keeping the last frame's fine crops and the class maps seg_fine gave them."""

    def __init__(self, models: Models, rois: list[Roi]) -> None:
        self.maps: np.ndarray = np.zeros((0, 0, 0), np.uint8)
        self.crops: list = []

        def seg_fine(batch: np.ndarray) -> np.ndarray:
            output = models.seg_fine(batch)
            self.maps = class_maps(output)
            return output

        super().__init__(dataclasses.replace(models, seg_fine=seg_fine), rois)

    def _crops(self, watch):
        self.crops = super()._crops(watch)
        return self.crops


def dropped_by(classes: np.ndarray, u: float, v: float, config: EyeConfig) -> str:
    """Which filter of find_eye_blobs dropped the eye-class component nearest (u, v)."""
    _, _, stats, centroids = cv2.connectedComponentsWithStats((classes == EYES).view(np.uint8), connectivity=8)
    k = 1 + int(np.argmin(np.hypot(centroids[1:, 0] - u, centroids[1:, 1] - v)))
    return blob_rejection(classes, stats[k], config)[0] or "merged or off-centre"


def stage_of(pipe: RecordingPipeline, box: int, x: float, y: float, match_px: float) -> tuple[str, str | None]:
    in_crop = pixel = blob = False
    reason = None
    for (b, x0, y0, valid), classes in zip(pipe.crops, pipe.maps):
        u, v = x - x0, y - y0
        if b != box or not (0 <= u < valid[2] and 0 <= v < valid[3]):
            continue
        in_crop = True
        ys, xs = np.nonzero(classes == EYES)
        if len(xs) and np.min(np.hypot(xs - u, ys - v)) <= match_px:
            pixel = True
            found = find_eye_blobs(classes, pipe.config.eyes, origin=(x0, y0), valid=valid)
            if any(np.hypot(e.x - x, e.y - y) <= match_px for e in found):
                blob = True
            elif reason is None:
                reason = dropped_by(classes, u, v, pipe.config.eyes)
    if not in_crop:
        return "no fine crop", None
    if not pixel:
        return "no eye pixel", None
    return ("dropped by the eye model or the cap", None) if blob else ("no blob", reason)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--match-px", type=float, default=8.0)
    args = parser.parse_args()
    data = open_dataset(args.data)
    models = load_models(args.models, precision=args.precision)
    stages = {name: Counter() for name, _, _ in SEVERITY_BANDS}
    reasons: Counter = Counter()
    for frame in data.frames:
        rois = [Roi(*(int(round(v)) for v in b.roi)) for b in frame.boxes]
        pipe = RecordingPipeline(models, rois)
        result = pipe(data.read_image(frame))
        for b, box in enumerate(frame.boxes):
            reported = [(e.x, e.y) for e in result.boxes[b].eyes]
            for eye in box.eyes:
                if not eye.visible or eye.score is None:
                    continue
                if any(np.hypot(x - eye.x, y - eye.y) <= args.match_px for x, y in reported):
                    stage, reason = "found", None
                else:
                    stage, reason = stage_of(pipe, b, eye.x, eye.y, args.match_px)
                stages[severity_band(float(eye.score))][stage] += 1
                if reason:
                    reasons[reason] += 1
    print(json.dumps({"by_true_score": stages, "no_blob_because": reasons}, indent=1))


if __name__ == "__main__":
    main()
