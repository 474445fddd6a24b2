"""Where the pipeline loses the eyes it misses, and what becomes of those it finds.

Recall alone says how many eyes were missed, not which stage to improve: a coarse search that put
no crop over the head, a fine U-Net that marked no eye pixel, blob filters that dropped the pixels
(size, context, shape), or a candidate that never became a reported eye (candidate cap, merge,
eye verifier). Each true visible eye is counted once, at the first stage it did not pass. For the
last two stages `LossStages.why` also says which filter dropped the pixels and whether the candidate
reached the eye model, because the remedies differ (a smaller `min_area_px`, a tighter blob, a
verifier that knows more eyes).

A found eye still reaches the aggregate only if it is sharp, whole and confident; `FoundFates` says
which check held each found eye back and how well those eyes were scored, so a check that drops
well-scored eyes (a fine crop's edge cutting an eye that the next crop would see whole) shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from device.eyes import EYES, EyeBlob, EyeConfig, blob_rejection
from device.pipeline import FineCrop
from device.results import EyeScore
from export.metrics import match_points

STAGES = ("found", "no_crop", "no_eye_pixel", "no_candidate", "not_reported")
OFF_CENTRE = "off centre"  # a candidate blob over the eye whose centre lies farther than match_px from it
NOT_KEPT = "not kept by the eye model"  # verifier below its threshold, or two more eye-like blobs in the box
NOT_A_CANDIDATE = "merged or over the candidate cap"
FATES = ("scored", "abstained", "blurred", "cut")


@dataclass
class LossStages:
    """Counts of true visible eyes per stage, over every box of every frame added."""

    config: EyeConfig = field(default_factory=EyeConfig)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))
    why: dict[str, Counter] = field(default_factory=lambda: {"no_candidate": Counter(), "not_reported": Counter()})

    def add(
        self,
        box: int,
        detected: Sequence[EyeScore],
        truth: Sequence[Any],
        crops: Sequence[FineCrop],
        candidates: Sequence[EyeBlob],
        match_px: float,
    ) -> None:
        """One box of a frame: `truth` its labelled eyes, `crops` the frame's fine crops, `candidates`
        the box's blobs handed to the eye model (FastPipeline.last_candidates)."""
        found = {j for _, j in match_points([(d.x, d.y) for d in detected], [(t.x, t.y) for t in truth], match_px)}
        mine = [c for c in crops if c.box == box]
        for j, eye in enumerate(truth):
            if not eye.visible:
                continue
            stage = "found" if j in found else lost_at(eye.x, eye.y, mine, match_px)
            self.counts[stage] += 1
            if stage == "no_candidate":
                self.why[stage][no_candidate_reason(eye.x, eye.y, mine, self.config, match_px)] += 1
            elif stage == "not_reported":
                near = any(np.hypot(b.x - eye.x, b.y - eye.y) <= match_px for b in candidates)
                self.why[stage][NOT_KEPT if near else NOT_A_CANDIDATE] += 1

    def report(self) -> dict[str, dict[str, Any]]:
        total = sum(self.counts.values())
        return {stage: {"n": n, "share": n / total if total else None} for stage, n in self.counts.items()}

    def report_why(self) -> dict[str, dict[str, int]]:
        return {stage: dict(reasons.most_common()) for stage, reasons in self.why.items()}


def lost_at(x: float, y: float, crops: Sequence[FineCrop], match_px: float) -> str:
    """The first stage a missed eye at frame pixel (x, y) did not pass, given its box's fine crops."""
    covering = [c for c in crops if c.covers(x, y)]
    if not covering:
        return "no_crop"
    nearest = _nearest_eye_pixel(covering, x, y)
    if nearest is None or nearest[0] > match_px:
        return "no_eye_pixel"
    if any(np.hypot(b.x - x, b.y - y) <= match_px for c in covering for b in c.blobs):
        return "not_reported"
    return "no_candidate"


def no_candidate_reason(x: float, y: float, crops: Sequence[FineCrop], config: EyeConfig, match_px: float) -> str:
    """Why the eye pixels near a missed eye at frame pixel (x, y) made no candidate (for an eye that
    `lost_at` counts at "no_candidate"): the blob filter (`blob_rejection`) that dropped the eye
    component nearest to it, or OFF_CENTRE when that component is a candidate whose centre lies more
    than match_px away."""
    nearest = _nearest_eye_pixel([c for c in crops if c.covers(x, y)], x, y)
    if nearest is None or nearest[0] > match_px:
        return OFF_CENTRE
    _, crop, row, col = nearest
    _, labels, stats, _ = cv2.connectedComponentsWithStats((crop.classes == EYES).view(np.uint8), connectivity=8)
    reason, _ = blob_rejection(crop.classes, stats[labels[row, col]], config, (crop.scale, crop.scale))
    return reason or OFF_CENTRE


def _nearest_eye_pixel(crops: Sequence[FineCrop], x: float, y: float) -> tuple[float, FineCrop, int, int] | None:
    """The eye pixel nearest frame pixel (x, y) in the part of the crops' maps the U-Net saw: its
    distance in frame pixels, its crop, and its map row and column; None without eye pixels."""
    best: tuple[float, FineCrop, int, int] | None = None
    for crop in crops:
        u0, v0, u1, v1 = crop.valid
        rows, cols = np.nonzero(crop.classes[v0:v1, u0:u1] == EYES)
        if not len(cols):
            continue
        xs, ys = crop.to_frame(cols + u0, rows + v0)
        distances = np.hypot(xs - x, ys - y)
        i = int(np.argmin(distances))
        if best is None or distances[i] < best[0]:
            best = (float(distances[i]), crop, int(rows[i]) + v0, int(cols[i]) + u0)
    return best


@dataclass
class RecallSplit:
    """Recall of the true visible eyes split into `groups`: per group the eyes, those found, and those
    scored (found and quality_ok: sharp, whole, confident), optionally with the scored eyes' MAE. What
    puts an eye in a group is the caller's (`add_grouped`): its true score's band, whether the frame
    shows it."""

    groups: tuple[str, ...]
    with_mae: bool = False
    tally: dict[str, dict[str, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.tally = {g: {"n": 0, "found": 0, "scored": 0, "abs_error": 0.0, "with_score": 0} for g in self.groups}

    def add_grouped(
        self, detected: Sequence[EyeScore], truth: Sequence[Any], group_of: Sequence[str | None], match_px: float
    ) -> None:
        """One box: `group_of[j]` is true eye j's group, None to leave it out."""
        matches = {j: i for i, j in match_points([(d.x, d.y) for d in detected], [(t.x, t.y) for t in truth], match_px)}
        for j, (t, group) in enumerate(zip(truth, group_of)):
            if group is None:
                continue
            row = self.tally[group]
            row["n"] += 1
            if j not in matches:
                continue
            row["found"] += 1
            eye = detected[matches[j]]
            if eye.quality_ok:
                row["scored"] += 1
                if t.score is not None:
                    row["abs_error"] += abs(eye.score - float(t.score))
                    row["with_score"] += 1

    def report(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, t in self.tally.items():
            row: dict[str, Any] = {
                "n": int(t["n"]),
                "found": int(t["found"]),
                "scored": int(t["scored"]),
                "recall": t["found"] / t["n"] if t["n"] else None,
                "scored_recall": t["scored"] / t["n"] if t["n"] else None,
            }
            if self.with_mae:
                row["scored_mae"] = t["abs_error"] / t["with_score"] if t["with_score"] else None
            out[name] = row
        return out


@dataclass
class FoundFates:
    """Found true visible eyes by what became of them, with the error of their scores.

    `scored` reached the aggregate; `abstained` was sharp and whole but below `min_confidence`;
    `blurred` fell below `min_sharpness` (whether or not it was also cut); `cut` touched the edge of
    the analysed region (a fine crop or the box) or its patch left the frame.
    """

    min_sharpness: float
    errors: dict[str, list[float]] = field(default_factory=lambda: {fate: [] for fate in FATES})
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FATES, 0))

    def add(self, detected: Sequence[EyeScore], truth: Sequence[Any], match_px: float) -> None:
        for i, j in match_points([(d.x, d.y) for d in detected], [(t.x, t.y) for t in truth], match_px):
            eye, true = detected[i], truth[j]
            if not true.visible:
                continue
            fate = self.fate(eye)
            self.counts[fate] += 1
            if true.score is not None:
                self.errors[fate].append(abs(eye.score - float(true.score)))

    def fate(self, eye: EyeScore) -> str:
        if eye.quality_ok:
            return "scored"
        if eye.abstained:
            return "abstained"
        return "blurred" if eye.sharpness < self.min_sharpness else "cut"

    def report(self) -> dict[str, dict[str, Any]]:
        total = sum(self.counts.values())
        return {
            fate: {
                "n": n,
                "share": n / total if total else None,
                "mae": float(np.mean(self.errors[fate])) if self.errors[fate] else None,
            }
            for fate, n in self.counts.items()
        }
