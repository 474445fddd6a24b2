"""Eye recall, precision and MAE of the fast pipeline under several `[pipeline.eyes]` settings.

How `min_eyeness` (the eye verifier's threshold) and the other eye filters were chosen
(models/TRAINING.md). Run it on a validation set, or on a facility's own labelled frames before
changing a device's config; a held-out set used here is no longer held out.

    PYTHONPATH=. python scripts/sweep_eyes.py --data out/val --models models \
        --setting '{"min_eyeness": 0.3}' --setting '{}'

"found" counts every eye the pipeline reports, "scored" only those with quality_ok (not blurred,
not cut, not abstained on); a detection within 12 px of a visible true eye is a hit, one matched to
a hidden eye counts neither way (`export.evaluate.score_box`, as in `mgs-export evaluate`). MAE is
over scored hits with a score.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from device.eyes import EyeConfig
from device.pipeline import FastPipeline, PipelineConfig
from device.rois import Roi
from export.dataset import open_dataset
from export.evaluate import Pairs, onnx_runners, score_box

MATCH_PX = 12.0


class Tally:
    """Found (every reported eye) and scored (quality_ok eyes) counts of one setting, via `score_box`."""

    def __init__(self, setting: dict) -> None:
        self.setting = setting
        self.config = PipelineConfig(eyes=EyeConfig(**setting))
        self.found = {"tp": 0, "fp": 0, "fn": 0, "detections": 0, "quality_ok": 0}
        self.scored = dict(self.found)
        self.found_pairs, self.scored_pairs = Pairs([], []), Pairs([], [])

    def add(self, eyes, truth) -> None:
        score_box(eyes, truth, MATCH_PX, self.found, self.found_pairs)
        score_box([e for e in eyes if e.quality_ok], truth, MATCH_PX, self.scored, self.scored_pairs)

    def row(self) -> dict:
        def rates(c: dict) -> tuple[float | None, float]:
            visible = c["tp"] + c["fn"]
            return (c["tp"] / visible if visible else None), c["tp"] / max(1, c["tp"] + c["fp"])

        (found_recall, found_precision), (scored_recall, scored_precision) = rates(self.found), rates(self.scored)
        errors = [abs(p - t) for p, t in zip(self.scored_pairs.pred, self.scored_pairs.true)]
        return {
            "setting": self.setting,
            "found_recall": found_recall,
            "found_precision": found_precision,
            "scored_recall": scored_recall,
            "scored_precision": scored_precision,
            "scored_mae": sum(errors) / len(errors) if errors else None,
            "scored_n": len(errors),
        }


def sweep(data: Path, models: Path, runtime: str, settings: list[dict]) -> list[dict]:
    """One row per setting; every frame is read once and run through one fresh pipeline per setting."""
    dataset = open_dataset(data)
    runners, _ = onnx_runners(models, runtime)
    tallies = [Tally(setting) for setting in settings]
    for frame in dataset.frames:
        image = dataset.read_image(frame)
        rois = [Roi(*(int(round(v)) for v in box.roi)) for box in frame.boxes]
        for tally in tallies:
            result = FastPipeline(runners, rois, tally.config)(image)
            for box, found in zip(frame.boxes, result.boxes):
                tally.add(found.eyes, box.eyes)
    return [tally.row() for tally in tallies]


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
    for row in sweep(args.data, args.models, args.runtime, args.setting or [{}]):
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
