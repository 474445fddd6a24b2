"""Scores translated between renderers' lid-opening curves: exact inverses, labels kept apart from the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.dataset import Box, Dataset, Eye, Frame
from export.score_definition import (
    OPENINGS,
    TRAINING_GENERATOR,
    definition_gap,
    training_opening,
    training_score_of_opening,
    translate_scores,
)
from mgs_core.errors import MgsError

SCORES = np.round(np.linspace(0.0, 9.0, 37), 2)


def test_the_training_curve_is_inverted_and_held_at_its_ends() -> None:
    for s in SCORES:
        assert training_score_of_opening(training_opening(float(s))) == pytest.approx(s, abs=1e-6)
    assert training_score_of_opening(training_opening(0.0) + 0.1) == 0.0
    assert training_score_of_opening(training_opening(9.0) - 0.01) == 9.0


@pytest.mark.parametrize("renderer", sorted(OPENINGS))
def test_a_translated_score_is_the_one_whose_training_opening_the_renderer_drew(renderer: str) -> None:
    drawn = OPENINGS[renderer]
    lo, hi = training_opening(9.0), training_opening(0.0)
    for s in SCORES:
        opening = drawn(float(s))
        t = training_score_of_opening(opening)
        if lo < opening < hi:
            assert training_opening(t) == pytest.approx(opening, abs=1e-6)
        else:
            assert t == (0.0 if opening >= hi else 9.0)
        if renderer == TRAINING_GENERATOR:
            assert t == pytest.approx(s, abs=1e-6)


def _dataset(info: dict) -> Dataset:
    eyes = (Eye(10.0, 10.0, 4.0), Eye(30.0, 10.0, None), Eye(50.0, 10.0, None, visible=False), Eye(70.0, 10.0, 0.0))
    frame = Frame("images/a.png", None, (Box(0, (0, 0, 100, 40), True, eyes),))
    return Dataset(Path("/nowhere"), info, (frame,), (frame,))


def test_translation_changes_only_the_scores_of_a_known_renderers_eyes() -> None:
    data = _dataset({"generator": {"renderer": "export.independent", "seed": 1}})
    translated = translate_scores(data)
    before, after = data.frames[0].boxes[0].eyes, translated.frames[0].boxes[0].eyes
    assert [(e.x, e.y, e.visible) for e in after] == [(e.x, e.y, e.visible) for e in before]
    expected = round(training_score_of_opening(OPENINGS["export.independent"](4.0)), 2)
    assert after[0].score == expected != 4.0
    assert after[1].score is None and after[2].score is None
    assert translated.labels[0].boxes[0].eyes == after
    assert "translated" in translated.info["scores"]
    gap = definition_gap(data)
    assert gap is not None and gap["eyes"] == 2
    expected_gap = abs(expected - 4.0) + abs(after[3].score - 0.0)
    assert gap["mae"] == pytest.approx(expected_gap / 2, abs=1e-3)


def test_recorded_frames_and_mixed_renderers_are_not_translated() -> None:
    recorded = _dataset({"source": "a facility's reviewed frames"})
    with pytest.raises(MgsError, match="recorded.*export.choicerender"):
        translate_scores(recorded)
    mixed = _dataset(
        {"combined": [{"generator": {"renderer": "export.choicerender"}}, {"generator": {"name": "export.synth"}}]}
    )
    with pytest.raises(MgsError, match="several renderers"):
        translate_scores(mixed)
    assert definition_gap(recorded) is None and definition_gap(mixed) is None
    assert definition_gap(_dataset({"generator": {"name": TRAINING_GENERATOR}})) is None


def _drawn_opening(renderer: str, score: float) -> float:
    """Height / width of the eye outline each renderer's own drawing code makes, 100 px wide (no pixel minimum binds)."""
    if renderer == "export.choicerender":
        from export.choicerender.eye import EyeDraw, _lids

        upper, lower, half = _lids(EyeDraw((0.0, 0.0), 100.0, 0.0, score, blink=False))
        return float((lower[:, 1].max() - upper[:, 1].min()) / (2 * half))
    if renderer == "export.independent":
        from export.independent.mouse import eye_outline

        pts = eye_outline(100.0, score, 0.0, n=400)
    else:
        from export.synth.mouse import eye_outline as synth_outline

        pts = synth_outline(0.0, 0.0, np.array([1.0, 0.0]), np.array([0.0, 1.0]), 100.0, score, False)
    return float(np.ptp(pts[:, 1]) / np.ptp(pts[:, 0]))


@pytest.mark.parametrize("renderer", sorted(OPENINGS))
def test_the_curves_are_the_openings_the_renderers_draw(renderer: str) -> None:
    """The translation stands on each curve being the drawn outline's height over its width."""
    for s in (0.0, 2.5, 4.5, 7.0, 9.0):
        assert _drawn_opening(renderer, s) == pytest.approx(OPENINGS[renderer](s), rel=0.01)
