"""The speedup rule (``pipeline.analysis.speedup_rule``): ``classify_speedup`` and
``combine_cells`` at their boundaries, claim C4, and declared comparisons (``faster``,
``than``, ``by``, ``where``, ``matrices``), on synthetic studies whose answer is known,
built from real TrialResults (tests/factories.py).

Every rule is tested at its thresholds: a value exactly on a boundary and the nearest one
on the other side (``up``/``down``), so that changing a threshold or a comparison (``<`` to
``<=``, ``MIN_N`` 5 to 4, ...) makes a test fail.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from factories import (
    FIVE,
    N_BOOT,
    OPTS,
    down,
    race,
    result,
    study,
    up,
)

from models.spec import TrialResult
from pipeline.analysis import verdicts as vd
from pipeline.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_MEASURED,
    PARTLY,
    REFUTED,
    SUPPORTED,
    Verdict,
    judge,
)
from pipeline.claimspec import ClaimError, Comparison, parse_claims

# --------------------------------------------------------------------------- classify_speedup

LOW, HIGH = vd.C4_RANGE


def classify(
    kind: str,
    lo: float | None,
    hi: float | None,
    *,
    estimate: float | None = 4.0,
    low: float = LOW,
    high: float = HIGH,
    n_a: int = vd.MIN_N,
    n_b: int = vd.MIN_N,
) -> str:
    return vd.classify_speedup(
        n_a=n_a, n_b=n_b, estimate=estimate, lo=lo, hi=hi, kind=kind, low=low, high=high
    )


@pytest.mark.parametrize(
    ("n_a", "n_b", "expected"),
    [
        (vd.MIN_N - 1, vd.MIN_N, vd.SMALL_N),
        (vd.MIN_N, vd.MIN_N - 1, vd.SMALL_N),
        (vd.MIN_N, vd.MIN_N, vd.WITHIN),
        (vd.MIN_N + 10, vd.MIN_N, vd.WITHIN),
    ],
)
def test_classify_speedup_needs_min_n_trials_in_each_arm(
    n_a: int, n_b: int, expected: str
) -> None:
    assert classify("finite", 3.0, 5.0, n_a=n_a, n_b=n_b) == expected


def test_classify_speedup_small_n_wins_over_every_kind() -> None:
    for kind in ("finite", "lower_bound", "unbounded", "none"):
        assert classify(kind, 20.0, None, n_a=vd.MIN_N - 1) == vd.SMALL_N


@pytest.mark.parametrize(
    ("kind", "estimate", "lo", "hi", "low", "high", "expected"),
    [
        # unbounded: contradicts a finite range, is "at least" anything
        ("unbounded", math.inf, 13.0, None, LOW, HIGH, vd.UNBOUNDED),
        ("unbounded", math.inf, None, None, LOW, math.inf, vd.WITHIN),
        ("unbounded", math.inf, 1.0, None, 50.0, math.inf, vd.WITHIN),
        # none: the faster scheme's median not reached
        ("none", None, None, None, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("none", 4.0, 3.0, 5.0, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("finite", None, 3.0, 5.0, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("finite", math.nan, 3.0, 5.0, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("lower_bound", math.nan, 3.0, None, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        # lower bound, finite range: above only if lo > high, else at most "at least lo"
        ("lower_bound", 40.0, up(HIGH), None, LOW, HIGH, vd.ABOVE),
        ("lower_bound", 40.0, HIGH, None, LOW, HIGH, vd.AT_LEAST),
        ("lower_bound", 8.0, 3.0, None, LOW, HIGH, vd.AT_LEAST),
        ("lower_bound", 8.0, LOW, None, LOW, HIGH, vd.AT_LEAST),
        ("lower_bound", 8.0, 0.5, None, LOW, HIGH, vd.AT_LEAST),
        ("lower_bound", 8.0, None, None, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("lower_bound", 8.0, 0.0, None, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("lower_bound", 8.0, math.nan, None, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        # lower bound, "at least low" (high = inf): within exactly when lo >= low
        ("lower_bound", 8.0, LOW, None, LOW, math.inf, vd.WITHIN),
        ("lower_bound", 8.0, 30.0, None, LOW, math.inf, vd.WITHIN),
        ("lower_bound", 8.0, down(LOW), None, LOW, math.inf, vd.AT_LEAST),
        ("lower_bound", 8.0, None, None, LOW, math.inf, vd.CELL_INCONCLUSIVE),
        # finite: within iff low <= lo and hi <= high, closed at both ends
        ("finite", 4.0, 3.0, 5.0, LOW, HIGH, vd.WITHIN),
        ("finite", 4.0, LOW, HIGH, LOW, HIGH, vd.WITHIN),
        ("finite", 4.0, down(LOW), 5.0, LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("finite", 4.0, 3.0, up(HIGH), LOW, HIGH, vd.CELL_INCONCLUSIVE),
        ("finite", 4.0, 3.0, None, LOW, HIGH, vd.CELL_INCONCLUSIVE),  # hi unbounded
        ("finite", 4.0, 3.0, None, LOW, math.inf, vd.WITHIN),
        # finite: below iff hi < low
        ("finite", 1.2, 1.0, 1.5, LOW, HIGH, vd.BELOW),
        ("finite", 1.2, None, down(LOW), LOW, HIGH, vd.BELOW),
        ("finite", 1.5, 1.0, LOW, LOW, HIGH, vd.CELL_INCONCLUSIVE),  # hi touches low
        ("finite", 1.5, 1.0, 2.5, LOW, HIGH, vd.CELL_INCONCLUSIVE),  # straddles low
        # finite: above iff lo > high
        ("finite", 15.0, 11.0, 20.0, LOW, HIGH, vd.ABOVE),
        ("finite", 15.0, up(HIGH), 20.0, LOW, HIGH, vd.ABOVE),
        ("finite", 15.0, HIGH, 20.0, LOW, HIGH, vd.CELL_INCONCLUSIVE),  # lo touches high
        ("finite", 12.0, 9.0, 20.0, LOW, HIGH, vd.CELL_INCONCLUSIVE),  # straddles high
    ],
)
def test_classify_speedup_branches(
    kind: str,
    estimate: float | None,
    lo: float | None,
    hi: float | None,
    low: float,
    high: float,
    expected: str,
) -> None:
    assert classify(kind, lo, hi, estimate=estimate, low=low, high=high) == expected


@pytest.mark.parametrize("high", [3.0, 10.0, 50.0])
def test_a_lower_bound_is_never_within_a_finite_range(high: float) -> None:
    for lo in [None, 0.0, 0.5, 1.0, 2.0, 2.5, 3.0, 5.0, 9.99, 10.0, 10.01, 49.0, 50.0, 51.0]:
        for factor in (1.0, 1.5, 4.0):
            est = (lo or 1.0) * factor
            got = classify("lower_bound", lo, None, estimate=est, low=2.0, high=high)
            assert got != vd.WITHIN, (lo, est, high)
            assert (got == vd.ABOVE) == (lo is not None and lo > high), (lo, high, got)


@pytest.mark.parametrize(
    ("classes", "expected"),
    [
        ([], NOT_MEASURED),
        ([vd.WITHIN], SUPPORTED),
        ([vd.WITHIN, vd.WITHIN, vd.WITHIN], SUPPORTED),
        ([vd.BELOW], REFUTED),
        ([vd.ABOVE, vd.BELOW], REFUTED),
        ([vd.UNBOUNDED], REFUTED),
        ([vd.UNBOUNDED, vd.SMALL_N, vd.AT_LEAST, vd.CELL_INCONCLUSIVE], REFUTED),
        ([vd.WITHIN, vd.BELOW], PARTLY),
        ([vd.WITHIN, vd.UNBOUNDED], PARTLY),
        ([vd.WITHIN, vd.SMALL_N], PARTLY),
        ([vd.WITHIN, vd.AT_LEAST], PARTLY),
        ([vd.WITHIN, vd.CELL_INCONCLUSIVE], PARTLY),
        ([vd.AT_LEAST], INCONCLUSIVE),
        ([vd.SMALL_N], INCONCLUSIVE),
        ([vd.CELL_INCONCLUSIVE], INCONCLUSIVE),
        ([vd.AT_LEAST, vd.SMALL_N, vd.CELL_INCONCLUSIVE], INCONCLUSIVE),
    ],
)
def test_combine_cells(classes: list[str], expected: str) -> None:
    assert vd.combine_cells(classes) == expected


def test_contradicting_classes_are_below_above_and_unbounded_only() -> None:
    assert set(vd.CONTRADICTS) == {vd.BELOW, vd.ABOVE, vd.UNBOUNDED}


# --------------------------------------------------------------------------- C4


def c4(results: list[TrialResult]) -> Verdict:
    return vd.judge_c4(study(results), OPTS)


def only_cell(v: Verdict) -> dict[str, Any]:
    cells = v.numbers["cells"]
    assert len(cells) == 1, cells
    return cells[0]


def test_c4_supported_when_every_cell_interval_lies_inside_2_to_10() -> None:
    runs = race([3] * FIVE, [11, 12, 13, 12, 12], seq_len=10)
    runs += race([3] * FIVE, [11, 12, 13, 12, 12], seq_len=30)
    v = c4(runs)
    assert v.verdict == SUPPORTED, v.evidence
    assert [c["seq_len"] for c in v.numbers["cells"]] == [10, 30]
    for cell in v.numbers["cells"]:
        assert cell["kind"] == "finite" and cell["classification"] == vd.WITHIN
        assert LOW <= cell["lo"] <= cell["estimate"] <= cell["hi"] <= HIGH
        assert cell["estimate"] == pytest.approx(4.0)


def test_c4_numbers_cells_carry_the_rule_inputs() -> None:
    v = c4(race([3] * FIVE, [11, 12, 13, 12, 12]))
    cell = only_cell(v)
    assert {"n_a", "n_b", "estimate", "lo", "hi", "kind", "classification"} <= set(cell)
    assert (cell["n_a"], cell["n_b"]) == (FIVE, FIVE)
    assert v.numbers["faster"] == "xavier" and v.numbers["than"] == "uniform01"
    assert v.numbers["range"] == [LOW, HIGH]
    # the numbers are the ones the classification is a function of
    assert cell["classification"] == classify(
        cell["kind"], cell["lo"], cell["hi"], estimate=cell["estimate"]
    )


def test_c4_refuted_as_stated_when_both_converge_together() -> None:
    v = c4(race([5] * FIVE, [5] * FIVE))
    assert v.verdict == REFUTED, v.evidence
    assert v.evidence.startswith("Refuted as stated")
    assert only_cell(v)["classification"] == vd.BELOW
    assert "below 2x" in v.evidence


def test_c4_only_refuted_verdicts_say_refuted_as_stated() -> None:
    v = c4(race([3] * FIVE, [11, 12, 13, 12, 12]))
    assert v.verdict == SUPPORTED and "Refuted as stated" not in v.evidence


@pytest.mark.parametrize(
    ("budget", "estimate", "classification", "verdict"),
    [
        (12, 4.0, vd.AT_LEAST, INCONCLUSIVE),  # point estimate 4x: inside 2-10, yet no
        (30, 10.0, vd.AT_LEAST, INCONCLUSIVE),  # lo == 10 exactly: not above 10
        (60, 20.0, vd.ABOVE, REFUTED),
    ],
)
def test_c4_a_lower_bound_never_follows_the_epoch_budget_into_supported(
    budget: int, estimate: float, classification: str, verdict: str
) -> None:
    """The old bug: uniform01 censored at a budget B gave the "speedup" B / 3, so the
    verdict followed the budget. The same Xavier trials, re-judged at 12, 30 and 60."""
    v = c4(race([3] * FIVE, [None] * FIVE, budget=budget))
    cell = only_cell(v)
    assert cell["kind"] == "lower_bound"
    assert cell["estimate"] == pytest.approx(estimate)
    assert cell["lo"] == pytest.approx(estimate)  # every resample is budget / 3
    assert cell["hi"] is None
    assert cell["classification"] == classification
    assert v.verdict == verdict, v.evidence
    assert v.verdict != SUPPORTED
    assert "median not reached" in v.evidence


def test_c4_a_lower_bound_without_a_positive_lower_limit_is_inconclusive() -> None:
    # Xavier converges in 3 of 5: many resamples miss its median, so the 95% lower limit is 0
    v = c4(race([3, 3, 3, None, None], [None] * FIVE))
    cell = only_cell(v)
    assert cell["kind"] == "lower_bound" and cell["lo"] is None
    assert cell["estimate"] > HIGH  # budget / median: a point above 10x, not a bound
    assert cell["classification"] == vd.CELL_INCONCLUSIVE
    assert v.verdict == INCONCLUSIVE, v.evidence
    assert "no bound" in v.evidence


def test_c4_inconclusive_evidence_says_what_would_decide() -> None:
    v = c4(race([3] * FIVE, [None] * FIVE, budget=12))
    assert v.verdict == INCONCLUSIVE
    assert "What would decide it" in v.evidence and "longer epoch budget" in v.evidence


@pytest.mark.parametrize("n", [6, 10])
def test_c4_uniform01_frozen_in_half_its_trials_is_unbounded_and_refuted(n: int) -> None:
    v = c4(race([3] * n, [None] * n, frozen=n // 2))
    cell = only_cell(v)
    assert cell["kind"] == "unbounded"
    assert cell["classification"] == vd.UNBOUNDED
    assert v.verdict == REFUTED
    assert "Refuted as stated" in v.evidence
    assert "frozen in 50%" in v.evidence and "cannot train" in v.evidence
    assert v.details is not None and float(v.details["frozen_b"].iloc[0]) == 0.5


def test_c4_uniform01_frozen_in_every_trial_is_unbounded() -> None:
    v = c4(race([3] * FIVE, [None] * FIVE, frozen=FIVE))
    cell = only_cell(v)
    assert cell["kind"] == "unbounded" and cell["estimate"] == math.inf
    assert v.verdict == REFUTED
    written = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert written["numbers"]["cells"][0]["estimate"] == "inf"


def test_c4_a_frozen_baseline_whose_loss_exploded_is_still_unbounded() -> None:
    # The outcome says diverged; the rule still sees the init diagnosis (cannot train).
    runs = race([3] * FIVE, [])
    runs += [result("uniform01", seed=s, frozen=True, diverged=1) for s in range(FIVE)]
    assert {r.outcome for r in runs[FIVE:]} == {"diverged"}
    v = c4(runs)
    cell = only_cell(v)
    assert cell["kind"] == "unbounded" and cell["estimate"] == math.inf
    assert v.details is not None and float(v.details["frozen_b"].iloc[0]) == 1.0
    assert "frozen in 100%" in v.evidence and "cannot train" in v.evidence


def test_c4_frozen_in_fewer_than_half_is_an_ordinary_lower_bound() -> None:
    v = c4(race([3] * FIVE, [None] * FIVE, frozen=2))  # 40% frozen
    cell = only_cell(v)
    assert cell["kind"] == "lower_bound"
    assert cell["classification"] == vd.ABOVE  # lo = 40 / 3 > 10
    assert v.verdict == REFUTED
    assert "unbounded" not in v.evidence


def test_c4_an_unbounded_speedup_supports_a_claim_of_at_least() -> None:
    tables = study(race([3] * FIVE, [None] * FIVE, frozen=FIVE))
    claim = parse_claims([{"faster": "xavier", "than": "uniform01", "by": [2, math.inf]}])
    (v,) = judge(tables, claim, n_boot=N_BOOT)
    assert only_cell(v)["kind"] == "unbounded"
    assert v.verdict == SUPPORTED, v.evidence


@pytest.mark.parametrize(
    ("n_xavier", "n_uniform", "verdict"),
    [
        (FIVE - 1, FIVE, INCONCLUSIVE),
        (FIVE, FIVE - 1, INCONCLUSIVE),
        (FIVE - 1, FIVE - 1, INCONCLUSIVE),
        (FIVE, FIVE, SUPPORTED),
    ],
)
def test_c4_needs_min_n_trials_per_arm(n_xavier: int, n_uniform: int, verdict: str) -> None:
    v = c4(race([3] * n_xavier, [12] * n_uniform))
    cell = only_cell(v)
    assert (cell["n_a"], cell["n_b"]) == (n_xavier, n_uniform)
    assert v.verdict == verdict, v.evidence
    if verdict == INCONCLUSIVE:
        assert cell["classification"] == vd.SMALL_N
        assert "n too small" in v.evidence
        assert f"at least {vd.MIN_N} seeds" in v.evidence


def test_c4_inconclusive_when_xavier_itself_never_converges() -> None:
    v = c4(race([None] * FIVE, [12] * FIVE))
    cell = only_cell(v)
    assert cell["kind"] == "none" and cell["estimate"] is None
    assert cell["classification"] == vd.CELL_INCONCLUSIVE
    assert v.verdict == INCONCLUSIVE


def test_c4_inconclusive_when_the_interval_straddles_2() -> None:
    v = c4(race([3, 3, 4, 5, 6], [4, 6, 7, 9, 12]))
    cell = only_cell(v)
    assert cell["kind"] == "finite"
    assert cell["lo"] < LOW < cell["hi"], cell
    assert cell["classification"] == vd.CELL_INCONCLUSIVE
    assert v.verdict == INCONCLUSIVE
    assert "straddles" in v.evidence


def test_c4_partly_supported_when_cells_disagree() -> None:
    runs = race([3] * FIVE, [12] * FIVE, seq_len=10) + race([5] * FIVE, [5] * FIVE, seq_len=30)
    v = c4(runs)
    assert v.verdict == PARTLY, v.evidence
    by_len = {c["seq_len"]: c["classification"] for c in v.numbers["cells"]}
    assert by_len == {10: vd.WITHIN, 30: vd.BELOW}


def test_c4_reads_only_the_schemes_at_gain_1() -> None:
    # uniform01 with a gain on Whh, or on every matrix, is not "the scheme"
    runs = race([3] * FIVE, [12] * FIVE)
    gained = race([3] * FIVE, [5] * FIVE, seq_len=30, recurrent_scale=2.0)
    v = c4(runs + gained)
    assert [c["seq_len"] for c in v.numbers["cells"]] == [10]
    assert v.verdict == SUPPORTED
    assert c4(race([3] * FIVE, [12] * FIVE, scale=2.0)).verdict == NOT_MEASURED


def test_c4_not_measured_without_uniform01() -> None:
    v = c4(race([3] * FIVE, [12] * FIVE, scheme="orthogonal"))
    assert v.verdict == NOT_MEASURED
    assert "uniform01" in v.evidence


def test_c4_not_measured_when_the_schemes_share_no_cell() -> None:
    runs = [result("xavier", seq_len=10, seed=s, converged=3) for s in range(FIVE)]
    runs += [result("uniform01", seq_len=30, seed=s, converged=12) for s in range(FIVE)]
    v = c4(runs)
    assert v.verdict == NOT_MEASURED
    assert "share none" in v.evidence


def test_declared_comparison_is_judged_on_its_where_filter() -> None:
    runs = race([3] * FIVE, [12] * FIVE, faster="orthogonal", scheme="xavier", hidden=64)
    runs += race([5] * FIVE, [5] * FIVE, faster="orthogonal", scheme="xavier", hidden=16)
    tables = study(runs)
    entry = {"faster": "orthogonal", "than": "xavier", "by": [2, 10], "where": {"hidden": 64}}
    claims = parse_claims([entry, {**entry, "where": {}}])
    assert isinstance(claims[0], Comparison)
    filtered, everything = judge(tables, claims, n_boot=N_BOOT)
    assert filtered.claim_id == "U1" and everything.claim_id == "U2"
    assert filtered.verdict == SUPPORTED, filtered.evidence
    assert [c["classification"] for c in filtered.numbers["cells"]] == [vd.WITHIN]
    assert filtered.rule == vd.SPEEDUP_RULE
    assert everything.verdict == PARTLY, everything.evidence
    assert {c["hidden"]: c["classification"] for c in everything.numbers["cells"]} == {
        16: vd.BELOW,
        64: vd.WITHIN,
    }
    assert filtered.claim == "orthogonal converges 2-10x faster than xavier, hidden 64"


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (30, SUPPORTED),  # lower bound 10 >= 2: "at least 2x" holds
        (6, SUPPORTED),  # lower bound exactly 2
        (5, INCONCLUSIVE),  # lower bound 5/3 < 2: only "at least 1.67x"
    ],
)
def test_declared_at_least_comparison_with_a_lower_bound(budget: int, expected: str) -> None:
    tables = study(race([3] * FIVE, [None] * FIVE, faster="orthogonal", budget=budget))
    claims = parse_claims([{"faster": "orthogonal", "than": "uniform01", "by": [2, math.inf]}])
    (v,) = judge(tables, claims, n_boot=N_BOOT)
    cell = only_cell(v)
    assert cell["kind"] == "lower_bound"
    assert cell["lo"] == pytest.approx(budget / 3)
    assert v.verdict == expected, v.evidence


def test_declared_comparison_on_a_gain_keeps_trials_off_gain_1() -> None:
    runs = race([3] * FIVE, [12] * FIVE, faster="orthogonal", scheme="xavier", recurrent_scale=2.0)
    tables = study(runs)
    entry = {"faster": "orthogonal", "than": "xavier", "by": [2, 10]}
    plain, gained = judge(
        tables,
        parse_claims([entry, {**entry, "where": {"recurrent_scale": 2.0}}]),
        n_boot=N_BOOT,
    )
    assert plain.verdict == NOT_MEASURED  # by default only the schemes at gain 1
    assert gained.verdict == SUPPORTED, gained.evidence


def test_a_recurrent_only_comparison_compares_whh_schemes_with_the_rest_fixed() -> None:
    # Whh: orthogonal converges at 3, xavier at 12; Wxh and the output fixed to glorot
    runs = [
        result("glorot_uniform", init_recurrent=rec, seed=s, converged=c)
        for rec, c in (("orthogonal", 3), ("xavier", 12))
        for s in range(FIVE)
    ]
    runs += race([5] * FIVE, [5] * FIVE, faster="orthogonal", scheme="xavier")  # whole network
    entry = {"faster": "orthogonal", "than": "xavier", "by": [2, 10]}
    whh, whole = judge(
        study(runs), parse_claims([{**entry, "matrices": "recurrent"}, entry]), n_boot=N_BOOT
    )
    assert whh.verdict == SUPPORTED, whh.evidence
    assert whh.claim == "orthogonal (Whh only) converges 2-10x faster than xavier (Whh only)"
    assert whole.verdict == REFUTED, whole.evidence  # 1x: below, with Whh-only rows left out
    with pytest.raises(ClaimError, match="must be one of all, recurrent"):
        parse_claims([{**entry, "matrices": "input"}])
