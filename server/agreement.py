"""Agreement statistics for expert review: do the raters agree, and does the model score like them?

Pure functions over plain numbers (no database, no Flask), so every figure on the agreement page
can be checked against hand-computed and published values.

- ICC(2,1) (Shrout & Fleiss 1979: two-way random effects, absolute agreement, single rater) asks
  whether one rater's score could stand in for another's. It needs a complete samples x raters
  table, so the page computes it per rater pair (samples both scored) and over the samples every
  selected rater scored.
- Mean absolute difference between raters is in score points, which a lab reads more easily
  than an ICC.
- Each rater is compared with the consensus of the *other* raters (leave-one-out), so a rater is
  not measured against a mean that contains their own score.
- Model vs consensus: MAE, Pearson r and Bland–Altman (difference model - consensus against
  their mean, bias and bias +- 1.96 SD limits of agreement).

Any figure from fewer than `MIN_N` samples is returned as None with its n: a lab must see "not
enough ratings", never an ICC from three samples.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

MIN_N = 5
LOA_Z = 1.96


@dataclass(frozen=True)
class Figure:
    """A statistic with the number of samples it rests on; value None when n is too small
    (or the data have no spread, which leaves the statistic undefined)."""

    n: int
    value: float | None


@dataclass(frozen=True)
class BlandAltman:
    n: int
    mae: float | None
    r: float | None
    bias: float | None
    sd: float | None
    means: tuple[float, ...]
    diffs: tuple[float, ...]

    @property
    def lower(self) -> float | None:
        return None if self.bias is None or self.sd is None else self.bias - LOA_Z * self.sd

    @property
    def upper(self) -> float | None:
        return None if self.bias is None or self.sd is None else self.bias + LOA_Z * self.sd


def icc_2_1(table: Sequence[Sequence[float]]) -> float | None:
    """ICC(2,1) of an n samples x k raters table without gaps; None when undefined
    (fewer than 2 samples or raters, or no variance at all)."""
    y = np.asarray(table, dtype=float)
    if y.ndim != 2 or y.shape[0] < 2 or y.shape[1] < 2:
        return None
    n, k = y.shape
    grand = y.mean()
    rows = y.mean(axis=1)
    cols = y.mean(axis=0)
    msr = k * float(np.sum((rows - grand) ** 2)) / (n - 1)
    msc = n * float(np.sum((cols - grand) ** 2)) / (k - 1)
    resid = y - rows[:, None] - cols[None, :] + grand
    mse = float(np.sum(resid**2)) / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    if denominator <= 0:
        return None
    return (msr - mse) / denominator


def icc_figure(table: Sequence[Sequence[float]]) -> Figure:
    n = len(table)
    return Figure(n, icc_2_1(table) if n >= MIN_N else None)


def mean_abs_diff(a: Sequence[float], b: Sequence[float]) -> Figure:
    """Mean |a - b| over paired scores."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(x)
    return Figure(n, float(np.mean(np.abs(x - y))) if n >= MIN_N else None)


def pearson_r(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson's r; None when either side has no spread (r is undefined, not 0)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def bland_altman(model: Sequence[float], reference: Sequence[float]) -> BlandAltman:
    """Model against the raters' consensus: MAE, r, bias and limits of agreement, plus the points
    to plot (mean of the two, model - consensus)."""
    m, c = np.asarray(model, dtype=float), np.asarray(reference, dtype=float)
    n = len(m)
    diffs = m - c
    means = (m + c) / 2
    points = (tuple(float(v) for v in means), tuple(float(v) for v in diffs))
    if n < MIN_N:
        return BlandAltman(n, None, None, None, None, *points)
    return BlandAltman(
        n,
        float(np.mean(np.abs(diffs))),
        pearson_r(model, reference),
        float(np.mean(diffs)),
        float(np.std(diffs, ddof=1)),
        *points,
    )


def consensus(scores: Sequence[float | None]) -> float | None:
    """Mean of the scorable ratings of one sample (None = 'not scorable', left out); None when
    nobody could score it."""
    scored = [s for s in scores if s is not None]
    return float(np.mean(scored)) if scored else None


# --- from ratings to the page's tables ------------------------------------------------------------
# `ratings` maps sample id -> {rater: score, or None for "not scorable"}; `model` maps sample id ->
# the model's score on it (None when the device had no score).

Ratings = dict[int, dict[str, float | None]]


@dataclass(frozen=True)
class PairAgreement:
    a: str
    b: str
    icc: Figure
    mad: Figure


@dataclass(frozen=True)
class RaterAgreement:
    """One rater against the consensus of the other raters of the same samples."""

    rater: str
    rated: int
    not_scorable: int
    mad: Figure
    bias: float | None
    model_mad: Figure


def select(ratings: Ratings, raters: Sequence[str]) -> Ratings:
    """Only the ratings of `raters`, and only the samples one of them rated."""
    out = {}
    for sample_id, scores in ratings.items():
        kept = {r: v for r, v in scores.items() if r in raters}
        if kept:
            out[sample_id] = kept
    return out


def all_raters_table(ratings: Ratings, raters: Sequence[str]) -> list[list[float]]:
    """Samples x raters, over the samples every one of `raters` scored."""
    table = []
    for scores in ratings.values():
        row = [scores.get(r) for r in raters]
        if all(v is not None for v in row):
            table.append([float(v) for v in row if v is not None])
    return table


def pairwise(ratings: Ratings, raters: Sequence[str]) -> list[PairAgreement]:
    """ICC(2,1) and mean absolute difference for every pair of raters, over the samples both scored."""
    out = []
    for i, a in enumerate(raters):
        for b in raters[i + 1 :]:
            table = all_raters_table(ratings, [a, b])
            out.append(
                PairAgreement(a, b, icc_figure(table), mean_abs_diff([t[0] for t in table], [t[1] for t in table]))
            )
    return out


def per_rater(ratings: Ratings, raters: Sequence[str], model: dict[int, float | None]) -> list[RaterAgreement]:
    """Each rater against the leave-one-out consensus (mean of the others' scorable ratings), and
    against the model. bias = mean(rater - others): positive scores higher than the others."""
    out = []
    for rater in raters:
        own: list[float] = []
        others: list[float] = []
        model_pairs: list[tuple[float, float]] = []
        rated = not_scorable = 0
        for sample_id, scores in ratings.items():
            if rater not in scores:
                continue
            rated += 1
            score = scores[rater]
            if score is None:
                not_scorable += 1
                continue
            rest = consensus([v for r, v in scores.items() if r != rater])
            if rest is not None:
                own.append(score)
                others.append(rest)
            model_score = model.get(sample_id)
            if model_score is not None:
                model_pairs.append((model_score, score))
        mad = mean_abs_diff(own, others)
        bias = float(np.mean(np.subtract(own, others))) if mad.value is not None else None
        model_mad = mean_abs_diff([p[0] for p in model_pairs], [p[1] for p in model_pairs])
        out.append(RaterAgreement(rater, rated, not_scorable, mad, bias, model_mad))
    return out


def model_vs_consensus(ratings: Ratings, model: dict[int, float | None]) -> BlandAltman:
    """The model against the mean of the scorable ratings, over samples with both."""
    pairs = []
    for sample_id, scores in ratings.items():
        reference = consensus(list(scores.values()))
        model_score = model.get(sample_id)
        if reference is not None and model_score is not None:
            pairs.append((model_score, reference))
    return bland_altman([p[0] for p in pairs], [p[1] for p in pairs])
