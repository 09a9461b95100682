"""Claim verdicts on synthetic studies whose answer is known, built from real TrialResults.

Every rule of ``pipeline.analysis.verdicts`` is tested at its thresholds: a value exactly on a
boundary and the nearest one on the other side, so that changing a threshold or a
comparison (``<`` to ``<=``, ``MIN_N`` 5 to 4, ...) makes a test fail. Boundary values are
built from the module's constants, and ``test_thresholds_are_pinned`` pins the constants
themselves, so a silent change of a threshold is noticed too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.spec import (
    OUTCOMES,
    STALL_FRACTION,
    EpochRecord,
    InitDiagnostics,
    TrialResult,
    TrialSpec,
)
from models.theory import predict
from pipeline.analysis import rules_init
from pipeline.analysis import verdicts as vd
from pipeline.analysis.tables import StudyTables, tables_from_results
from pipeline.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_MEASURED,
    PARTLY,
    REFUTED,
    SUPPORTED,
    VERDICTS,
    Verdict,
    judge,
)
from pipeline.claimspec import ClaimError, Comparison, parse_claims

N_BOOT = 200  # enough for the intervals these tests read; keeps the file fast
OPTS = vd.Options(n_boot=N_BOOT)
TARGET = 0.05
BASELINE = 0.167
T = 10  # default seq_len: T init-diagnostic steps


def up(x: float) -> float:
    """The next float above ``x``."""
    return math.nextafter(x, math.inf)


def down(x: float) -> float:
    """The next float below ``x``."""
    return math.nextafter(x, -math.inf)


# --------------------------------------------------------------------------- builders


def result(
    init: str = "xavier",
    *,
    cell: str = "rnn_tanh",
    hidden: int = 16,
    seq_len: int = T,
    scale: float = 1.0,
    recurrent_scale: float | None = None,
    init_recurrent: str | None = None,
    seed: int = 0,
    converged: int | None = None,
    diverged: int | None = None,
    frozen: bool = False,
    stalled: bool = False,
    max_epochs: int = 40,
    patience: int = 2,
    target: float = TARGET,
    baseline: float = BASELINE,
    val_losses: list[float] | None = None,
    radius: float = 1.0,
    hidden_var: list[float] | None = None,
    hidden_sat: list[float] | None = None,
    grad_norm: list[float] | None = None,
) -> TrialResult:
    """One trial's result, with a training history consistent with its outcome.

    ``converged``: the first of ``patience`` epochs at a loss below the target (training
    stops there); ``diverged``: the loss is inf at that epoch; ``stalled``: the loss stays
    at the baseline; ``frozen``: zero gradient into Wxh and Whh at init; otherwise the loss
    leaves the baseline but never reaches the target (censored at ``max_epochs``).
    """
    spec = TrialSpec(
        task="adding",
        seq_len=seq_len,
        hidden=hidden,
        cell=cell,
        init=init,
        init_recurrent=init_recurrent,
        scale=scale,
        recurrent_scale=recurrent_scale,
        max_epochs=max_epochs,
        target_loss=target,
        patience=patience,
        seed=seed,
        data_seed=seed,
    )
    if val_losses is None:
        rest = baseline if stalled else 0.1
        if converged is not None:
            val_losses = [rest] * (converged - 1) + [target / 2] * patience
        elif diverged is not None:
            val_losses = [rest] * (diverged - 1) + [math.inf]
        else:
            val_losses = [rest] * max_epochs
    history = [
        EpochRecord(
            epoch=e, train_loss=v, val_loss=v, grad_norm=1.0, hidden_var=0.2, hidden_sat=0.0
        )
        for e, v in enumerate(val_losses, start=1)
    ]
    gradient = 0.0 if frozen else 1.0
    diagnostics = InitDiagnostics(
        spectral_radius=radius,
        hidden_var=hidden_var if hidden_var is not None else [0.2] * seq_len,
        hidden_sat=hidden_sat if hidden_sat is not None else [0.0] * seq_len,
        grad_norm=grad_norm if grad_norm is not None else [0.1] * seq_len,
        initial_loss=0.2,
        input_grad_norm=gradient,
        recurrent_grad_norm=gradient,
    )
    return TrialResult(
        spec=spec,
        converged_epoch=converged,
        diverged_epoch=diverged,
        target_loss=target,
        baseline_loss=baseline,
        history=history,
        diagnostics=diagnostics,
    )


ENDINGS: dict[str, dict[str, Any]] = {
    "converged": {"converged": 3},
    "censored": {},
    "stalled": {"stalled": True},
    "frozen": {"frozen": True},
    "diverged": {"diverged": 3},
}
"""``result`` keyword arguments that give each outcome."""


def ending(outcome: str, init: str = "xavier", **kwargs: Any) -> TrialResult:
    """A trial whose ``outcome`` is the given one."""
    return result(init, **ENDINGS[outcome], **kwargs)


def arm(init: str, outcomes: list[str], first_seed: int = 0, **kwargs: Any) -> list[TrialResult]:
    """One trial per outcome, with seeds ``first_seed``, ``first_seed + 1``, ..."""
    return [ending(o, init, seed=first_seed + i, **kwargs) for i, o in enumerate(outcomes)]


def study(results: list[TrialResult], spec_text: str = "") -> StudyTables:
    rows = [(i, f"key{i}", r) for i, r in enumerate(results)]
    return tables_from_results("synthetic", rows, claim="synthetic claim", spec_text=spec_text)


# --------------------------------------------------------------------------- registry


def test_claims_registry_has_c1_to_c6_in_order_each_with_text_rule_and_judge() -> None:
    assert list(vd.CLAIMS) == ["C1", "C2", "C3", "C4", "C5", "C6"]
    for claim_id, claim in vd.CLAIMS.items():
        assert claim.id == claim_id
        assert claim.text.strip() and claim.rule.strip()
        assert callable(claim.judge)
    assert vd.CLAIMS["C4"].rule == vd.SPEEDUP_RULE


def test_rule_texts_quote_the_thresholds_the_code_uses() -> None:
    assert f"fewer than {vd.MIN_N} trials" in vd.SPEEDUP_RULE
    assert f"first {vd.C1_EARLY_STEPS} steps" in vd.CLAIMS["C1"].rule
    assert f"exceeds {vd.C2_LOST_SATURATION:g}" in vd.CLAIMS["C2"].rule
    assert f"tolerance {vd.C2_TREND_TOLERANCE:g}" in vd.CLAIMS["C2"].rule
    assert f"below {vd.C2_VANISHED_VARIANCE:g} (vanished)" in vd.CLAIMS["C2"].rule
    assert f"hidden <= {vd.C5_TINY_HIDDEN}" in vd.CLAIMS["C5"].rule
    assert f"hidden >= {vd.C5_LARGE_HIDDEN}" in vd.CLAIMS["C5"].rule
    assert f"1 +- {vd.C6_NORM_TOLERANCE:g}" in vd.CLAIMS["C6"].rule


# --------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"converged": 5}, "converged"),
        ({"converged": 5, "diverged": 8}, "converged"),  # converged, then diverged
        ({"converged": 5, "diverged": 5}, "converged"),  # the same epoch: before any
        ({"converged": 6, "diverged": 5}, "diverged"),  # converged after diverging
        ({"diverged": 3}, "diverged"),
        ({"frozen": True, "diverged": 3}, "diverged"),  # an explosion is never hidden
        ({"frozen": True, "diverged": 1, "val_losses": [5.0]}, "diverged"),  # rose from 0.2
        # diverged by "stuck above the baseline" at a loss below the one at init (0.2): no
        # explosion, so the frozen diagnosis is the outcome, as before
        ({"frozen": True, "diverged": 1, "val_losses": [0.19]}, "frozen"),
        ({"diverged": 1, "val_losses": [0.19]}, "diverged"),  # not frozen: diverged as ever
        ({"frozen": True, "converged": 4}, "converged"),  # converging beats frozen
        ({"frozen": True}, "frozen"),
        ({"stalled": True}, "stalled"),
        ({}, "censored"),
        ({"val_losses": [math.nan, math.inf]}, "stalled"),  # no finite loss at all
    ],
)
def test_trial_outcome_precedence(kwargs: dict[str, Any], expected: str) -> None:
    r = result("xavier", **kwargs)
    assert r.outcome == expected
    assert r.converged == (expected == "converged")
    assert study([r]).trials["outcome"].tolist() == [expected]


def test_an_exploding_frozen_trial_is_diverged_with_its_diagnosis_kept() -> None:
    exploding = result("uniform01", frozen=True, diverged=1)
    assert exploding.outcome == "diverged" and exploding.frozen_at_init
    assert exploding.to_dict()["frozen_at_init"] is True
    back = TrialResult.from_json(exploding.to_json())
    assert back.outcome == "diverged" and back.frozen_at_init
    still = result("uniform01", frozen=True, seed=1)  # frozen, and the loss did not explode
    assert still.outcome == "frozen" and still.frozen_at_init
    trials = study([exploding, still]).trials
    assert trials["outcome"].tolist() == ["diverged", "frozen"]
    assert trials["frozen_at_init"].tolist() == [True, True]
    assert trials["diverged_epoch"].tolist() == [1, pd.NA]


def test_stalled_means_best_loss_at_or_above_the_stall_fraction_of_the_baseline() -> None:
    edge = STALL_FRACTION * BASELINE
    assert result(val_losses=[0.3, edge, 0.3]).outcome == "stalled"
    assert result(val_losses=[0.3, down(edge), 0.3]).outcome == "censored"


@pytest.mark.parametrize(
    ("input_grad", "recurrent_grad", "frozen"),
    [
        (0.0, 0.0, True),
        (0.0, 1e-30, False),  # a tiny gradient still reaches Whh: it can train
        (1e-30, 0.0, False),
        (math.nan, math.nan, False),  # not measured (a result from before it was)
    ],
)
def test_frozen_needs_exactly_zero_gradient_into_both_matrices(
    input_grad: float, recurrent_grad: float, frozen: bool
) -> None:
    r = result()
    r.diagnostics.input_grad_norm = input_grad
    r.diagnostics.recurrent_grad_norm = recurrent_grad
    assert r.diagnostics.frozen is frozen
    assert r.outcome == ("frozen" if frozen else "censored")
    assert study([r]).trials["frozen_at_init"].tolist() == [frozen]


def test_outcome_column_equals_trial_outcome_for_every_outcome() -> None:
    results = [ending(o, seed=i) for i, o in enumerate(OUTCOMES)]
    results += [result(converged=4, diverged=6, seed=9), result(frozen=True, diverged=2, seed=10)]
    trials = study(results).trials
    assert trials["outcome"].tolist() == [r.outcome for r in results]
    assert set(trials["outcome"]) == set(OUTCOMES)
    assert (trials["converged"] == (trials["outcome"] == "converged")).all()
    assert (trials["censored"] == ~trials["converged"]).all()
    assert trials["frozen_at_init"].tolist() == [r.diagnostics.frozen for r in results]


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


def race(
    xavier: list[int | None],
    other: list[int | None],
    *,
    scheme: str = "uniform01",
    faster: str = "xavier",
    seq_len: int = T,
    hidden: int = 16,
    budget: int = 40,
    frozen: int = 0,
    **kwargs: Any,
) -> list[TrialResult]:
    """``faster`` trial i converges at ``xavier[i]``, ``scheme`` trial i at ``other[i]``
    (None: never, censored at ``budget``); the first ``frozen`` trials of ``scheme`` are
    frozen at init."""
    out = [
        result(faster, seq_len=seq_len, hidden=hidden, seed=s, converged=c, **kwargs)
        for s, c in enumerate(xavier)
    ]
    out += [
        result(
            scheme,
            seq_len=seq_len,
            hidden=hidden,
            seed=s,
            converged=c,
            max_epochs=budget,
            frozen=s < frozen,
            **kwargs,
        )
        for s, c in enumerate(other)
    ]
    return out


def c4(results: list[TrialResult]) -> Verdict:
    return vd.judge_c4(study(results), OPTS)


def only_cell(v: Verdict) -> dict[str, Any]:
    cells = v.numbers["cells"]
    assert len(cells) == 1, cells
    return cells[0]


FIVE = vd.MIN_N


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


def c2_runs(
    sizes: dict[int, tuple[float, float, int]],
    *,
    n: int = 4,
    cell: str = "rnn_tanh",
    first_seed: int = 0,
) -> list[TrialResult]:
    """uniform01 at each hidden size: (last-step saturation, last-step variance, trials
    frozen out of ``n``)."""
    out = []
    for hidden, (sat, var, n_frozen) in sizes.items():
        for i in range(n):
            out.append(
                result(
                    "uniform01",
                    cell=cell,
                    hidden=hidden,
                    seed=first_seed + i,
                    frozen=i < n_frozen,
                    hidden_sat=[0.5] * (T - 1) + [sat],
                    hidden_var=[0.2] * (T - 1) + [var],
                )
            )
    return out


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


def chi_norms(chi: float, seq_len: int = T) -> list[float]:
    """|dL/dh_t| with (first / last)^(2 / (T - 1)) = chi: a per-step factor sqrt(chi)."""
    return [chi ** ((seq_len - 1 - t) / 2) for t in range(seq_len)]


def gain_sweep(
    chis: dict[float, float | list[float]], *, scheme: str = "xavier", **kw: Any
) -> list[TrialResult]:
    """Trials at each recurrent gain with the given measured chi (one trial per chi in a
    list, three trials otherwise); gain 1 is the plain scheme."""
    out = []
    for gain, chi in chis.items():
        values = chi if isinstance(chi, list) else [chi] * 3
        for seed, c in enumerate(values):
            out.append(
                result(
                    scheme,
                    recurrent_scale=gain,
                    seed=seed,
                    radius=gain,
                    grad_norm=chi_norms(c, kw.get("seq_len", T)),
                    **kw,
                )
            )
    return out


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


# --------------------------------------------------------------------------- C5


def c5_runs(
    cells: dict[tuple[int, int], tuple[list[str], list[str]]],
) -> list[TrialResult]:
    """Per (hidden, seq_len): the outcomes of the uniform01 and of the Xavier trials."""
    out = []
    for (hidden, seq_len), (uniform, xavier) in cells.items():
        out += arm("uniform01", uniform, hidden=hidden, seq_len=seq_len)
        out += arm("xavier", xavier, hidden=hidden, seq_len=seq_len)
    return out


def c5(cells: dict[tuple[int, int], tuple[list[str], list[str]]]) -> Verdict:
    return vd.judge_c5(study(c5_runs(cells)), OPTS)


OK = ["converged"] * FIVE
TINY, LARGE = vd.C5_TINY_HIDDEN, vd.C5_LARGE_HIDDEN


def test_c5_supported_when_tiny_works_and_large_diverges() -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (["diverged"] * FIVE, OK)})
    assert v.verdict == SUPPORTED, v.evidence
    assert "works tiny and fails at scale, by exploding" in v.evidence
    cells = {c["hidden"]: c for c in v.numbers["cells"]}
    assert cells[128]["uniform_diverged"] == 1.0 and cells[128]["failing_diverged"] == 1.0
    assert cells[TINY]["uniform_converged"] == 1.0


def test_c5_frozen_trials_whose_loss_exploded_count_as_exploding() -> None:
    # uniform01 frozen at init at hidden 128 whose loss explodes (no clipping): diverged.
    runs = c5_runs({(TINY, 5): (OK, OK), (128, 30): ([], OK)})
    runs += [
        result("uniform01", hidden=128, seq_len=30, seed=s, frozen=True, diverged=1)
        for s in range(FIVE)
    ]
    v = vd.judge_c5(study(runs), OPTS)
    assert v.verdict == SUPPORTED, v.evidence
    cells = {c["hidden"]: c for c in v.numbers["cells"]}
    assert cells[128]["uniform_diverged"] == 1.0 and cells[128]["uniform_frozen"] == 0.0


@pytest.mark.parametrize("failing", ["frozen", "stalled", "censored"])
def test_c5_partly_when_large_fails_without_exploding(failing: str) -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): ([failing] * FIVE, OK)})
    assert v.verdict == PARTLY, v.evidence  # the outcome holds, the mechanism does not
    assert "by not learning" in v.evidence


def test_c5_refuted_when_it_fails_even_tiny() -> None:
    v = c5({(TINY, 5): (["diverged"] * FIVE, OK), (128, 30): (["diverged"] * FIVE, OK)})
    assert v.verdict == REFUTED, v.evidence
    assert "does not work even tiny" in v.evidence


@pytest.mark.parametrize("failing", ["frozen", "stalled"])
def test_c5_stalled_and_frozen_tiny_trials_do_not_work(failing: str) -> None:
    v = c5({(TINY, 5): ([failing] * FIVE, OK), (128, 30): (["diverged"] * FIVE, OK)})
    assert v.verdict == REFUTED, v.evidence


def test_c5_refuted_when_xavier_also_fails_at_the_large_cell() -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (["diverged"] * FIVE, ["censored"] * FIVE)})
    assert v.verdict == REFUTED, v.evidence  # the cell is hard, not the init
    assert "does not fail at scale" in v.evidence


def test_c5_refuted_when_uniform01_works_at_the_large_cell() -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (OK, OK)})
    assert v.verdict == REFUTED, v.evidence


HALF = ["converged"] * 3 + ["diverged"] * 3  # exactly C5_WORKS_RATE of 6
BELOW_HALF = ["converged"] * 2 + ["diverged"] * 3  # 40% of 5


@pytest.mark.parametrize(
    ("tiny", "large_uniform", "large_xavier", "expected"),
    [
        (HALF, ["diverged"] * FIVE, OK, SUPPORTED),  # half converged tiny: works
        (BELOW_HALF, ["diverged"] * FIVE, OK, REFUTED),
        (OK, HALF, OK, REFUTED),  # half converged at scale: does not fail
        (OK, BELOW_HALF, OK, SUPPORTED),
        (OK, ["diverged"] * FIVE, HALF, SUPPORTED),  # Xavier at the threshold: fine
        (OK, ["diverged"] * FIVE, BELOW_HALF, REFUTED),
    ],
)
def test_c5_works_rate_threshold(
    tiny: list[str], large_uniform: list[str], large_xavier: list[str], expected: str
) -> None:
    v = c5({(TINY, 5): (tiny, OK), (128, 30): (large_uniform, large_xavier)})
    assert v.verdict == expected, v.evidence


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        (["diverged"] * 3 + ["frozen"] * 3, PARTLY),  # exactly half diverged: not most
        (["diverged"] * 4 + ["frozen"] * 2, SUPPORTED),
        (["diverged"] * 2 + ["frozen"] * 4, PARTLY),
    ],
)
def test_c5_mechanism_needs_most_failing_trials_diverged(
    failing: list[str], expected: str
) -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (failing, OK)})
    assert v.verdict == expected, v.evidence


def test_c5_known_size_limits_8_and_32() -> None:
    diverging = ["diverged"] * FIVE
    assert c5({(8, 5): (OK, OK), (32, 5): (diverging, OK)}).verdict == SUPPORTED
    assert c5({(9, 5): (OK, OK), (32, 5): (diverging, OK)}).verdict == NOT_MEASURED
    assert c5({(8, 5): (OK, OK), (31, 5): (diverging, OK)}).verdict == NOT_MEASURED


@pytest.mark.parametrize(
    ("tiny", "large", "measured"),
    [
        (TINY, LARGE, True),
        (TINY + 1, LARGE, False),
        (TINY, LARGE - 1, False),
    ],
)
def test_c5_tiny_and_large_size_limits(tiny: int, large: int, measured: bool) -> None:
    v = c5({(tiny, 5): (OK, OK), (large, 5): (["diverged"] * FIVE, OK)})
    assert (v.verdict != NOT_MEASURED) == measured, v.evidence
    if measured:
        assert v.verdict == SUPPORTED
    else:
        assert f"<= {vd.C5_TINY_HIDDEN}" in v.evidence


@pytest.mark.parametrize(
    ("tiny", "large_xavier", "measured"),
    [
        (["converged"] * (FIVE - 1), OK, False),
        (OK, ["converged"] * (FIVE - 1), False),
        (OK, OK, True),
    ],
)
def test_c5_needs_min_n_trials_per_scheme_in_each_cell(
    tiny: list[str], large_xavier: list[str], measured: bool
) -> None:
    v = c5({(TINY, 5): (tiny, OK), (128, 30): (["diverged"] * FIVE, large_xavier)})
    assert (v.verdict != NOT_MEASURED) == measured, v.evidence


def test_c5_picks_the_smallest_tiny_and_the_largest_large_cell() -> None:
    v = c5(
        {
            (4, 5): (OK, OK),  # the tiny cell: works
            (TINY, 30): (["diverged"] * FIVE, OK),
            (LARGE, 5): (OK, OK),
            (128, 30): (["diverged"] * FIVE, OK),  # the large cell: fails
        }
    )
    assert v.verdict == SUPPORTED, v.evidence
    assert "tiny cell hidden 4, seq_len 5" in v.evidence
    assert "large cell hidden 128, seq_len 30" in v.evidence


def test_c5_not_measured_with_one_cell() -> None:
    v = c5({(TINY, 5): (OK, OK)})
    assert v.verdict == NOT_MEASURED
    assert "needs uniform01 and Xavier" in v.evidence


# --------------------------------------------------------------------------- C6


def ortho_runs(carried: list[float], cell: str = "gru", **kw: Any) -> list[TrialResult]:
    """Orthogonal trials whose gradient norm at step 0 is ``carried`` times its norm at the
    last step (|dL/dh_0| / |dL/dh_T-1|), changing by the same factor at every step."""
    return [
        result("orthogonal", cell=cell, seed=s, grad_norm=chi_norms(r ** (2 / (T - 1))), **kw)
        for s, r in enumerate(carried)
    ]


def c6(runs: list[TrialResult]) -> Verdict:
    return vd.judge_c6(study(runs), OPTS)


def states(v: Verdict) -> dict[str, str]:
    return {c["check"][:3]: c["state"] for c in v.numbers["checks"]}


TOL6 = vd.C6_NORM_TOLERANCE


@pytest.mark.parametrize(
    ("carried", "state"),
    [
        (1.0, "holds"),
        (1 + TOL6 - 0.001, "holds"),
        (1 - TOL6 + 0.001, "holds"),
        (1 + TOL6 + 0.001, "fails"),
        (1 - TOL6 - 0.001, "fails"),
        (0.5, "fails"),
        (2.0, "fails"),
    ],
)
def test_c6a_gradient_norm_carried_over_the_sequence_within_tolerance(
    carried: float, state: str
) -> None:
    v = c6(ortho_runs([carried] * FIVE))
    assert states(v) == {"(a)": state}
    assert v.numbers["checks"][0]["value"] == pytest.approx(carried)
    per_step = carried ** (1 / (T - 1))
    assert f"{per_step:.3g} per step" in v.evidence  # the per-step factor beside it
    # only (a) measured: holding is partly supported, failing refutes
    assert v.verdict == (PARTLY if state == "holds" else REFUTED), v.evidence


def test_c6a_judges_the_whole_sequence_not_the_per_step_factor() -> None:
    # 1.5x over 9 steps is only 1.046x per step: a per-step reading would let it pass
    carried = 1.5
    assert abs(carried ** (1 / (T - 1)) - 1) < TOL6 < abs(carried - 1)
    assert states(c6(ortho_runs([carried] * FIVE))) == {"(a)": "fails"}


@pytest.mark.parametrize(("carried", "state"), [(1.095, "holds"), (1.105, "fails")])
def test_c6a_known_answers_near_the_current_tolerance(carried: float, state: str) -> None:
    assert states(c6(ortho_runs([carried] * FIVE))) == {"(a)": state}


def test_c6a_takes_the_median_over_trials() -> None:
    v = c6(ortho_runs([1.0, 1.0, 1.0, 3.0, 3.0]))  # mean 1.8
    assert states(v) == {"(a)": "holds"}
    assert v.numbers["checks"][0]["value"] == pytest.approx(1.0)


def test_c6a_ignores_trials_whose_last_gradient_is_zero() -> None:
    runs = ortho_runs([1.0] * FIVE)
    runs.append(result("orthogonal", cell="gru", seed=99, grad_norm=[1.0] * (T - 1) + [0.0]))
    v = c6(runs)
    assert states(v) == {"(a)": "holds"}
    assert f"n={FIVE})" in v.evidence


def test_c6a_needs_min_n_plain_orthogonal_trials() -> None:
    assert c6(ortho_runs([1.0] * (FIVE - 1))).verdict == NOT_MEASURED
    assert c6(ortho_runs([1.0] * FIVE, init_recurrent="xavier")).verdict == NOT_MEASURED
    assert c6(ortho_runs([1.0] * FIVE, recurrent_scale=1.1)).verdict == NOT_MEASURED
    assert c6(ortho_runs([1.0] * FIVE)).verdict != NOT_MEASURED


# C6 (b) and (c), paired comparisons within each cell: tests/test_rules_c6.py


def test_c6_not_measured_without_any_sub_check() -> None:
    v = c6([result("xavier", cell="lstm", seed=s, converged=3) for s in range(FIVE)])
    assert v.verdict == NOT_MEASURED
    assert "(a)" in v.evidence and "(b)" in v.evidence and "(c)" in v.evidence


# --------------------------------------------------------------------------- judge()


def headline_study(**kw: Any) -> StudyTables:
    return study(race([3] * FIVE, [11, 12, 13, 12, 12]), **kw)


def test_judge_without_claims_returns_only_what_the_data_can_measure() -> None:
    tables = headline_study()
    measurable = [
        cid for cid, c in vd.CLAIMS.items() if c.judge(tables, OPTS).verdict != NOT_MEASURED
    ]
    verdicts = judge(tables, n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == measurable == ["C1", "C4", "C6"]
    assert NOT_MEASURED not in {v.verdict for v in verdicts}


def test_judge_returns_all_six_when_the_data_measures_none() -> None:
    verdicts = judge(study([]), n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == list(vd.CLAIMS)
    for v in verdicts:
        assert v.verdict == NOT_MEASURED
        assert v.claim == vd.CLAIMS[v.claim_id].text
        assert v.rule == vd.CLAIMS[v.claim_id].rule
        assert "needs" in v.evidence


def test_judge_with_declared_claims_returns_exactly_those_in_order() -> None:
    tables = headline_study()
    verdicts = judge(tables, ["C5", "C4", "C1"], n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == ["C5", "C4", "C1"]
    assert verdicts[0].verdict == NOT_MEASURED  # declared, so reported even so
    assert verdicts[1].verdict == SUPPORTED


def test_judge_reads_the_claims_declared_in_the_spec() -> None:
    spec = "claims:\n  - C4\n  - {faster: xavier, than: uniform01, by: [2, .inf]}\n"
    tables = headline_study(spec_text=spec)
    verdicts = judge(tables, n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == ["C4", "U2"]
    assert [v.verdict for v in verdicts] == [SUPPORTED, SUPPORTED]
    assert verdicts[1].claim == "xavier converges at least 2x faster than uniform01"


def test_judge_parses_raw_claim_entries() -> None:
    raw: list[Any] = [
        "C4",
        {"id": "mine", "faster": "xavier", "than": "uniform01", "by": [20, 40]},
    ]
    verdicts = judge(headline_study(), raw, n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == ["C4", "mine"]
    assert verdicts[1].verdict == REFUTED  # 4x is below 20x
    assert "Refuted as stated" not in verdicts[1].evidence  # that prefix is C4's


def test_judge_refuses_an_unknown_claim_id() -> None:
    with pytest.raises(ValueError, match="unknown claim"):
        judge(headline_study(), ["C7"], n_boot=N_BOOT)


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


# --------------------------------------------------------------------------- serialisation


def test_verdict_to_dict_has_exactly_the_record_keys() -> None:
    (v,) = judge(headline_study(), ["C4"], n_boot=N_BOOT)
    d = v.to_dict()
    assert set(d) == {"id", "text", "verdict", "rule", "evidence", "numbers"}
    assert (d["id"], d["text"], d["verdict"]) == ("C4", vd.CLAIMS["C4"].text, SUPPORTED)
    assert d["rule"] == vd.SPEEDUP_RULE and d["evidence"] == v.evidence


def test_verdict_numbers_are_made_json_safe() -> None:
    v = Verdict(
        "X",
        "text",
        SUPPORTED,
        "rule",
        "evidence",
        numbers={
            "nan": math.nan,
            "inf": math.inf,
            "minus_inf": -math.inf,
            "np_float": np.float64(1.5),
            "np_int": np.int64(2),
            "na": pd.NA,
            "none": None,
            "nested": {"list": [np.float64(math.nan), (1, np.bool_(True))]},
        },
    )
    numbers = json.loads(json.dumps(v.to_dict(), allow_nan=False))["numbers"]
    assert numbers == {
        "nan": None,
        "inf": "inf",
        "minus_inf": "-inf",
        "np_float": 1.5,
        "np_int": 2,
        "na": None,
        "none": None,
        "nested": {"list": [None, [1, True]]},
    }


def every_claim_study() -> StudyTables:
    runs = race([3] * FIVE, [None] * FIVE, frozen=FIVE)  # C4: unbounded (inf)
    runs += gain_sweep({0.5: 0.2, 1.25: 0.8}, hidden=32)  # C3: no measured crossing (nan)
    runs += c2_runs({8: (0.2, 0.2, 0), 64: (1.0, 0.2, 0)}, first_seed=100)
    runs += c5_runs({(TINY, 5): (OK, OK), (128, 30): (["frozen"] * FIVE, OK)})
    runs += ortho_runs([1.0] * FIVE)
    return study(runs)


def test_every_verdict_serialises_with_allow_nan_false_and_write_verdicts_round_trips(
    tmp_path: Path,
) -> None:
    verdicts = judge(every_claim_study(), n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == list(vd.CLAIMS)  # the study measures all six
    for v in verdicts:
        assert v.verdict in VERDICTS
        json.dumps(v.to_dict(), allow_nan=False)
    path = vd.write_verdicts(verdicts, tmp_path / "out" / "verdicts.json")
    assert path == tmp_path / "out" / "verdicts.json"
    assert json.loads(path.read_text(encoding="utf-8")) == [v.to_dict() for v in verdicts]
    assert [p.name for p in path.parent.iterdir()] == ["verdicts.json"]  # no temp file left


def test_verdict_tags_name_each_claim() -> None:
    verdicts = judge(headline_study(), ["C4", "C5"], n_boot=N_BOOT)
    assert vd.verdict_tags(verdicts) == {
        "initstudy.verdict.C4": SUPPORTED,
        "initstudy.verdict.C5": NOT_MEASURED,
    }


# --------------------------------------------------------------------------- with_patience


def patience_study(*results: TrialResult) -> StudyTables:
    return study(list(results))


def test_with_patience_re_reads_convergence_at_a_shorter_patience() -> None:
    r = result(val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2)
    assert r.outcome == "converged"
    tables = patience_study(r)
    again = vd.with_patience(tables, 2)
    assert again.trials["converged_epoch"].tolist() == [4]
    shorter = vd.with_patience(tables, 1)
    assert shorter.trials["converged_epoch"].tolist() == [2]
    assert shorter.trials["outcome"].tolist() == ["converged"]
    assert tables.trials["converged_epoch"].tolist() == [4]  # the input is not changed


def test_with_patience_refuses_a_patience_longer_than_the_study_ran() -> None:
    r = result(val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2)
    with pytest.raises(ValueError, match="patience 3 cannot be re-read"):
        vd.with_patience(patience_study(r), 3)


@pytest.mark.parametrize(
    ("val_losses", "diverged", "patience", "epoch", "outcome"),
    [
        ([0.2, 0.01, 0.2], None, 1, 2, "converged"),  # at the target counts
        ([0.2, up(0.01), 0.2], None, 1, None, "censored"),
        ([0.2, 0.2, 0.2, 0.004, 0.004], None, 2, 4, "converged"),  # the last epochs
        ([0.2, 0.004, 0.2, 0.004, 0.2], None, 2, None, "censored"),
        ([0.2, 0.004, math.inf], 3, 1, 2, "converged"),  # before diverging
        ([0.2, 0.004, math.inf], 2, 1, 2, "converged"),  # the same epoch
        ([0.2, 0.2, 0.004, math.inf], 2, 1, None, "diverged"),  # after diverging
    ],
)
def test_with_patience_rule(
    val_losses: list[float],
    diverged: int | None,
    patience: int,
    epoch: int | None,
    outcome: str,
) -> None:
    r = result(val_losses=val_losses, target=0.01, diverged=diverged, patience=2)
    out = vd.with_patience(patience_study(r), patience).trials
    got = out["converged_epoch"].iloc[0]
    assert (None if pd.isna(got) else int(got)) == epoch
    assert out["outcome"].tolist() == [outcome]
    assert out["converged"].tolist() == [outcome == "converged"]
    assert out["censored"].tolist() == [outcome != "converged"]


def test_with_patience_keeps_frozen_trials_frozen() -> None:
    r = result(val_losses=[0.2, 0.004, 0.2], target=0.01, frozen=True)
    out = vd.with_patience(patience_study(r), 1).trials
    assert out["outcome"].tolist() == ["frozen"]
    assert out["converged_epoch"].isna().all()


def test_with_patience_agrees_with_the_trial_outcome_at_the_study_patience() -> None:
    results = [ending(o, seed=i) for i, o in enumerate(OUTCOMES)]
    tables = study(results)
    again = vd.with_patience(tables, 2).trials
    assert again["outcome"].tolist() == tables.trials["outcome"].tolist()
    assert again["converged_epoch"].tolist() == tables.trials["converged_epoch"].tolist()


def test_with_patience_moves_the_objective_value_with_the_converged_epoch() -> None:
    early = result(
        val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2
    )
    late = result(val_losses=[0.2, 0.004, *[0.2] * 38], target=0.01, seed=1)  # censored
    tables = patience_study(early, late)
    assert tables.trials["value"].tolist() == [4.0, 41.0]  # max_epochs + 1 when censored
    out = vd.with_patience(tables, 1).trials
    assert out["converged_epoch"].tolist() == [2, 2]
    assert out["value"].tolist() == [2.0, 2.0]


def test_with_patience_keeps_a_value_that_is_not_epochs_to_converge() -> None:
    r = result(val_losses=[0.2, 0.004, 0.02, 0.004, 0.004], target=0.01, converged=4, patience=2)
    tables = patience_study(r)
    tables.trials["value"] = [0.123]  # a study scored by another objective
    assert vd.with_patience(tables, 1).trials["value"].tolist() == [0.123]
