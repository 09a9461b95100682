"""Statistics on synthetic data with known answers (pipeline.analysis.stats)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst
from scipy import stats as sps

from pipeline.analysis import power, speedups, stats, survival


def make_trials(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A minimal ``trials`` table: the columns the statistics read, typed as in results."""
    df = pd.DataFrame(rows)
    defaults = {"device_type": "cpu", "max_epochs": 40, "diverged_epoch": None, "seq_len": 10}
    for col, value in defaults.items():
        df[col] = df[col].where(df[col].notna(), value) if col in df else value
    return df.astype(
        {
            "converged_epoch": "Int64",
            "diverged_epoch": "Int64",
            "max_epochs": "int64",
            "seed": "int64",
            "device_type": "string",
            "init": "string",
        }
    )


# -- Kaplan-Meier median --------------------------------------------------------------------


def test_km_median_hand_computed():
    # durations 2 3 3+ 5 6 8 8+ 9 (+ = censored). Kaplan-Meier, S(t) = prod (1 - d/n):
    #   t=2: n=8 at risk, d=1 -> S = 7/8             = 0.875
    #   t=3: n=7 (the censored 3 is at risk at 3), d=1 -> S = 0.875 * 6/7 = 0.75
    #   t=5: n=5, d=1 -> S = 0.75 * 4/5            = 0.6
    #   t=6: n=4, d=1 -> S = 0.6 * 3/4             = 0.45  <= 0.5: the median is 6
    # Log-log band at t=2: var(log S) = d / (n (n - d)) = 1/56, se of log(-log S) =
    # sqrt(1/56) / |log 0.875| = 1.0008, so log(-log S) = -2.0134 +- 1.96 * 1.0008 and the
    # lower band is exp(-exp(-0.0518)) = 0.387 <= 0.5: the lower limit is already 2. The
    # upper band stays above 0.5 (0.63 at t=8, undefined at t=9 where S = 0): no upper limit.
    durations = [2, 3, 3, 5, 6, 8, 8, 9]
    events = [True, True, False, True, True, True, False, True]
    km = stats.km_median(durations, events)
    assert (km.n, km.events, km.median, km.lo, km.hi, km.budget) == (8, 6, 6.0, 2.0, None, 9.0)
    assert km.text == "6 [2, > 9]"


def test_km_curve_hand_computed():
    # The data of test_km_median_hand_computed: S steps at each epoch a trial converged
    # (2, 3, 5, 6, 8, 9), not at the censored 3+ and 8+; at t=8 n=3, d=1 -> S = 0.3, and
    # at t=9 the last one at risk converges -> S = 0.
    durations = [2, 3, 3, 5, 6, 8, 8, 9]
    events = [True, True, False, True, True, True, False, True]
    times, surv = stats.km_curve(durations, events)
    assert times.tolist() == [0, 2, 3, 5, 6, 8, 9]
    assert surv == pytest.approx([1, 0.875, 0.75, 0.6, 0.45, 0.3, 0.0])
    none_t, none_s = stats.km_curve([4, 4], [False, False])
    assert none_t.tolist() == [0.0] and none_s.tolist() == [1.0]


def test_km_median_with_both_limits():
    km = stats.km_median(np.arange(1, 41), np.ones(40, dtype=bool))
    assert km.median == 20.0
    assert km.lo is not None and km.hi is not None
    assert km.lo < 20 < km.hi
    assert km.text == f"20 [{km.lo:g}, {km.hi:g}]"


def test_km_median_all_censored_is_not_reached():
    km = stats.km_median([40] * 5, [False] * 5)
    assert (km.median, km.lo, km.hi, km.events) == (None, None, None, 0)
    assert km.text == "> 40"


def test_km_median_more_than_half_censored_is_not_reached():
    km = stats.km_median([3, 4, 40, 40, 40], [True, True, False, False, False])
    assert km.median is None
    assert km.text == "> 40"


def test_km_median_no_trials():
    km = stats.km_median([], [])
    assert km.median is None and km.n == 0
    assert km.text == "n/a (no trials)"


def test_km_median_refuses_bad_input():
    with pytest.raises(ValueError, match="same length"):
        stats.km_median([1, 2], [True])
    with pytest.raises(ValueError, match="> 0"):
        stats.km_median([0, 2], [True, True])


@settings(max_examples=40, deadline=None)
@given(
    hst.lists(hst.tuples(hst.integers(1, 12), hst.booleans()), min_size=1, max_size=25),
    hst.integers(0, 2**32 - 1),
)
def test_vectorized_bootstrap_median_matches_scipy(data, seed):
    d = np.array([x for x, _ in data], dtype=float)
    e = np.array([ev for _, ev in data], dtype=bool)
    n_boot = 8
    fast = survival._km_medians_boot(d, e, n_boot, np.random.default_rng(seed))
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    for row, got in zip(idx, fast, strict=True):
        want = stats.km_median(d[row], e[row]).median
        assert (math.isnan(got) and want is None) or got == want


# -- speedups -------------------------------------------------------------------------------


def test_speedup_against_all_censored_is_a_lower_bound_with_a_confidence_limit():
    # A = 3 4 4 5 6, all converged; B never converges within 40 epochs. The point is
    # budget_B / median_A = 40 / 4 = 10. The lower limit comes from A's bootstrap medians:
    # the KM median of 5 draws (all events) is their 3rd smallest, which is 6 when at
    # least 3 draws are the 6: P = sum_{k>=3} C(5,k) 0.2^k 0.8^(5-k) = 0.058 > 0.025. So
    # the 97.5% quantile of A's median is 6, and lo = 40 / 6 = 6.67 < 10.
    a_d, a_e = [3, 4, 4, 5, 6], [True] * 5
    s = stats.speedup(a_d, a_e, [40] * 5, [False] * 5, n_boot=500)
    assert s.kind == "lower_bound" and s.lower_bound
    assert s.estimate == pytest.approx(40 / 4)
    assert s.hi is None
    assert s.lo == pytest.approx(40 / 6)
    assert s.text == "> 10.0x (95% CI lower limit 6.7x)"


def test_speedup_when_a_never_converges_is_not_a_number():
    s = stats.speedup([40] * 5, [False] * 5, [3, 4, 5], [True] * 3, n_boot=200)
    assert (s.estimate, s.lo, s.hi, s.lower_bound) == (None, None, None, False)
    assert s.kind == "none"
    assert s.text == "n/a (A did not converge)"
    none = stats.speedup([], [], [3], [True])
    assert none.text == "n/a (no trials)" and none.kind == "none"


def test_speedup_bootstrap_interval_contains_true_ratio():
    # A and B exponential with medians 4 and 12 epochs (true ratio 3), 40 trials each,
    # censored at a budget of 40 epochs.
    rng = np.random.default_rng(12345)
    budget = 40.0
    a = rng.exponential(4 / math.log(2), 40)
    b = rng.exponential(12 / math.log(2), 40)
    s = stats.speedup(np.minimum(a, budget), a < budget, np.minimum(b, budget), b < budget, seed=1)
    assert not s.lower_bound and s.kind == "finite"
    assert s.lo is not None and s.hi is not None and s.estimate is not None
    assert s.lo <= 3.0 <= s.hi
    assert s.lo < s.estimate < s.hi
    assert s.text == f"{s.estimate:.1f}x [{s.lo:.1f}, {s.hi:.1f}]"
    again = stats.speedup(
        np.minimum(a, budget), a < budget, np.minimum(b, budget), b < budget, seed=1
    )
    assert again == s  # reproducible with a fixed seed


def _rows(med_a, med_b, budget_a, budget_b, boot_a, boot_b):
    """speedups._speedup_rows on one study whose bootstrap medians are given."""
    kind, est, lo, hi = speedups._speedup_rows(
        np.array([med_a]),
        np.array([med_b]),
        np.array([budget_a]),
        np.array([budget_b]),
        np.array([boot_a], dtype=float),
        np.array([boot_b], dtype=float),
        0.05,
    )
    return int(kind[0]), float(est[0]), float(lo[0]), float(hi[0])


def test_speedup_limits_are_clipped_to_the_estimate():
    # A percentile interval need not contain the point: here every resample has A* = 4
    # and B* = 12 while the data's medians are 4 and 10 (estimate 2.5). lo = 12/4 = 3
    # would sit above the point: it is clipped to 2.5; hi = 3 stays.
    kind, est, lo, hi = _rows(4.0, 10.0, 9.0, 40.0, [4.0] * 50, [12.0] * 50)
    assert (kind, est, lo, hi) == (speedups._FINITE, 2.5, 2.5, 3.0)
    # from above: B* = 8, so hi = 2 is clipped up to 2.5 and lo = 2 stays
    assert _rows(4.0, 10.0, 9.0, 40.0, [4.0] * 50, [8.0] * 50)[2:] == (2.0, 2.5)
    # a lower bound (B not reached, budget 40, A's median 5: the point is 8) whose
    # resamples all have A* = 2 (40/2 = 20): lo is clipped to the point, hi is unbounded
    kind, est, lo, hi = _rows(5.0, math.nan, 9.0, 40.0, [2.0] * 50, [math.nan] * 50)
    assert (kind, est, lo) == (speedups._LOWER, 8.0, 8.0) and math.isnan(hi)
    # A not reached: nothing, whatever the resamples say
    kind, est, lo, hi = _rows(math.nan, 10.0, 9.0, 40.0, [4.0] * 50, [8.0] * 50)
    assert kind == speedups._NONE and all(map(math.isnan, (est, lo, hi)))


@settings(max_examples=40, deadline=None)
@given(
    hst.lists(hst.tuples(hst.integers(1, 12), hst.booleans()), min_size=1, max_size=12),
    hst.lists(hst.tuples(hst.integers(1, 12), hst.booleans()), min_size=1, max_size=12),
    hst.integers(0, 1000),
)
def test_speedup_lo_is_never_above_the_estimate(a, b, seed):
    s = stats.speedup(
        [d for d, _ in a], [e for _, e in a], [d for d, _ in b], [e for _, e in b], n_boot=40
    )
    if s.estimate is None:
        assert (s.kind, s.lo, s.hi) == ("none", None, None)
        return
    assert s.kind == ("lower_bound" if s.lower_bound else "finite")
    assert s.lo is None or s.lo <= s.estimate
    assert s.hi is None or s.hi >= s.estimate
    assert not s.lower_bound or s.hi is None


# -- paired comparisons ---------------------------------------------------------------------


def _paired(pairs: list[tuple[int | None, int | None]], budget_a: int = 40, budget_b: int = 40):
    """paired_comparison of (A epoch, B epoch) pairs; None = censored at that budget."""
    a = [budget_a if x is None else x for x, _ in pairs]
    b = [budget_b if y is None else y for _, y in pairs]
    a_e = [x is not None for x, _ in pairs]
    b_e = [y is not None for _, y in pairs]
    return stats.paired_comparison(a, a_e, b, b_e)


def test_paired_exact_ratio_and_sign_test():
    a = [2, 3, 4, 5, 6, 7, 8, 9]
    p = _paired([(x, 3 * x) for x in a])
    assert (p.n_pairs, p.a_first, p.b_first, p.ties, p.n_both) == (8, 8, 0, 0, 8)
    assert p.sign_p == pytest.approx(2 / 2**8)  # two-sided: 2 * (1/2)^8
    assert p.ratio_both_converged == pytest.approx(3.0)
    assert p.ratio_lo == pytest.approx(3.0) and p.ratio_hi == pytest.approx(3.0)
    assert p.text == (
        "A first in 8 of 8 pairs (B first in 0, 0 tied), sign test p=0.0078; "
        "3.0x [3.0, 3.0] over the 8 pairs where both converged"
    )
    assert p.describe("xavier", "uniform01").startswith(
        "xavier first in 8 of 8 pairs (uniform01 first in 0, 0 tied)"
    )


def test_sign_test_nine_of_ten_untied_pairs():
    # 9 pairs A first, 1 B first, 2 ties (both censored). Two-sided exact sign test:
    # p = 2 * (C(10,9) + C(10,10)) / 2^10 = 22 / 1024 = 0.0215.
    p = _paired([(3, 9)] * 9 + [(9, 3)] + [(None, None)] * 2)
    assert (p.n_pairs, p.a_first, p.b_first, p.ties) == (12, 9, 1, 2)
    assert p.sign_p == pytest.approx(22 / 1024)
    assert p.sign_p == pytest.approx(sps.binomtest(9, 10, 0.5).pvalue)
    assert "sign test p=0.021;" in p.text
    flipped = _paired([(y, x) for x, y in [(3, 9)] * 9 + [(9, 3)] + [(None, None)] * 2])
    assert (flipped.a_first, flipped.b_first, flipped.sign_p) == (1, 9, p.sign_p)


def test_a_pair_where_a_failed_counts_as_b_first_not_dropped():
    p = _paired([(None, 30), (5, None)])
    assert (p.n_pairs, p.a_first, p.b_first, p.ties) == (2, 1, 1, 0)
    assert p.n_both == 0 and p.ratio_both_converged is None and p.ratio_lo is None
    assert p.sign_p == 1.0  # 1 of 2
    assert p.text.endswith("; no pair where both converged")


@pytest.mark.parametrize(
    ("pair", "budgets", "expected"),
    [
        ((None, None), (40, 40), (0, 0, 1)),  # both censored
        ((None, None), (40, 60), (0, 0, 1)),  # both censored at different budgets
        ((7, 7), (40, 40), (0, 0, 1)),  # the same epoch
        ((7, 8), (40, 40), (1, 0, 0)),
        ((8, 7), (40, 40), (0, 1, 0)),
        ((40, None), (40, 40), (1, 0, 0)),  # A converged at the last epoch, B never did
        ((None, 40), (40, 40), (0, 1, 0)),
        ((50, None), (60, 40), (0, 0, 1)),  # B censored at 40 may have converged by 50
        ((None, 50), (40, 60), (0, 0, 1)),
        ((30, None), (60, 40), (1, 0, 0)),  # B had not converged by 40 > 30
    ],
)
def test_who_converged_first(pair, budgets, expected):
    p = _paired([pair], *budgets)
    assert (p.a_first, p.b_first, p.ties) == expected


def test_ratio_only_over_pairs_where_both_converged():
    pairs = [(2, 6), (4, 8), (3, None), (None, 10), (5, 20)]
    p = _paired(pairs)
    logs = np.log([3.0, 2.0, 4.0])  # pairs 1, 2 and 5; not 40/3 nor 10/40
    half = sps.t.ppf(0.975, 2) * logs.std(ddof=1) / math.sqrt(3)
    assert p.n_both == 3
    assert p.ratio_both_converged == pytest.approx(24 ** (1 / 3))
    assert p.ratio_lo == pytest.approx(math.exp(logs.mean() - half))
    assert p.ratio_hi == pytest.approx(math.exp(logs.mean() + half))
    assert (p.a_first, p.b_first, p.ties) == (4, 1, 0)
    assert p.sign_p == pytest.approx(sps.binomtest(4, 5, 0.5).pvalue)  # 12/32 = 0.375
    assert p.text.endswith(
        f"2.9x [{math.exp(logs.mean() - half):.1f}, {math.exp(logs.mean() + half):.1f}] "
        "over the 3 pairs where both converged"
    )


def test_paired_edge_cases():
    one = _paired([(2, 6), (3, None)])
    assert one.n_both == 1 and one.ratio_both_converged == pytest.approx(3.0)
    assert one.ratio_lo is None and one.ratio_hi is None
    assert one.text.endswith("; 3.0x in the 1 pair where both converged")
    tied = _paired([(None, None)] * 3)
    assert (tied.ties, tied.sign_p) == (3, 1.0)
    empty = stats.paired_comparison([], [], [], [])
    assert empty.n_pairs == 0 and empty.sign_p == 1.0 and empty.text == "n/a (no pairs)"
    with pytest.raises(ValueError, match="same length"):
        stats.paired_comparison([1, 2], [True, True], [1], [True])


@settings(max_examples=50, deadline=None)
@given(hst.lists(hst.tuples(hst.integers(1, 6), hst.integers(1, 6)), max_size=15))
def test_paired_counts_add_up_and_are_symmetric(raw):
    # epoch 6 = censored at a budget of 6
    pairs = [(None if x == 6 else x, None if y == 6 else y) for x, y in raw]
    p = _paired(pairs, 6, 6)
    q = _paired([(y, x) for x, y in pairs], 6, 6)
    assert p.a_first + p.b_first + p.ties == p.n_pairs == len(raw)
    assert (q.a_first, q.b_first, q.ties) == (p.b_first, p.a_first, p.ties)
    assert q.sign_p == pytest.approx(p.sign_p)
    assert 0 < p.sign_p <= 1


# -- tables ---------------------------------------------------------------------------------


def test_time_to_event_censors_at_the_budget():
    t = make_trials(
        [
            {"init": "x", "seed": 0, "converged_epoch": 5},
            {"init": "x", "seed": 1, "converged_epoch": None},
            {"init": "x", "seed": 2, "converged_epoch": None, "diverged_epoch": 3},
        ]
    )
    d, e = stats.time_to_event(t)
    assert d.tolist() == [5.0, 40.0, 40.0]
    assert e.tolist() == [True, False, False]


def test_group_summary_never_pools_device_types():
    rows: list[dict[str, Any]] = [
        {"init": "xavier", "seed": s, "converged_epoch": 4 + s, "device_type": dev}
        for s in range(4)
        for dev in ("cpu", "cuda")
    ]
    rows.append({"init": "xavier", "seed": 9, "converged_epoch": None, "diverged_epoch": 2})
    out = stats.group_summary(make_trials(rows), ["init"])
    assert list(out.columns) == ["init", "device_type", *stats.SUMMARY_COLUMNS]
    assert out["device_type"].tolist() == ["cpu", "cuda"]
    assert out["n"].tolist() == [5, 4]
    cpu = out.iloc[0]
    assert cpu["converged_rate"] == pytest.approx(0.8)
    assert cpu["diverged_rate"] == pytest.approx(0.2)
    assert cpu["censored_rate"] == pytest.approx(0.2)
    assert str(out["km_median"].dtype) == "float64"


def test_group_summary_not_reached_is_nan_with_text():
    rows = [{"init": "uniform01", "seed": s, "converged_epoch": None} for s in range(3)]
    out = stats.group_summary(make_trials(rows), ["init"])
    assert math.isnan(out["km_median"].iloc[0])
    assert out["median_text"].iloc[0] == "> 40"


def test_group_summary_empty_has_columns():
    out = stats.group_summary(
        make_trials([{"init": "x", "seed": 0, "converged_epoch": 1}])[:0], ["init"]
    )
    assert out.empty and list(out.columns) == ["init", "device_type", *stats.SUMMARY_COLUMNS]


def _epoch(x: float, budget: int = 40) -> int | None:
    """A simulated epochs-to-converge: at least 1, None past the budget (censored)."""
    e = max(1, round(x))
    return e if e <= budget else None


def _paired_table(
    noise: float, seeds: int = 8, seq_lens: tuple[int, ...] = (10, 30)
) -> pd.DataFrame:
    """xavier ~4 epochs, uniform01 ~12 (true ratio 3), log-normal noise, paired by seed."""
    rng = np.random.default_rng(7)
    rows: list[dict[str, Any]] = []
    for seq_len in seq_lens:
        for s in range(seeds):
            a = _epoch(4.0 * math.exp(rng.normal(0, noise / 2)))
            b = _epoch(12.0 * math.exp(rng.normal(0, noise / 2)))
            rows += [
                {"init": "xavier", "seq_len": seq_len, "seed": s, "converged_epoch": a},
                {"init": "uniform01", "seq_len": seq_len, "seed": s, "converged_epoch": b},
            ]
    return make_trials(rows)


def test_speedup_table_rows_and_columns():
    t = _paired_table(0.3)
    t = pd.concat([t, t.assign(device_type="cuda")], ignore_index=True)
    out = stats.speedup_table(t, "xavier", "uniform01", ["seq_len"], n_boot=300)
    assert list(out.columns) == ["seq_len", "device_type", *stats.SPEEDUP_COLUMNS]
    assert len(out) == 4  # 2 seq_len x 2 device types
    assert (out["n_pairs"] == 8).all() and (out["n_a"] == 8).all()
    assert out["speedup"].between(1.5, 6).all()
    assert out["paired_ratio_both"].between(1.5, 6).all()
    assert str(out["lower_bound"].dtype) == "bool"
    # a cell where one scheme is missing gives no row
    only_a = t[~((t["seq_len"] == 30) & (t["init"] == "uniform01"))]
    assert len(stats.speedup_table(only_a, "xavier", "uniform01", ["seq_len"], n_boot=50)) == 2


def _race(cells: Mapping[int, tuple[Sequence[int | None], Sequence[int | None]]]) -> pd.DataFrame:
    """Trials of xavier (A) and uniform01 (B) per seq_len, paired by position (= seed)."""
    rows: list[dict[str, Any]] = []
    for seq_len, (xs, us) in cells.items():
        for s, (x, u) in enumerate(zip(xs, us, strict=True)):
            rows += [
                {"init": "xavier", "seq_len": seq_len, "seed": s, "converged_epoch": x},
                {"init": "uniform01", "seq_len": seq_len, "seed": s, "converged_epoch": u},
            ]
    return make_trials(rows)


def test_speedup_table_kind_and_paired_columns():
    t = _race(
        {
            10: ([3, 4, 5, 4, 3], [12, 11, 13, 12, 12]),  # both converge
            30: ([4, 4, 5, 4, 3], [None] * 5),  # uniform01 never does: a lower bound
            60: ([None] * 5, [12, 11, 13, 12, 12]),  # xavier never does: nothing
        }
    )
    out = stats.speedup_table(t, "xavier", "uniform01", ["seq_len"], n_boot=200)
    assert out["kind"].tolist() == ["finite", "lower_bound", "none"]
    assert out["lower_bound"].tolist() == [False, True, False]
    assert (out["lo"] <= out["speedup"]).iloc[:2].all()
    assert math.isnan(out["speedup"].iloc[2]) and out["text"].iloc[2] == "n/a (A did not converge)"
    assert out["text"].iloc[1].startswith("> 10.0x (95% CI lower limit ")
    assert out["pairs_a_first"].tolist() == [5, 5, 0]
    assert out["pairs_b_first"].tolist() == [0, 0, 5]
    assert out["pairs_tied"].tolist() == [0, 0, 0]
    assert out["sign_p"].tolist() == pytest.approx([2 / 32] * 3)
    assert out["paired_n_both"].tolist() == [5, 0, 0]
    assert out["paired_ratio_both"].iloc[1:].isna().all()
    assert out["paired_text"].iloc[1] == (
        "xavier first in 5 of 5 pairs (uniform01 first in 0, 0 tied), sign test p=0.062; "
        "no pair where both converged"
    )
    assert (
        out["paired_text"].iloc[2].startswith("xavier first in 0 of 5 pairs (uniform01 first in 5")
    )
    assert {c: str(out[c].dtype) for c in ("kind", "sign_p", "pairs_tied", "paired_n_both")} == {
        "kind": "string",
        "sign_p": "float64",
        "pairs_tied": "int64",
        "paired_n_both": "int64",
    }


def test_speedup_table_refuses_several_trials_per_seed():
    t = _paired_table(0.3)
    with pytest.raises(ValueError, match=r"several trials per seed.*seq_len"):
        stats.speedup_table(t, "xavier", "uniform01", [], n_boot=50)


# -- power ----------------------------------------------------------------------------------

# A pilot of 10 seeds: xavier ~4 epochs, uniform01 ~12 (a speedup of 3, inside 2-10x).
PILOT_A = [3, 4, 4, 5, 4, 3, 5, 4, 6, 4]
PILOT_B = [10, 12, 14, 11, 13, 12, 16, 9, 12, 15]
# The same with two of ten trials of each scheme censored (three pairs).
CENSORED_A = [3, 4, 4, 5, None, 3, 5, 4, None, 4]
CENSORED_B = [10, 12, 14, None, 13, 12, 16, 9, None, 15]


def _power(cells: Mapping[int, tuple[Sequence[int | None], Sequence[int | None]]], **kw: Any):
    return stats.power_estimate(_race(cells), "xavier", "uniform01", ["seq_len"], **kw)


def test_power_estimate_censoring_needs_more_seeds():
    light = _power({10: (PILOT_A, PILOT_B)})
    heavy = _power({10: (CENSORED_A, CENSORED_B)})
    assert light["censored_pairs"] == 0 and heavy["censored_pairs"] == 3
    assert light["seeds_needed"] is not None and heavy["seeds_needed"] is not None
    assert light["seeds_needed"] <= 8 < 12 <= heavy["seeds_needed"] <= 32
    for est in (light, heavy):
        assert est["reason"] is None
        assert est["cells"]["power"].iloc[0] >= 0.8
        assert est["cells"]["seeds_needed"].iloc[0] == est["seeds_needed"]
        assert est["text"].startswith(f"{est['seeds_needed']} seeds per cell make the 95% CI")
    # what the CLI prints
    assert isinstance(light["sd_log_ratio"], float) and light["n_pairs"] == 10
    assert light["n_both"] == 10 and heavy["n_both"] == 7
    # reproducible
    again = _power({10: (CENSORED_A, CENSORED_B)})
    assert again["seeds_needed"] == heavy["seeds_needed"]
    pd.testing.assert_frame_equal(again["cells"], heavy["cells"])


@pytest.mark.parametrize("seed", [0, 3])  # 20 seeds, a grid point; 22, found by bisection
def test_power_estimate_is_the_smallest_n_that_suffices(seed):
    est = _power({10: (CENSORED_A, CENSORED_B)}, seed=seed)
    n = est["seeds_needed"]
    t = _race({10: (CENSORED_A, CENSORED_B)})
    arms = [
        power._Arm.of(*stats.time_to_event(t[t["init"] == s])) for s in ("xavier", "uniform01")
    ]

    def frac(k: int) -> float:  # the rng the search uses: [seed, cell number, n]
        rng = np.random.default_rng([seed, 0, k])
        return power._decisive_fraction(arms[0], arms[1], k, (2.0, 10.0), 0.05, 200, 100, rng)

    assert frac(n) == est["cells"]["power"].iloc[0] >= 0.8
    assert frac(n - 1) < 0.8
    # a fraction equal to the target is enough
    exact = _power({10: (CENSORED_A, CENSORED_B)}, seed=seed, power=frac(n))
    assert exact["seeds_needed"] == n


def test_power_estimate_baseline_never_converges_needs_a_longer_budget():
    never = [None] * 10
    # xavier's median 4: a lower bound of at most 40 / 4 = 10x, never above the range.
    # (40 / its fastest epoch, 3, is 13: so this is simulated, not short-cut.)
    simulated = _power({10: (PILOT_A, never)})
    # xavier's fastest epoch 5: no study can show more than 40 / 5 = 8x (short cut)
    shortcut = _power({10: ([5, 6, 5, 7, 5, 6, 5, 5, 6, 5], never)})
    for est in (simulated, shortcut):
        assert est["seeds_needed"] is None
        assert est["reason"] == (
            "the baseline uniform01 never converges within the budget: a longer budget is "
            "needed, not more seeds (seq_len=10, device_type='cpu')"
        )
        assert est["text"].startswith("no number of seeds up to 64 per cell suffices: ")
        assert est["cells"]["seeds_needed"].isna().all()
        assert est["cells"]["power"].iloc[0] < 0.8
    # xavier converging at epoch 2 every time: every study shows "> 20x", at least 10x
    fast = _power({10: ([2] * 10, never)})
    assert fast["seeds_needed"] == 5 and fast["reason"] is None  # min_seeds
    assert fast["cells"]["power"].iloc[0] == 1.0


def test_power_estimate_decisive_rule():
    f, lb, no = speedups._FINITE, speedups._LOWER, speedups._NONE
    cases = [
        (f, 2.0, 10.0, True),  # inside, ends included
        (f, 1.99, 10.0, False),
        (f, 2.0, 10.01, False),
        (f, 1.0, 1.99, True),  # below
        (f, 1.0, 2.0, False),
        (f, 10.01, 20.0, True),  # above
        (f, 10.0, 20.0, False),
        (f, 11.0, math.nan, True),  # above, no upper limit
        (f, math.nan, 1.5, True),  # below, no lower limit
        (lb, 10.01, math.nan, True),  # at least 10x
        (lb, 10.0, math.nan, False),
        (lb, 5.0, math.nan, False),
        (no, 3.0, 5.0, False),
    ]
    kind = np.array([c[0] for c in cases])
    lo = np.array([c[1] for c in cases])
    hi = np.array([c[2] for c in cases])
    got = power._decisive(kind, lo, hi, (2.0, 10.0))
    assert got.tolist() == [c[3] for c in cases]


def test_power_estimate_needs_two_pilot_trials_per_scheme():
    out = stats.power_estimate(_paired_table(0.5, seeds=1), "xavier", "uniform01", ["seq_len"])
    assert out["seeds_needed"] is None and out["n_pairs"] == 2 and out["n_cells"] == 2
    assert "fewer than 2 pilot trials of xavier or uniform01" in out["reason"]
    assert math.isnan(out["sd_log_ratio"])
    xavier_only = _race({10: (PILOT_A, PILOT_B)}).query("init == 'xavier'")
    none = stats.power_estimate(xavier_only, "xavier", "uniform01", ["seq_len"])
    assert none["seeds_needed"] is None and none["reason"].startswith("no cell of (seq_len")
    assert none["cells"].empty


def test_power_estimate_says_a_frozen_baseline_cannot_train():
    t = _race({10: (PILOT_A, PILOT_B), 30: (PILOT_A, PILOT_B)})
    t["outcome"] = np.where(t["init"] == "uniform01", "frozen", "converged")
    t["converged_epoch"] = t["converged_epoch"].where(t["init"] == "xavier", pd.NA)
    est = stats.power_estimate(t, "xavier", "uniform01", ["seq_len"])
    assert est["frozen_baseline"] and est["seeds_needed"] is None
    frozen = (
        "uniform01 is frozen (zero gradient at init) in every pilot trial: it cannot train, "
        "so the speedup is unbounded whatever the seeds or the budget"
    )
    assert est["text"] == est["reason"] == frozen
    assert est["n_cells"] == 2 and est["cells"]["reason"].eq(est["reason"]).all()
    # Nothing is paired or simulated, so several trials per seed are no obstacle.
    doubled = pd.concat([t, t], ignore_index=True)
    assert stats.power_estimate(doubled, "xavier", "uniform01", [])["frozen_baseline"]
    # Frozen at init but the loss exploded (outcome diverged): it still cannot train.
    exploded = t.assign(
        outcome=np.where(t["init"] == "uniform01", "diverged", "converged"),
        frozen_at_init=t["init"] == "uniform01",
    )
    assert stats.power_estimate(exploded, "xavier", "uniform01", ["seq_len"])["text"] == frozen
    # Diverged without the frozen diagnosis: an ordinary failure, simulated as usual.
    plain = exploded.assign(frozen_at_init=False)
    assert not stats.power_estimate(plain, "xavier", "uniform01", ["seq_len"])["frozen_baseline"]
    # One uniform01 trial that is not frozen: the estimate is simulated as usual.
    t.loc[t.index[1], "outcome"] = "censored"
    assert not stats.power_estimate(t, "xavier", "uniform01", ["seq_len"])["frozen_baseline"]


def test_power_estimate_refuses_bad_settings():
    t = _race({10: (PILOT_A, PILOT_B)})
    cases: list[tuple[dict[str, Any], str]] = [
        ({"claimed": (10.0, 2.0)}, "0 < low < high"),
        ({"power": 1.0}, "0 < power < 1"),
        ({"min_seeds": 1}, "2 <= min_seeds <= max_seeds"),
        ({"min_seeds": 10, "max_seeds": 8}, "2 <= min_seeds <= max_seeds"),
        ({"n_sim": 0}, "n_sim >= 1"),
    ]
    for kw, match in cases:
        with pytest.raises(ValueError, match=match):
            stats.power_estimate(t, "xavier", "uniform01", ["seq_len"], **kw)
