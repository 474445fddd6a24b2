"""Eye recall, precision and MAE of the fast pipeline under several `[pipeline.eyes]` settings.

How `min_eyeness` (the eye verifier's threshold) and the other eye filters were chosen
(models/TRAINING.md). Run it on a validation set, or on a facility's own labelled frames before
changing a device's config; a held-out set used here is no longer held out.

    PYTHONPATH=. python scripts/sweep_eyes.py --data out/val --models models \
        --setting '{"min_eyeness": 0.3}' --setting '{}'

"found" counts every eye the pipeline reports, "scored" only those with quality_ok (not blurred,
not cut, not abstained on); a detection within 12 px of a visible true eye is a hit, one matched to
a hidden eye counts neither way (as in `mgs-export evaluate`). MAE is over scored hits with a score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from device.eyes import EyeConfig
from device.pipeline import FastPipeline, PipelineConfig
from device.rois import Roi
from export.dataset import open_dataset
from export.evaluate import onnx_runners
from export.metrics import match_points

MATCH_PX = 12.0


def sweep(data: Path, models: Path, runtime: str, setting: dict) -> dict:
    dataset = open_dataset(data)
    runners, _ = onnx_runners(models, runtime)
    config = PipelineConfig(eyes=EyeConfig(**setting))
    found = {"hit": 0, "false": 0}
    scored = {"hit": 0, "false": 0}
    missed = 0
    errors = []
    for frame in dataset.frames:
        image = dataset.read_image(frame)
        rois = [Roi(*(int(round(v)) for v in box.roi)) for box in frame.boxes]
        result = FastPipeline(runners, rois, config)(image)
        for box, found_box in zip(frame.boxes, result.boxes):
            eyes, truth = found_box.eyes, box.eyes
            matches = dict(match_points([(e.x, e.y) for e in eyes], [(t.x, t.y) for t in truth], MATCH_PX))
            for i, eye in enumerate(eyes):
                j = matches.get(i)
                if j is not None and not truth[j].visible:
                    continue
                kind = "false" if j is None else "hit"
                found[kind] += 1
                scored[kind] += eye.quality_ok
                if j is not None and eye.quality_ok and truth[j].score is not None:
                    errors.append(abs(eye.score - float(truth[j].score)))
            missed += sum(1 for j, t in enumerate(truth) if t.visible and j not in matches.values())
    visible = found["hit"] + missed
    return {
        "setting": setting,
        "found_recall": found["hit"] / visible if visible else None,
        "found_precision": found["hit"] / max(1, found["hit"] + found["false"]),
        "scored_recall": scored["hit"] / visible if visible else None,
        "scored_precision": scored["hit"] / max(1, scored["hit"] + scored["false"]),
        "scored_mae": float(np.mean(errors)) if errors else None,
        "scored_n": len(errors),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled dataset (docs/dataset.md)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder with manifest.json")
    parser.add_argument("--runtime", choices=["int8", "fp32"], default="int8")
    parser.add_argument(
        "--setting",
        action="append",
        type=json.loads,
        default=None,
        help="[pipeline.eyes] values as JSON, e.g. '{\"min_eyeness\": 0.3}'; repeat for more; default: the defaults",
    )
    args = parser.parse_args()
    for setting in args.setting or [{}]:
        row = sweep(args.data, args.models, args.runtime, setting)
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
