"""Where the fast pipeline loses the eyes it misses.

Recall alone says how many eyes were missed, not which stage to improve: a coarse search that put
no crop over the head, a fine U-Net that marked no eye pixel, blob filters that dropped the pixels
(size, context, shape), or a candidate that never became a reported eye (candidate cap, merge,
eye verifier). Each true visible eye is counted once, at the first stage it did not pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.eyes import EYES
from device.pipeline import FineCrop
from device.results import EyeScore
from export.metrics import match_points

STAGES = ("found", "no_crop", "no_eye_pixel", "no_candidate", "not_reported")


@dataclass
class LossStages:
    """Counts of true visible eyes per stage, over every box of every frame added."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STAGES, 0))

    def add(
        self,
        box: int,
        detected: Sequence[EyeScore],
        truth: Sequence[Any],
        crops: Sequence[FineCrop],
        match_px: float,
    ) -> None:
        """One box of a frame: `truth` its labelled eyes, `crops` the frame's fine crops."""
        found = {j for _, j in match_points([(d.x, d.y) for d in detected], [(t.x, t.y) for t in truth], match_px)}
        mine = [c for c in crops if c.box == box]
        for j, eye in enumerate(truth):
            if eye.visible:
                self.counts["found" if j in found else lost_at(eye.x, eye.y, mine, match_px)] += 1

    def report(self) -> dict[str, dict[str, Any]]:
        total = sum(self.counts.values())
        return {stage: {"n": n, "share": n / total if total else None} for stage, n in self.counts.items()}


def lost_at(x: float, y: float, crops: Sequence[FineCrop], match_px: float) -> str:
    """The first stage a missed eye at frame pixel (x, y) did not pass, given its box's fine crops."""
    covering = [c for c in crops if c.covers(x, y)]
    if not covering:
        return "no_crop"
    if not any(_eye_pixel_near(c, x, y, match_px) for c in covering):
        return "no_eye_pixel"
    if any(np.hypot(b.x - x, b.y - y) <= match_px for c in covering for b in c.blobs):
        return "not_reported"
    return "no_candidate"


def _eye_pixel_near(crop: FineCrop, x: float, y: float, match_px: float) -> bool:
    u0, v0, u1, v1 = crop.valid
    rows, cols = np.nonzero(crop.classes[v0:v1, u0:u1] == EYES)
    if not len(cols):
        return False
    xs, ys = crop.to_frame(cols + u0, rows + v0)
    return float(np.min(np.hypot(xs - x, ys - y))) <= match_px
