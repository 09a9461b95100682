"""The AFT speedup (pipeline.analysis.aft, aft_study) on censored data whose answer is known.

Synthetic durations are drawn from an accelerated-failure-time model with a known time ratio
(Weibull: log T = mu + sigma * W, W standard minimum-extreme-value), censored at a budget;
the fitted speedup must cover it (and, over repeated draws, at close to the nominal 95%);
on a grid study the AFT ratio must agree with the project's Kaplan-Meier ratio. Degenerate
inputs give a reason, never an exception. The study-level tests build real TrialResults.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from models.spec import EpochRecord, InitDiagnostics, TrialResult, TrialSpec
from pipeline.analysis.aft import AFT_RULE, aft_speedup
from pipeline.analysis.aft_study import aft_section, comparisons, study_aft
from pipeline.analysis.speedup_rule import (
    AT_LEAST,
    BELOW,
    SMALL_N,
    SPEEDUP_RULE,
    UNBOUNDED,
    WITHIN,
    comparison_table,
)
from pipeline.analysis.tables import StudyTables, tables_from_results
from pipeline.analysis.verdicts import INCONCLUSIVE, NOT_MEASURED, REFUTED, SUPPORTED, judge
from pipeline.claimspec import Comparison

FAST, SLOW = "xavier", "uniform01"


def draw(
    rng: np.random.Generator,
    n: int = 40,
    ratio: float = 3.0,
    budget: float = 30.0,
    per_hidden: dict[int, float] | None = None,
) -> pd.DataFrame:
    """``n`` trials, half per scheme, with a sampled log-uniform lr; the slower scheme takes
    ``ratio`` times as long (or ``per_hidden[hidden]`` times, hidden drawn from its keys)."""
    init = np.where(np.arange(n) % 2 == 0, FAST, SLOW)
    lr = np.exp(rng.uniform(math.log(1e-3), math.log(3e-2), n))
    hidden = rng.choice(list(per_hidden), n) if per_hidden else np.full(n, 32)
    ratios = np.array([per_hidden[h] for h in hidden]) if per_hidden else np.full(n, ratio)
    log_t = (
        2.0
        + np.where(init == SLOW, np.log(ratios), 0.0)
        - 0.3 * np.log(lr / 1e-2)
        - 0.4 * rng.gumbel(size=n)  # minus a max-Gumbel: a min-Gumbel, i.e. Weibull times
    )
    t = np.exp(log_t)
    event = t <= budget
    return pd.DataFrame(
        {
            "init": init,
            "lr": lr,
            "hidden": hidden,
            "converged_epoch": pd.array(np.where(event, t, np.nan), dtype="Float64"),
            "max_epochs": budget,
            "outcome": np.where(event, "converged", "censored"),
        }
    )


def fit(frame: pd.DataFrame, **kwargs: Any) -> Any:
    options: dict[str, Any] = {"covariates": ["lr", "hidden"], "low": 2.0, "high": 10.0}
    return aft_speedup(frame, FAST, SLOW, **(options | kwargs))


# --------------------------------------------------------------------------- recovery


def test_a_known_time_ratio_is_recovered_within_its_interval() -> None:
    result = fit(draw(np.random.default_rng(7), n=80, ratio=3.0))
    pooled = result.pooled
    assert pooled is not None and pooled.kind == "finite"
    assert pooled.lo < 3.0 < pooled.hi
    assert abs(math.log(pooled.estimate / 3.0)) < math.log(1.4)
    assert result.check is not None and set(result.check.aic) == {"weibull", "lognormal"}
    assert result.covariates == ["log lr"]  # hidden is constant: nothing to adjust for
    assert pooled.classification == WITHIN and result.verdict == SUPPORTED
    assert "AFT speedup of xavier over uniform01" in result.evidence


def test_a_ratio_below_the_claim_is_below() -> None:
    result = fit(draw(np.random.default_rng(3), n=80, ratio=1.0))
    assert result.pooled is not None and result.pooled.hi < 2.0
    assert result.pooled.classification == BELOW and result.verdict == REFUTED


@pytest.mark.slow
def test_the_interval_covers_the_true_ratio_at_close_to_nominal_rate() -> None:
    """150 draws of 40 censored trials (about 20% censored): 95% Wald intervals cover the
    true ratio in 89-99% of them (a binomial 95% band around 0.95 is about +-3.5%)."""
    rng = np.random.default_rng(0)
    draws = 150
    hits = 0
    for _ in range(draws):
        pooled = fit(draw(rng), covariates=["lr"], families=("weibull",)).pooled
        assert pooled is not None
        hits += pooled.lo <= 3.0 <= pooled.hi
    assert 0.89 <= hits / draws <= 0.99, hits / draws


def test_a_regime_dependent_ratio_is_detected_and_read_per_regime() -> None:
    truth = {16: 1.5, 64: 6.0}
    frame = draw(np.random.default_rng(11), n=160, budget=400.0, per_hidden=truth)
    result = fit(frame, low=1.2, high=math.inf)
    check = result.check
    assert check is not None and check.interaction == ("hidden",)
    assert check.p is not None and check.p < 0.05 and check.regime_dependent
    read = {r.at["hidden"]: r for r in result.readings}
    assert set(read) == {16.0, 64.0}
    for hidden, ratio in truth.items():
        assert read[hidden].lo < ratio < read[hidden].hi
    assert result.judged == result.readings  # per regime, not the pooled average
    assert "regime-dependent" in check.text


def test_no_interaction_keeps_the_pooled_reading() -> None:
    frame = draw(np.random.default_rng(5), n=80, per_hidden={16: 3.0, 64: 3.0})
    result = fit(frame)
    assert result.check is not None and result.check.p is not None
    assert result.check.p > 0.05 and not result.check.regime_dependent
    assert result.judged == [result.pooled]
    assert len(result.readings) == 2  # still readable per hidden size


# --------------------------------------------------------------------------- degenerate


def test_an_arm_without_a_converged_trial_is_not_estimable() -> None:
    frame = draw(np.random.default_rng(1))
    slow = frame["init"] == SLOW
    frame.loc[slow, "converged_epoch"] = pd.NA
    frame.loc[slow, "outcome"] = "censored"
    result = fit(frame)
    assert result.pooled is None and "uniform01 has no converged trial" in result.reason
    assert result.verdict == INCONCLUSIVE
    assert "not estimable" in result.evidence


def test_a_frozen_slower_arm_is_unbounded_cannot_train() -> None:
    frame = draw(np.random.default_rng(1))
    slow = frame["init"] == SLOW
    frame.loc[slow, "converged_epoch"] = pd.NA
    frame.loc[slow, "outcome"] = "frozen"
    result = fit(frame)
    assert result.pooled is not None and result.pooled.kind == "unbounded"
    assert result.pooled.classification == UNBOUNDED  # contradicts a finite range
    assert fit(frame, high=math.inf).pooled.classification == WITHIN  # "at least 2x"
    assert "cannot train" in result.notes[0]


@pytest.mark.slow
def test_a_regime_where_the_slower_arm_is_frozen_reads_unbounded_there() -> None:
    frame = draw(np.random.default_rng(8), n=80, per_hidden={16: 3.0, 64: 3.0})
    frozen = (frame["init"] == SLOW) & (frame["hidden"] == 64)
    frame.loc[frozen, "converged_epoch"] = pd.NA
    frame.loc[frozen, "outcome"] = "frozen"
    result = fit(frame, low=1.2, high=math.inf)
    assert [r.at for r in result.frozen] == [{"hidden": 64.0}]
    frozen = result.frozen[0]
    assert frozen.kind == "unbounded" and frozen.classification == WITHIN  # "at least 1.2x"
    assert frozen.text == "unbounded (cannot train)" and frozen.label == "hidden 64"
    pooled = result.pooled  # fitted on the rest: hidden 16 alone
    assert pooled is not None and pooled.kind == "finite" and pooled.lo > 1.2
    assert result.covariates == ["log lr"]  # hidden no longer varies in the fit
    assert result.judged == [pooled, frozen] and result.verdict == SUPPORTED
    assert fit(frame).judged[-1].classification == UNBOUNDED  # contradicts 2-10x
    few = frame.drop(frame.index[(frame["hidden"] == 64)][4:])  # 4 trials left at hidden 64
    assert fit(few).frozen[0].classification == SMALL_N  # as the KM rule says per cell


def test_too_few_trials_per_arm_is_n_too_small() -> None:
    result = fit(draw(np.random.default_rng(2), n=8))
    assert result.pooled is not None and result.pooled.classification == SMALL_N


def test_a_covariate_collinear_with_the_scheme_is_left_out_and_said() -> None:
    frame = draw(np.random.default_rng(4), n=60)
    frame["hidden"] = np.where(frame["init"] == FAST, 16, 64)  # confounded with the scheme
    result = fit(frame)
    assert "log hidden" not in result.covariates
    assert any("log hidden (collinear" in note for note in result.notes)
    assert result.pooled is not None and result.pooled.kind == "finite"


def test_one_arm_missing_and_unknown_families() -> None:
    frame = draw(np.random.default_rng(4))
    result = fit(frame[frame["init"] == FAST])
    assert result.reason == "no uniform01 trials" and result.n_b == 0
    with pytest.raises(ValueError, match="unknown AFT families"):
        fit(frame, families=("gamma",))


def test_a_slower_arm_that_barely_converges_gives_at_most_a_lower_bound() -> None:
    """One slow trial converged, at the budget: the model's median for the slower scheme is
    an extrapolation past the budget, so (as in the Kaplan-Meier rule) only "at least lo"."""
    frame = draw(np.random.default_rng(6), n=24, ratio=30.0, budget=40.0)
    slow = frame.index[frame["init"] == SLOW]
    frame.loc[slow, "converged_epoch"] = pd.NA
    frame.loc[slow, "outcome"] = "censored"
    frame.loc[slow[0], ["converged_epoch", "outcome"]] = [40.0, "converged"]
    pooled = fit(frame, covariates=["lr"]).pooled
    assert pooled is not None and pooled.kind == "lower_bound"
    assert pooled.classification == AT_LEAST  # a lower bound cannot show "within" 2-10x
    assert pooled.text.startswith(f"at least {pooled.lo:.3g}x")
    assert fit(frame, covariates=["lr"], high=math.inf).pooled.classification == WITHIN


@pytest.mark.slow
def test_a_faster_arm_past_its_budget_says_nothing() -> None:
    frame = draw(np.random.default_rng(6), n=24, ratio=1 / 30, budget=40.0)
    fast = frame.index[frame["init"] == FAST]
    frame.loc[fast, "converged_epoch"] = pd.NA
    frame.loc[fast, "outcome"] = "censored"
    frame.loc[fast[0], ["converged_epoch", "outcome"]] = [40.0, "converged"]
    pooled = fit(frame, covariates=["lr"]).pooled
    assert pooled is not None and pooled.kind == "none"
    assert pooled.classification == "inconclusive"


# --------------------------------------------------------------------------- studies


def trial(
    init: str,
    epochs: int | None,
    *,
    seed: int,
    hidden: int = 16,
    lr: float = 0.003,
    scale: float = 1.0,
    max_epochs: int = 60,
    frozen: bool = False,
) -> TrialResult:
    """A real trial result that converged at ``epochs`` (None: censored at the budget)."""
    spec = TrialSpec(
        task="adding", seq_len=10, hidden=hidden, cell="rnn_tanh", init=init, scale=scale,
        lr=lr, max_epochs=max_epochs, target_loss=0.05, patience=1, seed=seed, data_seed=seed,
    )  # fmt: skip
    losses = [0.1] * max_epochs if epochs is None else [0.1] * (epochs - 1) + [0.02]
    gradient = 0.0 if frozen else 1.0
    return TrialResult(
        spec=spec,
        converged_epoch=epochs,
        diverged_epoch=None,
        target_loss=0.05,
        baseline_loss=0.167,
        history=[
            EpochRecord(
                epoch=e, train_loss=v, val_loss=v, grad_norm=1.0, hidden_var=0.2, hidden_sat=0.0
            )
            for e, v in enumerate(losses, start=1)
        ],
        diagnostics=InitDiagnostics(
            spectral_radius=1.0,
            hidden_var=[0.2] * 10,
            hidden_sat=[0.0] * 10,
            grad_norm=[0.1] * 10,
            initial_loss=0.2,
            input_grad_norm=gradient,
            recurrent_grad_norm=gradient,
        ),
    )


def study(results: list[TrialResult], spec_text: str) -> StudyTables:
    rows = [(i, f"key{i}", r) for i, r in enumerate(results)]
    return tables_from_results("aft", rows, claim="", spec_text=spec_text)


GRID_SPEC = """
name: grid
claims: [{faster: xavier, than: uniform01, by: [2, 10]}]
space:
  init: [xavier, uniform01]
  hidden: [16, 64]
  seed: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"""


def grid_study(ratio: float, seeds: int = 10) -> StudyTables:
    rng = np.random.default_rng(42)
    results = []
    for hidden in (16, 64):
        for seed in range(seeds):
            base = math.exp(1.6 + 0.35 * rng.standard_normal())
            for init, factor in ((FAST, 1.0), (SLOW, ratio)):
                noise = math.exp(0.15 * rng.standard_normal())
                epochs = max(1, round(base * factor * noise))
                kept = epochs if epochs <= 60 else None
                results.append(trial(init, kept, seed=seed, hidden=hidden))
    return study(results, GRID_SPEC)


@pytest.mark.slow
def test_on_a_grid_study_the_aft_ratio_agrees_with_the_kaplan_meier_ratio() -> None:
    tables = grid_study(3.0)
    claim = comparisons(tables)[0]
    aft = study_aft(tables, claim)
    km = comparison_table(tables.trials, FAST, SLOW, 2.0, 10.0, n_boot=400)
    pooled = aft.pooled
    assert pooled is not None and pooled.lo < 3.0 < pooled.hi
    for row in km.itertuples():
        assert abs(math.log(pooled.estimate / row.speedup)) < math.log(1.35), (row, pooled)
        assert row.lo <= pooled.estimate <= row.hi  # each within the other's interval
    assert aft.covariates == ["log hidden"]


def test_a_grid_study_with_enough_seeds_keeps_the_kaplan_meier_verdict() -> None:
    verdict = judge(grid_study(3.0), n_boot=400)[0]
    assert verdict.rule == SPEEDUP_RULE and verdict.verdict == SUPPORTED


SAMPLED_SPEC = """
name: sampled
sampler: tpe
claims: [{faster: xavier, than: uniform01, by: [2, .inf]}]
space:
  init: [xavier, uniform01]
  lr: {low: 0.001, high: 0.03, log: true}
  scale: {low: 0.5, high: 2.0}
"""


def sampled_study(ratio: float, n: int = 40) -> StudyTables:
    """A TPE-like design: lr and scale continuous, so no two trials share a cell."""
    rng = np.random.default_rng(9)
    results = []
    for i in range(n):
        init = FAST if i % 2 == 0 else SLOW
        lr = float(math.exp(rng.uniform(math.log(1e-3), math.log(3e-2))))
        scale = float(rng.uniform(0.5, 2.0))
        t = math.exp(1.8 + (math.log(ratio) if init == SLOW else 0.0) - 0.3 * math.log(lr / 1e-2))
        epochs = max(1, round(t * math.exp(0.3 * rng.standard_normal())))
        results.append(trial(init, epochs if epochs <= 60 else None, seed=i, lr=lr, scale=scale))
    return study(results, SAMPLED_SPEC)


@pytest.mark.slow
def test_a_sampled_study_gets_its_declared_verdict_from_the_aft_model() -> None:
    tables = sampled_study(4.0)
    verdict = judge(tables, n_boot=200)[0]
    assert verdict.rule == AFT_RULE and verdict.verdict == SUPPORTED
    assert "Kaplan-Meier rule cannot judge this design" in verdict.evidence
    assert verdict.numbers["method"] == "aft"
    assert set(verdict.numbers["covariates"]) == {"log lr", "scale"}
    refuted = judge(sampled_study(1.0), n_boot=200)[0]
    assert refuted.rule == AFT_RULE and refuted.verdict == REFUTED


@pytest.mark.slow
def test_a_grid_with_too_few_seeds_per_cell_is_judged_by_the_model() -> None:
    verdict = judge(grid_study(3.0, seeds=3), n_boot=200)[0]  # 3 per arm per cell, 6 in all
    assert verdict.rule == AFT_RULE and verdict.verdict in (SUPPORTED, INCONCLUSIVE)
    assert "each of its 2 cells has fewer than 5 trials in an arm" in verdict.evidence
    assert verdict.numbers["kaplan_meier"]["cells"]  # the KM cells are kept beside it


def test_a_design_too_small_for_the_model_too_keeps_the_kaplan_meier_verdict() -> None:
    verdict = judge(sampled_study(4.0, n=8), n_boot=100)[0]  # 4 trials per scheme
    assert verdict.rule == SPEEDUP_RULE and verdict.verdict == NOT_MEASURED


@pytest.mark.slow
def test_the_report_has_an_aft_section_with_its_model_check(tmp_path: Path) -> None:
    from pipeline.analysis.report import write_report

    tables = sampled_study(4.0)
    section = aft_section(tables)
    assert section is not None and section.rows[0][0].startswith("U1: xavier vs uniform01")
    assert section.rows[0][-1] == "yes" and "AIC" in section.checks[0][1]
    files = write_report(tables, tmp_path, n_boot=100)
    text = files["markdown"].read_text(encoding="utf-8")
    assert "## Speedup from a censored regression (AFT)" in text
    assert "lognormal" in text and "weibull" in text
    html = files["html"].read_text(encoding="utf-8")
    assert "Speedup from a censored regression (AFT)" in html


def test_comparisons_add_xavier_over_uniform01_only_when_both_are_there() -> None:
    tables = grid_study(3.0)
    assert [c.id for c in comparisons(tables)] == ["U1"]  # declared already
    plain = study(tables_results(tables), "name: g\nspace: {init: [xavier, uniform01]}\n")
    assert [(c.faster, c.than) for c in comparisons(plain)] == [(FAST, SLOW)]
    only = study([trial(FAST, 3, seed=0)], "name: g\n")
    assert comparisons(only) == [] and aft_section(only) is None
    assert isinstance(comparisons(plain)[0], Comparison)


def tables_results(tables: StudyTables) -> list[TrialResult]:
    """The trials of a study again, as results."""
    return [
        trial(str(r.init), None if pd.isna(r.converged_epoch) else int(r.converged_epoch),
              seed=int(r.seed), hidden=int(r.hidden))
        for r in tables.trials.itertuples()
    ]  # fmt: skip
