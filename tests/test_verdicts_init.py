"""Claims C1-C3, the claims about the network at init (``pipeline.analysis.rules_init``),
on synthetic studies whose answer is known, built from real TrialResults
(tests/factories.py).

Every rule is tested at its thresholds: a value exactly on a boundary and the nearest one
on the other side (``up``/``down``, built from the module's constants), and at literal
values near today's thresholds, so that moving a threshold or changing a comparison makes a
test fail.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from factories import (
    OPTS,
    T,
    c2_runs,
    chi_norms,
    down,
    gain_sweep,
    result,
    study,
    up,
)

from models.theory import predict
from pipeline.analysis import rules_init
from pipeline.analysis import verdicts as vd
from pipeline.analysis.verdicts import (
    NOT_MEASURED,
    PARTLY,
    REFUTED,
    SUPPORTED,
    Verdict,
)

# --------------------------------------------------------------------------- C1


def c1(variances: list[list[float]], sats: list[list[float]] | None = None, **kw: Any) -> Verdict:
    """One Xavier trial per variance series (and saturation series)."""
    sats = sats or [[0.0] * len(v) for v in variances]
    runs = [
        result("xavier", seed=s, hidden_var=v, hidden_sat=sat, **kw)
        for s, (v, sat) in enumerate(zip(variances, sats, strict=True))
    ]
    return vd.judge_c1(study(runs), OPTS)


def flat(value: float, n: int = 3) -> list[list[float]]:
    return [[value] * T for _ in range(n)]


def test_c1_supported_when_constant_at_about_1() -> None:
    v = c1(flat(1.0))
    assert v.verdict == SUPPORTED, v.evidence
    assert v.numbers["constant"] is True and v.numbers["level_near_1"] is True
    assert v.numbers["measured_variance"] == 1.0 and v.numbers["ratio"] == 1.0
    assert v.numbers["n"] == 3


def test_c1_partly_supported_when_constant_but_at_q_star_not_1() -> None:
    v = c1(flat(0.27))
    assert v.verdict == PARTLY, v.evidence
    assert v.numbers["measured_variance"] == pytest.approx(0.27)
    expected = predict("adding", "rnn_tanh", 16, T, "xavier").hidden_var[-1]
    assert 0.0 < v.numbers["predicted_variance"] < 1.0
    assert v.numbers["predicted_variance"] == pytest.approx(expected)
    assert 0.0 < v.numbers["q_star"] < 1.0
    assert "Mean-field theory predicts" in v.evidence


def test_c1_refuted_when_the_variance_has_vanished_like_normal001() -> None:
    v = c1(flat(5e-5))  # constant ratio 1, but nothing is carried
    assert v.numbers["ratio"] == pytest.approx(1.0)
    assert v.verdict == REFUTED, v.evidence


def test_c1_refuted_when_saturated_like_xavier_at_scale_4() -> None:
    sat = [[0.5] * (T - 1) + [0.95] for _ in range(3)]
    v = c1(flat(0.9), sat)
    assert v.numbers["saturation"] == pytest.approx(0.95)
    assert v.verdict == REFUTED, v.evidence


def test_c1_refuted_when_the_variance_grows() -> None:
    v = c1([[0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9]] * 3)
    assert v.numbers["ratio"] > vd.C1_RATIO_RANGE[1]
    assert v.verdict == REFUTED


def early_then_last(early: float, last: float) -> list[list[float]]:
    return [[early] * (T - 1) + [last] for _ in range(3)]


R_LO, R_HI = vd.C1_RATIO_RANGE
L_LO, L_HI = vd.C1_LEVEL_RANGE


@pytest.mark.parametrize(
    ("variances", "sat", "expected"),
    [
        # ratio range, closed: last / early exactly at each end, then just outside
        (early_then_last(1.0 / R_HI, 1.0), 0.0, SUPPORTED),
        (early_then_last(1.0 / R_HI, up(1.0)), 0.0, REFUTED),
        (early_then_last(1.0 / R_LO, 1.0), 0.0, SUPPORTED),
        (early_then_last(1.0 / R_LO, down(1.0)), 0.0, REFUTED),
        # vanished: a level exactly at the minimum has vanished, just above has not
        (flat(vd.C1_MIN_LEVEL), 0.0, REFUTED),
        (flat(up(vd.C1_MIN_LEVEL)), 0.0, PARTLY),
        # saturation: at most the maximum share
        (flat(1.0), vd.C1_MAX_SATURATION, SUPPORTED),
        (flat(1.0), up(vd.C1_MAX_SATURATION), REFUTED),
        # level ~1, closed at both ends
        (flat(L_LO), 0.0, SUPPORTED),
        (flat(down(L_LO)), 0.0, PARTLY),
        (flat(L_HI), 0.0, SUPPORTED),
        (flat(up(L_HI)), 0.0, PARTLY),
    ],
)
def test_c1_boundaries(variances: list[list[float]], sat: float, expected: str) -> None:
    v = c1(variances, [[sat] * T for _ in variances])
    assert v.verdict == expected, v.numbers


@pytest.mark.parametrize(
    ("variances", "sat", "expected"),
    [
        (early_then_last(1.0, 0.55), 0.0, SUPPORTED),  # ratio 0.55
        (early_then_last(1.0, 0.45), 0.0, REFUTED),  # ratio 0.45
        (early_then_last(0.5, 0.975), 0.0, SUPPORTED),  # ratio 1.95
        (early_then_last(0.5, 1.1), 0.0, REFUTED),  # ratio 2.2
        (flat(0.0011), 0.0, PARTLY),
        (flat(0.0009), 0.0, REFUTED),
        (flat(1.0), 0.45, SUPPORTED),
        (flat(1.0), 0.55, REFUTED),
        (flat(0.55), 0.0, SUPPORTED),
        (flat(0.45), 0.0, PARTLY),
        (flat(1.95), 0.0, SUPPORTED),
        (flat(2.2), 0.0, PARTLY),
        # early level over the first 3 steps: 1.0 (over 2 steps 0.1, over 4 steps 25.75)
        ([[0.1, 0.1, 2.8, *[100.0] * 6, 1.0]] * 3, 0.0, SUPPORTED),
    ],
)
def test_c1_known_answers_near_the_current_thresholds(
    variances: list[list[float]], sat: float, expected: str
) -> None:
    """Literal values a little inside and outside today's thresholds (they do not follow
    the constants, so moving a threshold past them fails here as well as in the pin)."""
    v = c1(variances, [[sat] * T for _ in variances])
    assert v.verdict == expected, v.numbers


def test_c1_early_level_is_the_mean_of_exactly_the_first_steps() -> None:
    k = vd.C1_EARLY_STEPS
    # mean over the first k steps is 1.0; over k - 1 steps 0.1, over k + 1 steps 25.75
    early = [0.1] * (k - 1) + [1.0 * k - 0.1 * (k - 1)]
    series = [early + [100.0] * (T - k - 1) + [1.0] for _ in range(3)]
    v = c1(series)
    assert v.numbers["ratio"] == pytest.approx(1.0)
    assert v.verdict == SUPPORTED, v.numbers


def test_c1_takes_the_median_over_trials() -> None:
    v = c1([[1.0] * T, [1.0] * T, [100.0] * T])  # one outlier trial
    assert v.numbers["measured_variance"] == 1.0
    assert v.verdict == SUPPORTED


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cell": "lstm"},  # not a tanh Elman cell
        {"scale": 2.0},  # not at gain 1
        {"recurrent_scale": 0.5},
        {"init_recurrent": "orthogonal"},  # Whh not drawn by Xavier
    ],
)
def test_c1_not_measured_without_plain_xavier_on_rnn_tanh(kwargs: dict[str, Any]) -> None:
    runs = [result("xavier", seed=s, hidden_var=[1.0] * T, **kwargs) for s in range(3)]
    runs += [result("orthogonal", seed=s, hidden_var=[1.0] * T) for s in range(3)]
    v = vd.judge_c1(study(runs), OPTS)
    assert v.verdict == NOT_MEASURED
    assert "needs Xavier" in v.evidence


def test_c1_not_measured_with_non_finite_variances() -> None:
    v = c1(flat(math.nan))
    assert v.verdict == NOT_MEASURED
    assert "finite" in v.evidence


# --------------------------------------------------------------------------- C2


def c2(sizes: dict[int, tuple[float, float, int]], **kw: Any) -> Verdict:
    return vd.judge_c2(study(c2_runs(sizes, **kw)), OPTS)


LOST = vd.C2_LOST_SATURATION
TOL = vd.C2_TREND_TOLERANCE


def test_c2_not_measured_with_one_hidden_size() -> None:
    v = c2({64: (1.0, 1e-5, 4)})
    assert v.verdict == NOT_MEASURED
    assert "two or more hidden sizes" in v.evidence


def test_c2_not_measured_when_the_sizes_are_in_different_cells() -> None:
    runs = c2_runs({8: (0.2, 0.2, 0)}) + c2_runs({64: (1.0, 0.2, 0)}, cell="rnn_relu")
    assert vd.judge_c2(study(runs), OPTS).verdict == NOT_MEASURED


def test_c2_partly_supported_when_lost_by_saturation_at_the_largest_size() -> None:
    v = c2({8: (0.4, 0.2, 0), 64: (0.95, 0.01, 0), 256: (1.0, 0.001, 0)})
    assert v.verdict == PARTLY, v.evidence
    assert "lost at hidden 256" in v.evidence and "by saturation" in v.evidence
    sizes = v.numbers["sizes"]
    assert [s["hidden"] for s in sizes] == [8, 64, 256]
    assert sizes[-1]["saturation"] == 1.0 and sizes[-1]["frozen_share"] == 0.0
    assert sizes[-1]["perron_predicted"] == pytest.approx(128.0)  # N/2 for U[0,1]


@pytest.mark.parametrize("n_frozen", [0, 4])
def test_c2_supported_when_the_hidden_state_vanishes_at_the_largest_size(n_frozen: int) -> None:
    v = c2({8: (0.1, 0.2, 0), 64: (0.1, 1e-5, n_frozen)})
    assert v.verdict == SUPPORTED, v.evidence
    assert "lost at hidden 64, by vanishing" in v.evidence
    assert v.numbers["sizes"][-1]["variance"] == pytest.approx(1e-5)


def test_c2_partly_when_lost_only_by_frozen_trials_with_neither_mechanism() -> None:
    v = c2({8: (0.1, 0.3, 0), 64: (0.1, 0.3, 4)})  # frozen, variance kept at 0.3
    assert v.verdict == PARTLY, v.evidence
    assert "by neither vanishing nor saturation" in v.evidence


VANISHED = vd.C2_VANISHED_VARIANCE


@pytest.mark.parametrize(
    ("largest", "expected"),
    [
        ((LOST, 0.2, 0), REFUTED),  # saturation exactly at the threshold: not more than it
        ((0.85, 0.2, 0), REFUTED),
        ((up(LOST), 0.2, 0), PARTLY),  # just above: lost, by saturation
        ((LOST, 1e-5, 0), SUPPORTED),  # not saturated and vanished: by vanishing
        ((up(LOST), 1e-5, 0), PARTLY),  # saturated, so not "vanished" whatever its variance
        ((LOST, 1e-5, 4), SUPPORTED),
        ((up(LOST), 1e-5, 4), PARTLY),
        ((0.1, VANISHED, 0), REFUTED),  # variance exactly at the threshold: not below it
        ((0.1, down(VANISHED), 0), SUPPORTED),
        ((0.1, 0.2, 2), PARTLY),  # exactly half the trials frozen: lost, by neither
        ((0.1, 0.2, 1), REFUTED),  # a quarter frozen: not lost
    ],
)
def test_c2_lost_thresholds(largest: tuple[float, float, int], expected: str) -> None:
    v = c2({8: (0.0, 0.2, 0), 64: largest})
    assert v.verdict == expected, v.evidence


def test_c2_frozen_share_below_half_with_five_trials_is_not_lost() -> None:
    v = c2({8: (0.0, 0.2, 0), 64: (0.1, 0.2, 2)}, n=5)  # 40% frozen
    assert v.numbers["sizes"][-1]["frozen_share"] == pytest.approx(0.4)
    assert v.verdict == REFUTED


def test_c2_refuted_when_the_signal_is_kept_at_the_largest_size() -> None:
    v = c2({8: (0.95, 0.2, 0), 64: (0.1, 0.3, 0)})
    assert v.verdict == REFUTED, v.evidence
    assert "not lost at the largest size" in v.evidence


@pytest.mark.parametrize(
    ("smaller_sat", "expected"),
    [
        (2 * TOL, SUPPORTED),  # falls by exactly the tolerance: "does not fall"
        (2 * TOL + 0.001, REFUTED),  # falls by more: saturation falls with size
    ],
)
def test_c2_trend_tolerance(smaller_sat: float, expected: str) -> None:
    largest_sat = TOL  # lost at the largest size (vanished, frozen)
    assert largest_sat - 2 * TOL == -TOL  # the exact case is exactly on the tolerance
    v = c2({8: (smaller_sat, 0.2, 0), 64: (largest_sat, 1e-5, 4)})
    assert v.verdict == expected, v.evidence
    if expected == REFUTED:
        assert "saturation falls with size" in v.evidence


def test_c2_refuted_when_saturation_falls_beyond_tolerance_even_if_lost() -> None:
    v = c2({8: (1.0, 0.2, 0), 64: (0.95, 0.2, 0)})  # lost at 64, but fell by 0.05
    assert v.verdict == REFUTED, v.evidence
    assert "saturation falls with size" in v.evidence


def test_c2_refuted_when_lost_only_at_a_smaller_size() -> None:
    v = c2({8: (0.1, 1e-5, 4), 64: (0.2, 0.2, 0)})  # lost at 8, kept at 64
    assert v.verdict == REFUTED, v.evidence
    assert "not lost at the largest size" in v.evidence


@pytest.mark.parametrize(
    ("sizes", "expected"),
    [
        ({8: (0.045, 0.2, 0), 64: (0.02, 1e-5, 4)}, REFUTED),  # falls by 0.025
        ({8: (0.035, 0.2, 0), 64: (0.02, 1e-5, 4)}, SUPPORTED),  # falls by 0.015
        ({8: (0.5, 0.2, 0), 64: (0.91, 0.2, 0)}, PARTLY),
        ({8: (0.5, 0.2, 0), 64: (0.89, 0.2, 0)}, REFUTED),
        ({8: (0.1, 0.2, 0), 64: (0.1, 0.0009, 0)}, SUPPORTED),
        ({8: (0.1, 0.2, 0), 64: (0.1, 0.0011, 0)}, REFUTED),
    ],
)
def test_c2_known_answers_near_the_current_thresholds(
    sizes: dict[int, tuple[float, float, int]], expected: str
) -> None:
    assert c2(sizes).verdict == expected


def test_c2_small_dips_within_tolerance_keep_the_trend() -> None:
    v = c2({8: (0.5, 0.2, 0), 32: (0.96, 0.2, 0), 64: (0.95, 0.2, 0)})
    assert v.verdict == PARTLY, v.evidence


def test_c2_median_saturation_over_trials() -> None:
    runs = c2_runs({8: (0.0, 0.2, 0)})
    for seed, sat in enumerate([0.95, 0.95, 0.95, 0.0, 0.0]):  # median 0.95, mean 0.57
        runs.append(result("uniform01", hidden=64, seed=seed, hidden_sat=[sat] * T))
    v = vd.judge_c2(study(runs), OPTS)
    assert v.numbers["sizes"][-1]["saturation"] == 0.95
    assert v.verdict == PARTLY


def test_c2_reads_only_uniform01_at_gain_1() -> None:
    runs = c2_runs({8: (0.0, 0.2, 0)})
    runs += [
        result("uniform01", hidden=64, seed=s, recurrent_scale=0.1, hidden_sat=[1.0] * T)
        for s in range(4)
    ]
    assert vd.judge_c2(study(runs), OPTS).verdict == NOT_MEASURED


def test_c2_combines_cells_into_partly_when_they_disagree() -> None:
    runs = c2_runs({8: (0.2, 0.2, 0), 64: (1.0, 0.2, 0)})  # rnn_tanh: partly (saturation)
    runs += c2_runs({8: (0.2, 0.2, 0), 64: (0.1, 0.2, 0)}, cell="rnn_relu")  # refuted
    v = vd.judge_c2(study(runs), OPTS)
    assert v.verdict == PARTLY
    assert "rnn_relu" in v.evidence and "rnn_tanh" in v.evidence


def test_c2_a_cell_type_with_one_hidden_size_does_not_enter_the_verdict() -> None:
    runs = c2_runs({8: (0.2, 0.2, 0), 64: (0.1, 0.2, 0)})  # rnn_tanh: refuted
    runs += c2_runs({64: (1.0, 0.2, 0)}, cell="rnn_relu")  # one size: no trend to judge
    v = vd.judge_c2(study(runs), OPTS)
    assert v.verdict == REFUTED, v.evidence
    assert "rnn_relu: one hidden size only, no trend to judge" in v.evidence
    assert {s["cell"] for s in v.numbers["sizes"]} == {"rnn_tanh"}


# --------------------------------------------------------------------------- C3


def c3(chis: dict[float, float | list[float]], **kw: Any) -> Verdict:
    return vd.judge_c3(study(gain_sweep(chis, **kw)), OPTS)


def test_c3_measured_chi_is_the_per_step_factor_of_the_squared_norm() -> None:
    trials = study(gain_sweep({0.5: 0.3, 2.0: 1.7})).trials
    measured = rules_init._chi_measured(trials)
    assert np.allclose(measured[trials["recurrent_scale"] == 0.5], 0.3)
    assert np.allclose(measured[trials["recurrent_scale"] == 2.0], 1.7)


def test_c3_supported_when_gains_below_1_vanish_and_above_1_explode() -> None:
    v = c3({0.5: 0.2, 1.0: 0.6, 2.0: 1.3})
    assert v.verdict == SUPPORTED, v.evidence
    pred = predict("adding", "rnn_tanh", 16, T, "xavier")
    assert v.numbers["chi_predicted"] == pytest.approx(pred.chi)
    assert v.numbers["critical_gain_predicted"] == pytest.approx(pred.critical_gain)
    assert 1.0 < v.numbers["critical_gain_predicted"] < 2.0
    # log chi crosses 0 between gains 1 and 2, at 1 + ln(1/0.6) / ln(1.3/0.6)
    expected = 1.0 + math.log(1 / 0.6) / math.log(1.3 / 0.6)
    assert v.numbers["critical_gain_measured"] == pytest.approx(expected)
    (sweep,) = v.numbers["sweeps"]
    assert sweep["gains"] == [0.5, 1.0, 2.0]
    assert sweep["chi_measured"] == pytest.approx([0.2, 0.6, 1.3])
    assert sweep["chi_predicted"][0] < sweep["chi_predicted"][1] < sweep["chi_predicted"][2]


def test_c3_partly_supported_when_gain_1_25_still_vanishes_as_theory_predicts() -> None:
    pred = predict("adding", "rnn_tanh", 16, T, "xavier", recurrent_scale=1.25)
    assert pred.chi < 1.0 < pred.critical_gain  # below the critical gain ~1.5
    v = c3({0.5: 0.2, 1.0: 0.6, 1.25: 0.8})
    assert v.verdict == PARTLY, v.evidence
    assert "gains > 1 do not all explode" in v.evidence
    assert "gains < 1 all vanish" in v.evidence
    assert v.numbers["critical_gain_predicted"] == pytest.approx(pred.critical_gain)
    assert math.isnan(v.numbers["critical_gain_measured"])  # chi never reaches 1
    assert json.dumps(v.to_dict(), allow_nan=False)


def test_c3_partly_supported_when_only_gains_above_1_behave() -> None:
    v = c3({0.5: 1.2, 2.0: 1.5})
    assert v.verdict == PARTLY, v.evidence
    assert "gains < 1 do not all vanish" in v.evidence


def test_c3_refuted_when_both_sides_go_the_wrong_way() -> None:
    v = c3({0.5: 1.5, 2.0: 0.5})
    assert v.verdict == REFUTED, v.evidence


@pytest.mark.parametrize(
    ("below", "above", "expected"),
    [
        (1.0, 1.5, PARTLY),  # chi exactly 1 at a gain < 1 does not vanish
        (0.5, 1.0, PARTLY),  # chi exactly 1 at a gain > 1 does not explode
        (down(1.0), up(1.0), SUPPORTED),
        (0.999, 1.001, SUPPORTED),
        (1.001, 0.999, REFUTED),
    ],
)
def test_c3_chi_thresholds_are_strict(below: float, above: float, expected: str) -> None:
    v = c3({0.5: below, 2.0: above})
    assert v.verdict == expected, v.evidence


def test_c3_gain_1_belongs_to_neither_half() -> None:
    assert c3({0.5: 0.5, 1.0: 1.0, 2.0: 1.5}).verdict == SUPPORTED
    assert c3({0.5: 0.5, 1.0: 0.1, 2.0: 1.5}).verdict == SUPPORTED
    assert c3({0.5: 0.5, 1.0: 5.0, 2.0: 1.5}).verdict == SUPPORTED


def test_c3_every_gain_on_a_side_must_agree() -> None:
    assert c3({0.5: 0.5, 0.9: 1.1, 2.0: 1.5}).verdict == PARTLY
    assert c3({0.5: 0.5, 1.5: 0.9, 2.0: 1.5}).verdict == PARTLY


def test_c3_uses_the_median_chi_over_trials_at_a_gain() -> None:
    v = c3({0.5: [0.1, 1.05, 1.1], 2.0: 1.5})  # median 1.05 (the mean, 0.75, would vanish)
    assert v.numbers["sweeps"][0]["chi_measured"][0] == pytest.approx(1.05)
    assert v.verdict == PARTLY


def test_c3_measured_critical_gain_where_chi_reaches_exactly_1() -> None:
    v = c3({0.5: 0.5, 1.0: 1.0, 2.0: 2.0})
    assert v.numbers["critical_gain_measured"] == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:divide by zero encountered in log")
def test_c3_an_underflowed_first_gradient_counts_as_vanishing() -> None:
    runs = gain_sweep({2.0: 1.5})
    runs += [
        result("xavier", recurrent_scale=0.5, seed=s, grad_norm=[0.0, *[1.0] * (T - 1)])
        for s in range(3)
    ]
    v = vd.judge_c3(study(runs), OPTS)
    assert v.numbers["sweeps"][0]["chi_measured"][0] == 0.0
    assert v.verdict == SUPPORTED, v.evidence


@pytest.mark.parametrize(
    "runs",
    [
        pytest.param(lambda: gain_sweep({1.0: 0.6, 2.0: 1.3}), id="only-above-1"),
        pytest.param(lambda: gain_sweep({0.5: 0.2, 1.0: 0.6}), id="only-below-1"),
        pytest.param(
            # a gain on every matrix (scale) is not a gain on Whh alone
            lambda: [
                result("xavier", scale=g, seed=s, grad_norm=chi_norms(c))
                for g, c in ((0.5, 0.2), (1.0, 0.6), (2.0, 1.3))
                for s in range(3)
            ],
            id="scale-sweep",
        ),
        pytest.param(lambda: gain_sweep({0.5: 0.2, 2.0: 1.3}, cell="rnn_relu"), id="not-rnn_tanh"),
        pytest.param(
            # the two sides of 1 were measured at different input scales
            lambda: gain_sweep({0.5: 0.2}, scale=0.5) + gain_sweep({2.0: 1.3}),
            id="split-across-scales",
        ),
        pytest.param(lambda: [], id="no-trials"),
    ],
)
def test_c3_not_measured_without_a_recurrent_gain_sweep_on_both_sides_of_1(runs: Any) -> None:
    v = vd.judge_c3(study(runs()), OPTS)
    assert v.verdict == NOT_MEASURED, v.evidence
    assert "needs" in v.evidence


def test_c3_two_sweeps_that_disagree_give_partly() -> None:
    runs = gain_sweep({0.5: 0.2, 2.0: 1.3}, hidden=16)  # supported
    runs += gain_sweep({0.5: 1.5, 2.0: 0.5}, hidden=64)  # refuted
    v = vd.judge_c3(study(runs), OPTS)
    assert v.verdict == PARTLY
    assert len(v.numbers["sweeps"]) == 2
