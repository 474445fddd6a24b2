"""The score each renderer's lid opening means on the training generator's scale.

Orbital tightening 0-9 has no anchored definition in pixels: each renderer draws a score as a lid
opening (height / width of the eye) by a curve of its own. The training generator draws 0.88 at 0
down to 0.06 at 9 (`export.synth.mouse.aperture_ratio`), the choice renderer a flatter opening
(0.70 at 0), the independent renderer a rounder one (1.0 at 0, 0.12 at 9). A model that read every
opening perfectly on the training generator's curve would still be scored wrong against another
renderer's labels by the difference of the curves: on the independent renderer's acceptance set
that alone is an MAE of about 1.1 ("the definition gap", docs/generalisation.md).

So `evaluate` reports that gap next to every figure on another renderer's frames, and
`--translate-scores` replaces each labelled score by the one the training generator's curve gives
the opening the renderer drew: the MAE against those asks whether a model reads an unfamiliar eye's
opening, not whether it knows another renderer's convention. Choices between models on the choice
renderer use it; the acceptance figures use the labels as they are. The curves are the renderers'
own functions, imported, so a change to a renderer cannot leave a stale copy here (only the choice
renderer's narrowing lives inside its drawing code; a test measures every renderer's drawn outline
against its curve). Pixel minimums
(the thinnest slit each renderer draws) are left out: they bend the curves only for the smallest
shut eyes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from export.choicerender.eye import opening_ratio
from export.dataset import Dataset, Eye, Frame
from export.independent.mouse import aperture
from export.metrics import mae, mean_difference
from export.synth.mouse import aperture_ratio as training_opening
from mgs_core.errors import MgsError

TRAINING_GENERATOR = "export.synth"
# The choice renderer narrows a tightening eye by this share of its width at score 9 while its
# opening_ratio is over the full width: the opening it draws is that over the narrowed width
# (export/choicerender/eye.py). The independent renderer's aperture is already over its narrowed width.
NARROWING_AT_9 = 0.12


def _choice_opening(score: float) -> float:
    return opening_ratio(score, blink=False) / (1.0 - NARROWING_AT_9 * min(max(score, 0.0), 9.0) / 9.0)


# Lid opening (height / width as drawn) for a labelled score, per renderer (dataset.json `generator`).
OPENINGS: dict[str, Callable[[float], float]] = {
    TRAINING_GENERATOR: training_opening,
    "export.choicerender": _choice_opening,
    "export.independent": aperture,
}


def training_score_of_opening(opening: float) -> float:
    """The score whose opening the training generator draws as `opening` (0 above its widest, 9 below its slit)."""
    lo, hi = training_opening(9.0), training_opening(0.0)
    if opening >= hi:
        return 0.0
    if opening <= lo:
        return 9.0
    a, b = 0.0, 9.0  # the curve falls monotonically: bisect to well below the labels' 0.01 step
    for _ in range(40):
        mid = 0.5 * (a + b)
        if training_opening(mid) > opening:
            a = mid
        else:
            b = mid
    return 0.5 * (a + b)


def renderer_of(dataset: Dataset) -> str | None:
    """The module that rendered a dataset (dataset.json `generator`; for folders pooled by
    `combine_datasets`, their common one), None for recorded frames or a mix."""
    parts = dataset.info.get("combined", [dataset.info])
    names = {_renderer_in(info) for info in parts}
    return names.pop() if len(names) == 1 else None


def _renderer_in(info: dict) -> str | None:
    generator = info.get("generator")
    if not isinstance(generator, dict):
        return None
    name = generator.get("renderer", generator.get("name"))
    return name if isinstance(name, str) else None


def translated_score(renderer: str, score: float) -> float:
    return round(training_score_of_opening(OPENINGS[renderer](score)), 2)


def translate_scores(dataset: Dataset) -> Dataset:
    """`dataset` with every labelled score replaced by the training generator's score of its drawn opening."""
    renderer = renderer_of(dataset)
    if renderer not in OPENINGS:
        made = f"made by {renderer}" if renderer else "recorded, or rendered by several renderers"
        raise MgsError(
            f"{dataset.root}: {made}; scores can be translated only for frames of "
            + ", ".join(sorted(OPENINGS))
            + ", whose score-to-opening curves are known"
        )

    def eye(e: Eye) -> Eye:
        return e if e.score is None else dataclasses.replace(e, score=translated_score(renderer, e.score))

    def frame(f: Frame) -> Frame:
        boxes = tuple(dataclasses.replace(b, eyes=tuple(eye(e) for e in b.eyes)) for b in f.boxes)
        return dataclasses.replace(f, boxes=boxes)

    return dataclasses.replace(
        dataset,
        info={**dataset.info, "scores": f"translated to {TRAINING_GENERATOR}'s lid openings"},
        labels=tuple(frame(f) for f in dataset.labels),
        frames=tuple(frame(f) for f in dataset.frames),
    )


def definition_gap(dataset: Dataset) -> dict[str, object] | None:
    """What a perfect reader of the training generator's openings would score against these labels:
    the MAE and mean difference between translated and labelled scores over the visible scored eyes.
    None for recorded frames and the training generator's own."""
    renderer = renderer_of(dataset)
    if renderer not in OPENINGS or renderer == TRAINING_GENERATOR:
        return None
    labelled = [e.score for f in dataset.frames for b in f.boxes for e in b.eyes if e.visible and e.score is not None]
    translated = [translated_score(renderer, s) for s in labelled]
    return {
        "renderer": renderer,
        "eyes": len(labelled),
        "mae": round(mae(translated, labelled), 3) if labelled else None,
        "mean_difference": round(mean_difference(translated, labelled), 3) if labelled else None,
    }
