"""Statistics on synthetic data with known answers (pipeline.stats)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from pipeline import stats


def make_trials(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """A minimal ``trials`` table: the columns pipeline.stats reads, typed as in results."""
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
    fast = stats._km_medians_boot(d, e, n_boot, np.random.default_rng(seed))
    idx = np.random.default_rng(seed).integers(0, d.size, size=(n_boot, d.size))
    for row, got in zip(idx, fast, strict=True):
        want = stats.km_median(d[row], e[row]).median
        assert (math.isnan(got) and want is None) or got == want


# -- speedups -------------------------------------------------------------------------------


def test_speedup_against_all_censored_is_a_lower_bound():
    a_d, a_e = [3, 4, 4, 5, 6], [True] * 5
    s = stats.speedup(a_d, a_e, [40] * 5, [False] * 5, n_boot=500)
    assert s.lower_bound
    assert s.estimate == pytest.approx(40 / 4)
    assert s.hi is None
    assert s.lo is not None and s.lo <= 40 / 4
    assert s.text == "> 10.0x"


def test_speedup_when_a_never_converges_is_not_a_number():
    s = stats.speedup([40] * 5, [False] * 5, [3, 4, 5], [True] * 3, n_boot=200)
    assert (s.estimate, s.lo, s.hi, s.lower_bound) == (None, None, None, False)
    assert s.text == "n/a (A did not converge)"
    assert stats.speedup([], [], [3], [True]).text == "n/a (no trials)"


def test_speedup_bootstrap_interval_contains_true_ratio():
    # A and B exponential with medians 4 and 12 epochs (true ratio 3), 40 trials each,
    # censored at a budget of 40 epochs.
    rng = np.random.default_rng(12345)
    budget = 40.0
    a = rng.exponential(4 / math.log(2), 40)
    b = rng.exponential(12 / math.log(2), 40)
    s = stats.speedup(np.minimum(a, budget), a < budget, np.minimum(b, budget), b < budget, seed=1)
    assert not s.lower_bound
    assert s.lo is not None and s.hi is not None and s.estimate is not None
    assert s.lo <= 3.0 <= s.hi
    assert s.lo < s.estimate < s.hi
    assert s.text == f"{s.estimate:.1f}x [{s.lo:.1f}, {s.hi:.1f}]"
    again = stats.speedup(
        np.minimum(a, budget), a < budget, np.minimum(b, budget), b < budget, seed=1
    )
    assert again == s  # reproducible with a fixed seed


def test_paired_speedup_exact_ratio():
    a = np.array([2, 3, 4, 5, 6, 7, 8, 9], dtype=float)
    s = stats.paired_speedup(a, np.ones(8, bool), 3 * a, np.ones(8, bool), n_boot=500)
    assert s.estimate == pytest.approx(3.0)
    assert s.lo == pytest.approx(3.0) and s.hi == pytest.approx(3.0)
    assert not s.lower_bound and s.n_dropped == 0
    assert s.text == "3.0x [3.0, 3.0]"


def test_paired_speedup_censored_b_is_a_lower_bound_and_censored_a_is_dropped():
    a_d = np.array([2, 3, 4, 5, 40], dtype=float)
    a_e = np.array([True, True, True, True, False])
    b_d = np.array([6, 9, 40, 15, 40], dtype=float)  # seed 2: B censored at 40
    b_e = np.array([True, True, False, True, False])
    s = stats.paired_speedup(a_d, a_e, b_d, b_e, n_boot=500)
    assert s.lower_bound and s.hi is None
    assert s.n_dropped == 1 and s.n_a == s.n_b == 5
    assert s.estimate == pytest.approx(math.exp(np.log([3, 3, 10, 3]).mean()))
    assert s.text.startswith("> ") and "1 of 5 pairs dropped" in s.text
    with pytest.raises(ValueError, match="same length"):
        stats.paired_speedup([1, 2], [True, True], [1], [True])


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
    assert out["paired"].between(1.5, 6).all()
    assert str(out["lower_bound"].dtype) == "bool"
    # a cell where one scheme is missing gives no row
    only_a = t[~((t["seq_len"] == 30) & (t["init"] == "uniform01"))]
    assert len(stats.speedup_table(only_a, "xavier", "uniform01", ["seq_len"], n_boot=50)) == 2


def test_speedup_table_refuses_several_trials_per_seed():
    t = _paired_table(0.3)
    with pytest.raises(ValueError, match=r"several trials per seed.*seq_len"):
        stats.speedup_table(t, "xavier", "uniform01", [], n_boot=50)


def test_power_estimate_needs_more_seeds_for_noisier_data():
    quiet = stats.power_estimate(_paired_table(0.2), "xavier", "uniform01", ["seq_len"])
    noisy = stats.power_estimate(_paired_table(1.5), "xavier", "uniform01", ["seq_len"])
    assert quiet["n_pairs"] == noisy["n_pairs"] == 16
    assert quiet["sd_log_ratio"] < noisy["sd_log_ratio"]
    assert quiet["seeds_needed"] < noisy["seeds_needed"]
    # the formula: smallest n with t_{0.975, n-1} * sd / sqrt(n) < log(5) / 2
    n, sd = noisy["seeds_needed"], noisy["sd_log_ratio"]
    from scipy import stats as sps

    half = math.log(5) / 2
    assert sps.t.ppf(0.975, n - 1) * sd / math.sqrt(n) < half
    assert sps.t.ppf(0.975, n - 2) * sd / math.sqrt(n - 1) >= half or n == 2


def test_power_estimate_not_estimable_with_one_pair_per_cell():
    out = stats.power_estimate(_paired_table(0.5, seeds=1), "xavier", "uniform01", ["seq_len"])
    assert out["sd_log_ratio"] is None and out["seeds_needed"] is None
    assert out["n_pairs"] == 2
