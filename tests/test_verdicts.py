"""Claim verdicts on synthetic studies whose answer is known, built from real TrialResults."""

from __future__ import annotations

import math

import pytest

from models.spec import EpochRecord, InitDiagnostics, TrialResult, TrialSpec
from pipeline import verdicts as vd
from pipeline.results import StudyTables, tables_from_results
from pipeline.verdicts import VERDICTS, Verdict, judge

N_BOOT = 200  # enough for the intervals these tests read; keeps the suite fast


def result(
    init: str = "xavier",
    *,
    seq_len: int = 10,
    hidden: int = 16,
    cell: str = "rnn_tanh",
    scale: float = 1.0,
    init_recurrent: str | None = None,
    seed: int = 0,
    converged: int | None = None,
    diverged: int | None = None,
    max_epochs: int = 40,
    radius: float = 1.0,
    hidden_var: list[float] | None = None,
    hidden_sat: list[float] | None = None,
    grad_norm: list[float] | None = None,
) -> TrialResult:
    """One trial's result with the given outcome and init diagnostics (T = seq_len steps)."""
    spec = TrialSpec(
        task="adding",
        seq_len=seq_len,
        hidden=hidden,
        cell=cell,
        init=init,
        init_recurrent=init_recurrent,
        scale=scale,
        max_epochs=max_epochs,
        seed=seed,
        data_seed=seed,
    )
    ran = converged or diverged or max_epochs
    history = [
        EpochRecord(
            epoch=e, train_loss=0.1, val_loss=0.1, grad_norm=1.0, hidden_var=0.2, hidden_sat=0.0
        )
        for e in range(1, ran + 1)
    ]
    diagnostics = InitDiagnostics(
        spectral_radius=radius,
        hidden_var=hidden_var if hidden_var is not None else [0.2] * seq_len,
        hidden_sat=hidden_sat if hidden_sat is not None else [0.0] * seq_len,
        grad_norm=grad_norm if grad_norm is not None else [0.1] * seq_len,
        initial_loss=0.2,
    )
    return TrialResult(
        spec=spec,
        converged_epoch=converged,
        diverged_epoch=diverged,
        target_loss=0.05,
        baseline_loss=0.167,
        history=history,
        diagnostics=diagnostics,
    )


def study(results: list[TrialResult]) -> StudyTables:
    rows = [(i, f"key{i}", r) for i, r in enumerate(results)]
    return tables_from_results("synthetic", rows, claim="synthetic claim")


def race(
    xavier: int | None, other: int | list[int] | None, *, lengths=(10, 30, 60), scheme="uniform01"
) -> list[TrialResult]:
    """Five seeds per seq_len; xavier converges at ``xavier``, the other scheme at ``other``
    (one epoch per seed when a list); None = never within the 40-epoch budget."""
    out = []
    for seq_len in lengths:
        for seed in range(5):
            theirs = other[seed] if isinstance(other, list) else other
            out.append(result("xavier", seq_len=seq_len, seed=seed, converged=xavier))
            out.append(result(scheme, seq_len=seq_len, seed=seed, converged=theirs))
    return out


def c4(results: list[TrialResult]) -> Verdict:
    return vd.judge_c4(study(results).trials, n_boot=N_BOOT)


def headline_rows(verdict: Verdict):
    assert verdict.details is not None
    return verdict.details[verdict.details["in_verdict"]]


# --------------------------------------------------------------------------- C4


def test_c4_supported_when_xavier_is_about_4x_faster_in_every_cell() -> None:
    v = c4(race(3, [11, 12, 13, 12, 12]))
    assert v.verdict == "supported", v.evidence
    rows = headline_rows(v)
    assert sorted(rows["seq_len"]) == [10, 30, 60]
    assert set(rows["cell_verdict"]) == {vd.WITHIN}
    assert all(3.0 < s < 5.0 for s in rows["speedup"])
    for seq_len in (10, 30, 60):
        assert f"seq_len {seq_len}: " in v.evidence


def test_c4_refuted_when_both_converge_at_the_same_epoch() -> None:
    v = c4(race(5, 5))
    assert v.verdict == "refuted", v.evidence
    assert set(headline_rows(v)["cell_verdict"]) == {vd.BELOW}
    assert "below 2x" in v.evidence


def test_c4_lower_bound_when_uniform01_never_converges() -> None:
    v = c4(race(5, None))
    rows = headline_rows(v)
    assert rows["lower_bound"].all()
    assert all(math.isclose(s, 8.0) for s in rows["speedup"])  # 40-epoch budget / 5
    assert all(str(t).startswith(">") and "8" in str(t) for t in rows["text"])
    assert set(rows["cell_verdict"]) == {vd.WITHIN}
    assert v.verdict == "supported", v.evidence
    assert "> 8" in v.evidence and "median not reached" in v.evidence


def test_c4_lower_bound_above_10x_is_not_within() -> None:
    v = c4(race(2, None))  # > 20x: beyond the claimed range
    assert set(headline_rows(v)["cell_verdict"]) == {vd.AT_LEAST_10}
    assert v.verdict == "refuted", v.evidence


def test_c4_inconclusive_when_xavier_itself_never_converges() -> None:
    v = c4(race(None, None))
    assert set(headline_rows(v)["cell_verdict"]) == {vd.CELL_INCONCLUSIVE}
    assert v.verdict == "inconclusive", v.evidence


def test_c4_partly_when_cells_disagree() -> None:
    v = c4(race(3, 12, lengths=(10,)) + race(5, 5, lengths=(30,)))
    assert v.verdict == "partly supported", v.evidence
    by_len = dict(zip(headline_rows(v)["seq_len"], headline_rows(v)["cell_verdict"], strict=True))
    assert by_len == {10: vd.WITHIN, 30: vd.BELOW}


def test_c4_other_schemes_are_in_the_details_but_not_the_verdict() -> None:
    runs = race(3, 12) + race(3, 3, scheme="orthogonal")[1::2]  # orthogonal as fast as xavier
    v = c4(runs)
    assert v.verdict == "supported", v.evidence
    assert v.details is not None
    other = v.details[v.details["comparison"] == "xavier vs orthogonal"]
    assert len(other) == 3 and not other["in_verdict"].any()
    assert set(other["cell_verdict"]) == {vd.BELOW}


def test_c4_not_measured_without_uniform01() -> None:
    v = c4(race(3, 6, scheme="orthogonal"))
    assert v.verdict == "not measured by this study"
    assert "uniform01" in v.evidence


@pytest.mark.parametrize(
    ("estimate", "lo", "hi", "lower_bound", "expected"),
    [
        (4.0, 3.0, 5.0, False, vd.WITHIN),
        (2.0, 1.0, 3.0, False, vd.WITHIN),
        (10.0, 8.0, 14.0, False, vd.WITHIN),
        (1.2, 1.0, 1.5, False, vd.BELOW),
        (1.5, 1.0, 2.5, False, vd.CELL_INCONCLUSIVE),  # CI straddles 2
        (15.0, 11.0, 20.0, False, vd.ABOVE),
        (12.0, 9.0, 20.0, False, vd.CELL_INCONCLUSIVE),  # CI straddles 10
        (8.0, math.nan, math.nan, True, vd.WITHIN),
        (20.0, math.nan, math.nan, True, vd.AT_LEAST_10),
        (1.5, math.nan, math.nan, True, vd.CELL_INCONCLUSIVE),  # > 1.5x could be anything
        (None, None, None, False, vd.CELL_INCONCLUSIVE),
        (math.nan, math.nan, math.nan, False, vd.CELL_INCONCLUSIVE),
    ],
)
def test_classify_speedup(estimate, lo, hi, lower_bound, expected) -> None:
    assert vd.classify_speedup(estimate, lo, hi, lower_bound) == expected


# --------------------------------------------------------------------------- C3


def gradients(scale: float, seq_len: int = 10) -> list[float]:
    """|dL/dh_t| growing (scale < 1: vanishing back in time) or shrinking towards the end."""
    return [scale ** (seq_len - 1 - t) for t in range(seq_len)]


def sweep(scales: list[float], grads=gradients) -> list[TrialResult]:
    return [
        result("orthogonal", scale=s, seed=seed, radius=s, grad_norm=grads(s), converged=5)
        for s in scales
        for seed in range(3)
    ]


@pytest.mark.parametrize("scales", [[1.0], [0.5, 0.8, 1.0], [1.0, 2.0]])
def test_c3_not_measured_without_scales_on_both_sides_of_1(scales: list[float]) -> None:
    v = vd.judge_c3(study(sweep(scales)).trials)
    assert v.verdict == "not measured by this study"
    assert "both below and above 1" in v.evidence


def test_c3_supported_when_small_gains_vanish_and_large_ones_explode() -> None:
    v = vd.judge_c3(study(sweep([0.5, 0.8, 1.0, 1.25, 2.0])).trials)
    assert v.verdict == "supported", v.evidence
    assert v.details is not None
    row = v.details[v.details["scale"] == 0.5].iloc[0]
    assert math.isclose(row["log_ratio"], 9 * math.log10(0.5))
    assert math.isclose(row["spectral_radius"], 0.5)


def test_c3_partly_when_large_gains_also_vanish() -> None:
    v = vd.judge_c3(study(sweep([0.5, 2.0], grads=lambda s: gradients(0.5))).trials)
    assert v.verdict == "partly supported", v.evidence
    assert "do not all explode" in v.evidence


def test_c3_refuted_when_both_sides_go_the_wrong_way() -> None:
    v = vd.judge_c3(study(sweep([0.5, 2.0], grads=lambda s: gradients(1 / s))).trials)
    assert v.verdict == "refuted", v.evidence


def test_c3_treats_an_underflowed_first_gradient_as_vanishing() -> None:
    def grads(s: float) -> list[float]:
        return [0.0, *gradients(s)[1:]] if s < 1 else gradients(s)

    v = vd.judge_c3(study(sweep([0.5, 2.0], grads=grads)).trials)
    assert v.verdict == "supported", v.evidence


# --------------------------------------------------------------------------- C5


def grid_runs(outcome) -> list[TrialResult]:
    """uniform01 over hidden {8, 128} x seq_len {5, 60}; ``outcome(hidden, seq_len)`` gives
    (converged, diverged) epochs."""
    out = []
    for hidden in (8, 128):
        for seq_len in (5, 60):
            conv, div = outcome(hidden, seq_len)
            for seed in range(3):
                out.append(
                    result(
                        "uniform01",
                        hidden=hidden,
                        seq_len=seq_len,
                        seed=seed,
                        converged=conv,
                        diverged=div,
                    )
                )
    return out


def test_c5_supported_when_tiny_converges_and_large_diverges() -> None:
    runs = grid_runs(lambda h, t: (4, None) if (h, t) == (8, 5) else (None, 3))
    v = vd.judge_c5(study(runs).trials)
    assert v.verdict == "supported", v.evidence
    assert "hidden 8, seq_len 5" in v.evidence and "hidden 128, seq_len 60" in v.evidence


def test_c5_partly_when_it_fails_at_scale_by_censoring() -> None:
    runs = grid_runs(lambda h, t: (4, None) if (h, t) == (8, 5) else (None, None))
    v = vd.judge_c5(study(runs).trials)
    assert v.verdict == "partly supported", v.evidence
    assert "censored 100%" in v.evidence


def test_c5_partly_when_the_largest_cell_still_converges() -> None:
    v = vd.judge_c5(study(grid_runs(lambda h, t: (4, None))).trials)
    assert v.verdict == "partly supported", v.evidence


def test_c5_refuted_when_even_the_smallest_cell_fails() -> None:
    v = vd.judge_c5(study(grid_runs(lambda h, t: (None, 2))).trials)
    assert v.verdict == "refuted", v.evidence


def test_c5_not_measured_with_one_cell() -> None:
    runs = [result("uniform01", seed=s, converged=4) for s in range(3)]
    v = vd.judge_c5(study(runs).trials)
    assert v.verdict == "not measured by this study"


# --------------------------------------------------------------------------- C6


def test_c6_orthogonal_norm_check() -> None:
    exact = [result("orthogonal", seed=s, radius=1.0 + 1e-7, converged=5) for s in range(3)]
    v = vd.judge_c6(study(exact).trials)
    # What was measured holds, but (b) and (c) were not tested: only partly supported.
    assert v.verdict == "partly supported", v.evidence
    assert "(b)" in v.evidence and "(c)" in v.evidence  # named as not measured

    off = [result("orthogonal", seed=s, radius=1.01, converged=5) for s in range(3)]
    assert vd.judge_c6(study(off).trials).verdict == "refuted"

    # Whh drawn by another scheme: the orthogonal check does not apply to it.
    other_whh = [result("orthogonal", init_recurrent="xavier", radius=1.3, converged=5)]
    assert vd.judge_c6(study(other_whh).trials).verdict == "not measured by this study"


def test_c6_mixed_sub_checks_are_partly_supported() -> None:
    runs = [result("orthogonal", seed=s, radius=1.0, converged=5) for s in range(3)]
    runs += [result("he_normal", cell="rnn_relu", seed=s, converged=5) for s in range(4)]
    runs += [result("xavier", cell="rnn_relu", seed=s, converged=5) for s in range(4)]
    runs += [result("xavier", seed=s, diverged=3) for s in range(4)]  # xavier/tanh diverges
    runs += [result("glorot_uniform", seed=s, converged=6) for s in range(4)]
    v = vd.judge_c6(study(runs).trials)
    assert v.verdict == "partly supported", v.evidence
    assert v.details is not None
    assert dict(zip(v.details["check"], v.details["holds"], strict=True)) == {
        "orthogonal preserves norm": True,
        "He suits ReLU": True,
        "Xavier is the safe default for tanh": False,
    }


# --------------------------------------------------------------------------- C1, C2


@pytest.mark.parametrize(
    ("variances", "expected"),
    [
        ([0.9, 1.0, 1.0, 1.0, 1.1, 1.0, 0.95, 1.0, 1.0, 1.0], "supported"),
        ([0.2] * 10, "partly supported"),
        ([0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9], "refuted"),
    ],
)
def test_c1(variances: list[float], expected: str) -> None:
    tables = study([result("xavier", seed=s, hidden_var=variances) for s in range(3)])
    v = vd.judge_c1(tables.trials, tables.steps)
    assert v.verdict == expected, v.evidence


def test_c1_not_measured_without_xavier_on_tanh() -> None:
    tables = study([result("xavier", cell="lstm"), result("orthogonal")])
    assert vd.judge_c1(tables.trials, tables.steps).verdict == "not measured by this study"


def saturation_runs(sat_by_hidden: dict[int, float], uniform_var: float) -> list[TrialResult]:
    out = []
    for hidden, sat in sat_by_hidden.items():
        for seed in range(3):
            out.append(
                result(
                    "uniform01",
                    hidden=hidden,
                    seed=seed,
                    hidden_sat=[sat] * 10,
                    hidden_var=[uniform_var] * 10,
                )
            )
            out.append(result("xavier", hidden=hidden, seed=seed, hidden_var=[0.3] * 10))
    return out


def test_c2_supported_when_large_uniform01_saturates() -> None:
    v = vd.judge_c2(study(saturation_runs({8: 0.4, 64: 0.95, 256: 1.0}, 0.001)).trials)
    assert v.verdict == "supported", v.evidence
    assert "hidden 256" in v.evidence


def test_c2_partly_when_saturation_falls_with_size() -> None:
    v = vd.judge_c2(study(saturation_runs({8: 1.0, 256: 0.92}, 0.001)).trials)
    assert v.verdict == "partly supported", v.evidence


def test_c2_refuted_when_uniform01_keeps_its_signal() -> None:
    v = vd.judge_c2(study(saturation_runs({8: 0.0, 256: 0.1}, 0.3)).trials)
    assert v.verdict == "refuted", v.evidence


# --------------------------------------------------------------------------- all claims


@pytest.mark.parametrize(
    "runs",
    [
        [],
        race(3, 12, lengths=(10,)),
        sweep([0.5, 1.0, 2.0]) + race(None, None, lengths=(10,)),
        grid_runs(lambda h, t: (None, 2)),
    ],
    ids=["empty", "headline", "scale-sweep", "hidden-grid"],
)
def test_judge_gives_every_claim_a_known_verdict(runs: list[TrialResult]) -> None:
    verdicts = judge(study(runs), n_boot=N_BOOT)
    assert [v.claim_id for v in verdicts] == ["C1", "C2", "C3", "C4", "C5", "C6"]
    for v in verdicts:
        assert v.verdict in VERDICTS
        assert v.claim == vd.CLAIMS[v.claim_id]
        assert v.rule and v.evidence
        if v.verdict == "not measured by this study":
            assert "needs" in v.evidence


def test_non_finite_diagnostics_are_not_measured_rather_than_refuted() -> None:
    nan = [math.nan] * 10
    runs = [result("uniform01", seed=s, hidden_var=nan, hidden_sat=nan) for s in range(3)]
    runs += [result("xavier", seed=s, hidden_var=nan) for s in range(3)]
    tables = study(runs)
    assert vd.judge_c2(tables.trials).verdict == "not measured by this study"
    assert vd.judge_c1(tables.trials, tables.steps).verdict == "not measured by this study"


def test_c4_not_measured_when_the_schemes_share_no_cell() -> None:
    runs = [result("xavier", seq_len=10, seed=s, converged=3) for s in range(3)]
    runs += [result("uniform01", seq_len=30, seed=s, converged=12) for s in range(3)]
    v = c4(runs)
    assert v.verdict == "not measured by this study"
    assert "share no" in v.evidence


def test_c4_partly_when_within_where_measurable_and_inconclusive_elsewhere() -> None:
    short = race(5, 20, lengths=(10,))  # 4x: within
    long = race(None, None, lengths=(60,))  # neither converges: not measurable
    v = c4(short + long)
    assert v.verdict == "partly supported", v.evidence


def test_c6_supported_only_when_all_three_sub_checks_hold() -> None:
    runs = [result("orthogonal", seed=s, radius=1.0, converged=5) for s in range(3)]
    runs += [result("he_normal", cell="rnn_relu", seed=s, converged=5) for s in range(4)]
    runs += [result("xavier", cell="rnn_relu", seed=s, converged=6) for s in range(4)]
    runs += [result("xavier", seed=s, converged=5) for s in range(4)]
    runs += [result("glorot_uniform", seed=s, converged=6) for s in range(4)]
    v = vd.judge_c6(study(runs).trials)
    assert v.verdict == "supported", v.evidence
    assert "not measured" not in v.evidence
