"""Agreement statistics against published and hand-computed values."""

from __future__ import annotations

import math

import pytest

from server import agreement
from server.agreement import Figure

# Shrout & Fleiss (1979), Table 2: six targets rated by four judges; ICC(2,1) = 0.29.
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_icc_2_1_matches_shrout_and_fleiss() -> None:
    icc = agreement.icc_2_1(SHROUT_FLEISS)
    assert icc is not None and round(icc, 2) == 0.29
    assert icc == pytest.approx(0.2898, abs=1e-4)


def test_icc_is_absolute_agreement_so_a_constant_offset_lowers_it() -> None:
    a = [1.0, 3.0, 5.0, 7.0, 9.0]
    assert agreement.icc_2_1([[x, x] for x in a]) == pytest.approx(1.0)
    # b = a + 1: MSR = 2 * var(row means) = 20, MSC = 5 * 2 * 0.25 = 2.5, MSE = 0
    # ICC = 20 / (20 + 0 + 2 * 2.5 / 5) = 20 / 21
    assert agreement.icc_2_1([[x, x + 1] for x in a]) == pytest.approx(20 / 21)


def test_icc_is_undefined_without_variance_or_enough_data() -> None:
    assert agreement.icc_2_1([[4, 4]] * 6) is None
    assert agreement.icc_2_1([[1, 2]]) is None
    assert agreement.icc_figure([[1, 2], [3, 4]]) == Figure(2, None)
    assert agreement.icc_figure(SHROUT_FLEISS).value == pytest.approx(0.2898, abs=1e-4)


def test_mean_absolute_difference_and_pearson() -> None:
    assert agreement.mean_abs_diff([1, 2, 3, 4, 5], [2, 2, 1, 4, 8]) == Figure(5, 6 / 5)
    assert agreement.mean_abs_diff([1, 2], [2, 2]) == Figure(2, None)
    assert agreement.pearson_r([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert agreement.pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert agreement.pearson_r([1, 2, 3], [5, 5, 5]) is None


def test_bland_altman_by_hand() -> None:
    model = [2.0, 4.0, 6.0, 8.0, 5.0]
    raters = [1.0, 4.0, 5.0, 9.0, 3.0]
    # differences 1, 0, 1, -1, 2: bias 0.6, SD sqrt(((0.4)^2 + 0.6^2 + 0.4^2 + 1.6^2 + 1.4^2) / 4) = sqrt(1.3)
    ba = agreement.bland_altman(model, raters)
    assert ba.n == 5
    assert ba.mae == pytest.approx(1.0)
    assert ba.bias == pytest.approx(0.6)
    assert ba.sd == pytest.approx(math.sqrt(1.3))
    assert ba.lower == pytest.approx(0.6 - 1.96 * math.sqrt(1.3))
    assert ba.upper == pytest.approx(0.6 + 1.96 * math.sqrt(1.3))
    assert ba.means == (1.5, 4.0, 5.5, 8.5, 4.0)
    assert ba.diffs == (1.0, 0.0, 1.0, -1.0, 2.0)
    # Sxy = 25, Sxx = 20, Syy = 35.2
    assert ba.r == pytest.approx(25 / math.sqrt(20 * 35.2))
    few = agreement.bland_altman(model[:3], raters[:3])
    assert few.n == 3 and few.mae is None and few.bias is None and few.lower is None and len(few.diffs) == 3


def test_consensus_leaves_out_not_scorable_votes() -> None:
    assert agreement.consensus([2.0, None, 4.0]) == 3.0
    assert agreement.consensus([None, None]) is None


RATINGS = {
    1: {"ann": 1.0, "bob": 2.0, "cy": 1.0},
    2: {"ann": 3.0, "bob": 4.0, "cy": None},
    3: {"ann": 5.0, "bob": 6.0, "cy": 5.0},
    4: {"ann": 7.0, "bob": 8.0, "cy": 7.0},
    5: {"ann": 9.0, "bob": 9.0, "cy": 9.0},
    6: {"ann": 2.0, "bob": 3.0, "cy": 2.0},
    7: {"ann": 4.0, "bob": None},
}


def test_pairs_use_the_samples_both_scored_and_the_all_raters_table_those_everyone_scored() -> None:
    table = agreement.all_raters_table(RATINGS, ["ann", "bob", "cy"])
    assert len(table) == 5  # sample 2 (cy not scorable) and 7 (cy absent, bob not scorable) are out
    pairs = {(p.a, p.b): p for p in agreement.pairwise(RATINGS, ["ann", "bob", "cy"])}
    assert pairs[("ann", "bob")].mad == Figure(6, 5 / 6)
    assert pairs[("ann", "cy")].mad == Figure(5, 0.0)
    assert pairs[("ann", "cy")].icc.value == pytest.approx(1.0)
    assert pairs[("ann", "bob")].icc.value is not None and pairs[("ann", "bob")].icc.value < 1.0


def test_each_rater_is_compared_with_the_others_not_with_a_mean_holding_their_own_score() -> None:
    model = {i: 5.0 for i in RATINGS}
    rows = {r.rater: r for r in agreement.per_rater(RATINGS, ["ann", "bob", "cy"], model)}
    bob = rows["bob"]
    assert (bob.rated, bob.not_scorable) == (7, 1)
    # bob vs mean(ann, cy) on 1, 3, 4, 5, 6 and vs ann alone on 2: differences 1, 1, 1, 0, 1, 1
    assert bob.mad == Figure(6, 5 / 6)
    assert bob.bias == pytest.approx(5 / 6)
    assert rows["cy"].not_scorable == 1 and rows["cy"].rated == 6
    assert bob.model_mad.n == 6


def test_model_against_consensus_skips_samples_without_a_model_score_or_any_scorable_rating() -> None:
    ratings = {**RATINGS, 8: {"ann": None, "bob": None}}
    model = {1: 1.5, 2: 3.5, 3: 5.5, 4: 7.5, 5: None, 6: 2.5, 7: 4.0, 8: 3.0}
    ba = agreement.model_vs_consensus(ratings, model)
    assert ba.n == 6
    # consensus: 4/3, 3.5, 16/3, 22/3, 7/3, 4
    assert ba.mae == pytest.approx((1 / 6 + 0 + 1 / 6 + 1 / 6 + 1 / 6 + 0) / 6)


def test_select_keeps_only_the_chosen_raters() -> None:
    chosen = agreement.select(RATINGS, ["cy"])
    assert chosen == {i: {"cy": RATINGS[i]["cy"]} for i in range(1, 7)}
    assert agreement.model_vs_consensus(chosen, {1: 2.0}).n == 1
