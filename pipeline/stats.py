"""Statistics of epochs-to-convergence: Kaplan-Meier medians, speedups, power.

Epochs-to-convergence is a time-to-event measurement. A trial's **duration** is its
converged epoch if it converged (before any divergence), else its ``max_epochs``; its
**event** is "converged". Trials that diverged or never reached the target are censored
at the budget: we know only that they needed more than ``max_epochs`` epochs. So

- medians are Kaplan-Meier medians (``scipy.stats.ecdf`` on right-censored data) with
  a confidence interval read off the KM log-log confidence band, and a median that the
  curve never reaches is reported as "> budget", never as a number;
- a speedup of scheme A over scheme B is ``median_B / median_A`` with a bootstrap
  interval; when B's median is not reached the speedup is only a lower bound;
- a paired speedup uses the replicate seeds (members of a pack share one data stream,
  so A and B with the same seed saw the same batches): the geometric mean of per-seed
  ratios, with a t-interval of the mean log ratio.

Device types are never pooled: every table here groups by ``device_type`` as well.

The functions on tables read these columns of :data:`pipeline.results.TRIAL_COLUMNS`:
``converged_epoch``, ``diverged_epoch`` (optional), ``max_epochs``, ``device_type``,
``seed`` (pairing), the scheme column and the ``by`` columns. This module is pure
numpy/scipy/pandas; it knows nothing of Optuna, Ray or MLflow.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as sps

_HALF = 0.5 + 1e-9
"""S(t) <= 0.5 with room for rounding (a product like 7/8 * 6/7 * ... landing on 0.5)."""


# -- Kaplan-Meier median --------------------------------------------------------------------


@dataclass(frozen=True)
class KMMedian:
    """A Kaplan-Meier median of durations, with its confidence interval."""

    n: int
    """Trials."""
    events: int
    """Trials that converged (the rest are censored at their duration)."""
    median: float | None
    """First time with S(t) <= 0.5; None = not reached within the budget."""
    lo: float | None
    """Lower confidence limit: first time the KM lower band is <= 0.5 (None = none)."""
    hi: float | None
    """Upper confidence limit: first time the KM upper band is <= 0.5 (None = beyond the
    budget, unbounded)."""
    budget: float
    """The largest duration observed: the censoring point (NaN when there are no trials)."""

    @property
    def text(self) -> str:
        """``"7 [5, 9]"``; ``"7 [5, > 40]"`` (upper limit beyond the budget); ``"> 40"``
        (median not reached); ``"n/a (no trials)"``."""
        if self.n == 0:
            return "n/a (no trials)"
        if self.median is None:
            return f"> {self.budget:g}"
        lo = "?" if self.lo is None else f"{self.lo:g}"
        hi = f"> {self.budget:g}" if self.hi is None else f"{self.hi:g}"
        return f"{self.median:g} [{lo}, {hi}]"


def _as_arrays(durations: npt.ArrayLike, events: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    d = np.asarray(durations, dtype=float).reshape(-1)
    e = np.asarray(events, dtype=bool).reshape(-1)
    if d.shape != e.shape:
        raise ValueError(
            f"durations and events must have the same length, but got {d.size} and {e.size}"
        )
    if not np.all(np.isfinite(d)) or np.any(d <= 0):
        raise ValueError(f"durations must be finite and > 0 (epochs), but got {d.tolist()}")
    return d, e


def _first_at_or_below_half(times: np.ndarray, surv: np.ndarray) -> float | None:
    below = surv <= _HALF
    return float(times[np.argmax(below)]) if below.any() else None


def km_median(durations: npt.ArrayLike, events: npt.ArrayLike, alpha: float = 0.05) -> KMMedian:
    """Kaplan-Meier median of right-censored durations.

    Args:
        durations: epochs to convergence, or the censoring epoch (the budget) for a
            trial that did not converge.
        events: True where the trial converged at its duration.
        alpha: 1 - confidence level of the interval.

    Returns:
        The median (first t with S(t) <= 0.5) and its interval from the log-log
        pointwise confidence band of S (``scipy.stats.ecdf(...).sf.confidence_interval``):
        lo = first t where the lower band is <= 0.5, hi = first t where the upper band is.
        Where the log-log band is undefined (S = 1 before any event, S = 0 after the last
        one) the lower band is taken as S itself and the upper band as "not <= 0.5".
    """
    d, e = _as_arrays(durations, events)
    n, k = int(d.size), int(e.sum())
    budget = float(d.max()) if n else math.nan
    if k == 0:
        return KMMedian(n=n, events=0, median=None, lo=None, hi=None, budget=budget)
    sf = sps.ecdf(sps.CensoredData.right_censored(d, ~e)).sf
    times, surv = sf.quantiles, sf.probabilities
    with warnings.catch_warnings():
        # scipy warns where the log-log band is undefined (S = 0 or 1); handled below.
        warnings.simplefilter("ignore", RuntimeWarning)
        band = sf.confidence_interval(1 - alpha, method="log-log")
    low = np.where(np.isnan(band.low.probabilities), surv, band.low.probabilities)
    high = np.where(np.isnan(band.high.probabilities), 1.0, band.high.probabilities)
    return KMMedian(
        n=n,
        events=k,
        median=_first_at_or_below_half(times, surv),
        lo=_first_at_or_below_half(times, low),
        hi=_first_at_or_below_half(times, high),
        budget=budget,
    )


def _km_medians_boot(
    d: np.ndarray, e: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """KM medians of ``n_boot`` resamples (with replacement) of the trials; NaN = not reached.

    The same estimator as :func:`km_median` (at-risk set at t includes trials censored at
    t), vectorized over resamples because thousands of ``scipy.stats.ecdf`` calls per
    comparison are slow; tests check it against scipy.
    """
    times, inv = np.unique(d, return_inverse=True)
    n_t = times.size
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    flat = (np.arange(n_boot)[:, None] * n_t + inv[idx]).ravel()
    size = n_boot * n_t
    total = np.bincount(flat, minlength=size).reshape(n_boot, n_t)
    deaths = np.bincount(flat, weights=e[idx].ravel().astype(float), minlength=size)
    deaths = deaths.reshape(n_boot, n_t)
    at_risk = np.cumsum(total[:, ::-1], axis=1)[:, ::-1]
    hazard = np.divide(deaths, at_risk, out=np.zeros_like(deaths), where=at_risk > 0)
    surv = np.cumprod(1.0 - hazard, axis=1)
    below = surv <= _HALF
    return np.where(below.any(axis=1), times[np.argmax(below, axis=1)], np.nan)


# -- speedups -------------------------------------------------------------------------------


def _fmt_ratio(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.2g}"


@dataclass(frozen=True)
class Speedup:
    """Speedup of scheme A over scheme B: how many times fewer epochs A needs."""

    estimate: float | None
    """median_B / median_A (paired: geometric mean of per-seed ratios); None = A's median
    not reached (or no trials), so no speedup can be stated."""
    lo: float | None
    """Lower confidence limit (None = not bounded away from 0)."""
    hi: float | None
    """Upper confidence limit (None = unbounded, always so for a lower bound)."""
    lower_bound: bool
    """True when B did not converge within its budget (in the paired case: in some pair
    used): the speedup is then more than ``estimate``, which uses B's budget."""
    n_a: int
    """Trials of A (paired: pairs given)."""
    n_b: int
    """Trials of B (paired: pairs given)."""
    n_dropped: int = 0
    """Paired only: pairs left out because A did not converge in them."""

    @property
    def text(self) -> str:
        """``"3.2x [2.1, 5.0]"``, ``"3.2x [2.1, inf]"`` (no upper limit), ``"> 5.6x"``
        (lower bound), ``"n/a (A did not converge)"``; paired estimates that dropped
        pairs say how many."""
        if self.estimate is None:
            if self.n_a == 0 or self.n_b == 0:
                return "n/a (no trials)"
            return "n/a (A did not converge)"
        if self.lower_bound:
            out = f"> {_fmt_ratio(self.estimate)}x"
        else:
            lo = "0" if self.lo is None else _fmt_ratio(self.lo)
            hi = "inf" if self.hi is None else _fmt_ratio(self.hi)
            out = f"{_fmt_ratio(self.estimate)}x [{lo}, {hi}]"
        if self.n_dropped:
            out += f" ({self.n_dropped} of {self.n_a} pairs dropped: A did not converge)"
        return out


def _check_boot(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"`n_boot >= 1` must hold, but got {n_boot=}")
    if not 0 < alpha < 1:
        raise ValueError(f"`0 < alpha < 1` must hold, but got {alpha=}")


def speedup(
    a_durations: npt.ArrayLike,
    a_events: npt.ArrayLike,
    b_durations: npt.ArrayLike,
    b_events: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Speedup:
    """Speedup of A over B from their KM medians, with a percentile bootstrap interval.

    The bootstrap resamples trials within each group and recomputes both KM medians. A
    resample where a median is not reached still bounds the ratio, and is counted with
    the conservative bound on each side: for the lower limit, B not reached counts as
    ``budget_B / median_A*`` and A not reached as 0; for the upper limit, B not reached
    counts as infinite and A not reached as ``median_B* / budget_A``. So a group that
    often fails to reach its median widens the interval instead of being ignored.

    When B's median is not reached in the data, the speedup is a lower bound:
    ``estimate = budget_B / median_A`` and ``lower_bound=True``; ``lo`` is then the
    bootstrap lower limit (at most the estimate) and ``hi`` is None. When A's median is
    not reached, there is no estimate.
    """
    _check_boot(n_boot, alpha)
    a_d, a_e = _as_arrays(a_durations, a_events)
    b_d, b_e = _as_arrays(b_durations, b_events)
    n_a, n_b = int(a_d.size), int(b_d.size)
    if n_a == 0 or n_b == 0:
        return Speedup(None, None, None, False, n_a, n_b)
    km_a, km_b = km_median(a_d, a_e, alpha), km_median(b_d, b_e, alpha)
    if km_a.median is None:
        return Speedup(None, None, None, False, n_a, n_b)
    rng = np.random.default_rng(seed)
    ma = _km_medians_boot(a_d, a_e, n_boot, rng)
    mb = _km_medians_boot(b_d, b_e, n_boot, rng)
    a_ok, b_ok = ~np.isnan(ma), ~np.isnan(mb)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_vals = np.where(a_ok, np.where(b_ok, mb, km_b.budget) / ma, 0.0)
        hi_vals = np.where(b_ok, np.where(a_ok, mb / ma, mb / km_a.budget), np.inf)
    lo_q = float(np.quantile(lo_vals, alpha / 2, method="lower"))
    lo = lo_q if lo_q > 0 else None
    if km_b.median is None:
        estimate = km_b.budget / km_a.median
        lo = None if lo is None else min(lo, estimate)
        return Speedup(estimate, lo, None, True, n_a, n_b)
    hi_q = float(np.quantile(hi_vals, 1 - alpha / 2, method="higher"))
    hi = hi_q if math.isfinite(hi_q) else None
    return Speedup(km_b.median / km_a.median, lo, hi, False, n_a, n_b)


def paired_speedup(
    a_durations: npt.ArrayLike,
    a_events: npt.ArrayLike,
    b_durations: npt.ArrayLike,
    b_events: npt.ArrayLike,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Speedup:
    """Speedup of A over B from pairs that share a replicate seed (and data stream).

    The arrays are aligned: element i of A and of B used the same seed. Per pair, the
    ratio is ``dur_B / dur_A``. Pairs where A did not converge are dropped (counted in
    ``n_dropped``). A pair where B did not converge has ``dur_B`` = B's budget, so its
    ratio is only a lower bound, and then the whole estimate is (``lower_bound=True``,
    ``hi`` None). The estimate is the geometric mean of the ratios.

    The interval is the t-interval of the mean log ratio, ``exp(mean +- t_{1-alpha/2,
    m-1} * sd / sqrt(m))`` over the m pairs used (None with fewer than two pairs), not a
    percentile bootstrap: with the 5-8 seeds a study runs per cell, the bootstrap over
    pairs covered the true ratio only 85-91% of the time for a nominal 95% (simulated
    log-normal and t3 log ratios), the t-interval 94-98%. It is also the interval that
    :func:`power_estimate` plans for. ``n_boot`` and ``seed`` are accepted for symmetry
    with :func:`speedup` and unused.
    """
    _check_boot(n_boot, alpha)
    a_d, a_e = _as_arrays(a_durations, a_events)
    b_d, b_e = _as_arrays(b_durations, b_events)
    if a_d.size != b_d.size:
        raise ValueError(
            f"paired arrays must have the same length, but got {a_d.size} (A) and {b_d.size} (B)"
        )
    n = int(a_d.size)
    keep = a_e
    n_dropped = n - int(keep.sum())
    if not keep.any():
        return Speedup(None, None, None, False, n, n, n_dropped)
    logs = np.log(b_d[keep] / a_d[keep])
    lower_bound = bool((~b_e[keep]).any())
    estimate = float(np.exp(logs.mean()))
    lo: float | None = None
    hi: float | None = None
    if logs.size >= 2:
        half = sps.t.ppf(1 - alpha / 2, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size)
        lo, hi = float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))
    if lower_bound:
        return Speedup(
            estimate, None if lo is None else min(lo, estimate), None, True, n, n, n_dropped
        )
    return Speedup(estimate, lo, hi, False, n, n, n_dropped)


# -- tables ---------------------------------------------------------------------------------


def time_to_event(trials: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Durations and events of trials rows.

    event = converged (before any divergence); duration = ``converged_epoch`` for an
    event, else ``max_epochs`` (diverged and never-converged trials are censored at the
    budget).
    """
    conv = pd.to_numeric(trials["converged_epoch"]).astype("Float64")
    event = conv.notna()
    if "diverged_epoch" in trials:
        div = pd.to_numeric(trials["diverged_epoch"]).astype("Float64")
        event &= div.isna() | (conv <= div).fillna(False)
    event_arr = event.to_numpy(dtype=bool)
    budget = trials["max_epochs"].to_numpy(dtype=float)
    duration = np.where(event_arr, conv.to_numpy(dtype=float, na_value=np.nan), budget)
    return duration, event_arr


def _keys(by: Sequence[str]) -> list[str]:
    return [*by, "device_type"] if "device_type" not in by else list(by)


def _groups(trials: pd.DataFrame, keys: list[str]) -> list[tuple[tuple[Hashable, ...], Any]]:
    if trials.empty:
        return []
    return [
        (k if isinstance(k, tuple) else (k,), g)
        for k, g in trials.groupby(keys, dropna=False, sort=True)
    ]


SUMMARY_COLUMNS = [
    "n",
    "converged_rate",
    "diverged_rate",
    "censored_rate",
    "km_median",
    "km_lo",
    "km_hi",
    "median_text",
]
""":func:`group_summary` columns after the group keys."""


def _with_key_dtypes(out: pd.DataFrame, trials: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Give the group-key columns of a result the dtypes they have in ``trials``."""
    return out.astype({k: trials[k].dtype for k in keys if k in trials})


def _nan(x: float | None) -> float:
    return math.nan if x is None else x


def group_summary(trials: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Outcome rates and KM median per group of ``by`` and ``device_type``.

    Device types are always a group key (CPU and CUDA runs are never pooled). Missing
    values in ``by`` columns (e.g. ``init_recurrent``) form their own group.

    Returns:
        Columns ``*by, device_type, n, converged_rate, diverged_rate, censored_rate,
        km_median, km_lo, km_hi, median_text``; ``km_*`` are NaN where not reached or
        unbounded, ``median_text`` is :attr:`KMMedian.text`.
    """
    keys = _keys(by)
    rows = []
    for key, g in _groups(trials, keys):
        d, e = time_to_event(g)
        km = km_median(d, e)
        diverged = (
            g["diverged_epoch"].notna().to_numpy(dtype=bool)
            if "diverged_epoch" in g
            else np.zeros(len(g), dtype=bool)
        )
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "n": len(g),
                "converged_rate": float(e.mean()),
                "diverged_rate": float(diverged.mean()),
                "censored_rate": float(1 - e.mean()),
                "km_median": _nan(km.median),
                "km_lo": _nan(km.lo),
                "km_hi": _nan(km.hi),
                "median_text": km.text,
            }
        )
    out = _with_key_dtypes(pd.DataFrame(rows, columns=[*keys, *SUMMARY_COLUMNS]), trials, keys)
    return out.astype({"n": "int64", "median_text": "string"}).astype(
        {c: "float64" for c in SUMMARY_COLUMNS[1:7]}
    )


SPEEDUP_COLUMNS = [
    "a",
    "b",
    "n_a",
    "n_b",
    "speedup",
    "lo",
    "hi",
    "lower_bound",
    "text",
    "paired",
    "paired_lo",
    "paired_hi",
    "paired_lower_bound",
    "paired_text",
    "n_pairs",
    "paired_dropped",
]
""":func:`speedup_table` columns after the group keys."""

_FACTORS = [
    "task",
    "cell",
    "init",
    "init_recurrent",
    "scale",
    "seq_len",
    "hidden",
    "optimizer",
    "lr",
    "clip",
    "batch_size",
    "batches_per_epoch",
    "max_epochs",
    "target_loss",
    "divergence_factor",
    "val_size",
    "data_seed",
    "corpus",
]
"""Trial settings that may vary within a cell and break the seed pairing."""


def _pairs(ta: pd.DataFrame, tb: pd.DataFrame, label: str) -> pd.DataFrame:
    """Join A and B trials of one cell on ``seed``; refuse several trials per seed."""
    for name, t in (("A", ta), ("B", tb)):
        dup = t["seed"].duplicated(keep=False)
        if dup.any():
            varying = [c for c in _FACTORS if c in t and t.loc[dup, c].nunique(dropna=False) > 1]
            raise ValueError(
                f"speedup_table: scheme {name} has several trials per seed in cell {label} "
                f"(seeds {sorted(set(t.loc[dup, 'seed'].tolist()))}); add the columns that "
                f"vary ({', '.join(varying) or 'none found'}) to `by`"
            )
    cols = ["seed", "converged_epoch", "max_epochs"]
    cols += ["diverged_epoch"] if "diverged_epoch" in ta and "diverged_epoch" in tb else []
    return ta[cols].merge(tb[cols], on="seed", suffixes=("_a", "_b"))


def _side(pairs: pd.DataFrame, suffix: str) -> pd.DataFrame:
    cols = [c for c in pairs.columns if c.endswith(suffix)]
    return pairs[cols].rename(columns={c: c.removesuffix(suffix) for c in cols})


def speedup_table(
    trials: pd.DataFrame,
    a: str,
    b: str,
    by: list[str],
    scheme_col: str = "init",
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Speedup of scheme ``a`` over scheme ``b`` in each cell of ``by`` and ``device_type``.

    Args:
        trials: the ``trials`` table (or rows of it).
        a, b: values of ``scheme_col`` to compare (A is expected to be the faster).
        by: columns that define a cell; every setting that varies between trials of one
            scheme and seed must be among them.
        scheme_col: the column naming the scheme (``init``, ``init_recurrent``, ...).
        n_boot, seed: bootstrap resamples and their seed (the same in every cell).

    Returns:
        One row per cell where both schemes have trials: ``*by, device_type, a, b, n_a,
        n_b, speedup, lo, hi, lower_bound, text`` (:func:`speedup`), ``paired, paired_lo,
        paired_hi, paired_lower_bound, paired_text`` (:func:`paired_speedup` on trials
        joined by ``seed``), ``n_pairs`` (joined pairs) and ``paired_dropped`` (pairs
        where A did not converge). Missing numbers are NaN.

    Raises:
        ValueError: a scheme has several trials for one seed in a cell.
    """
    keys = _keys(by)
    rows = []
    for key, g in _groups(trials, keys):
        ta, tb = g[g[scheme_col] == a], g[g[scheme_col] == b]
        if ta.empty or tb.empty:
            continue
        label = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
        s = speedup(*time_to_event(ta), *time_to_event(tb), n_boot=n_boot, seed=seed)
        pairs = _pairs(ta, tb, label)
        p = paired_speedup(
            *time_to_event(_side(pairs, "_a")),
            *time_to_event(_side(pairs, "_b")),
            n_boot=n_boot,
            seed=seed,
        )
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "a": a,
                "b": b,
                "n_a": s.n_a,
                "n_b": s.n_b,
                "speedup": _nan(s.estimate),
                "lo": _nan(s.lo),
                "hi": _nan(s.hi),
                "lower_bound": s.lower_bound,
                "text": s.text,
                "paired": _nan(p.estimate),
                "paired_lo": _nan(p.lo),
                "paired_hi": _nan(p.hi),
                "paired_lower_bound": p.lower_bound,
                "paired_text": p.text if len(pairs) else "n/a (no pairs)",
                "n_pairs": len(pairs),
                "paired_dropped": p.n_dropped,
            }
        )
    out = _with_key_dtypes(pd.DataFrame(rows, columns=[*keys, *SPEEDUP_COLUMNS]), trials, keys)
    dtypes = {c: "float64" for c in ("speedup", "lo", "hi", "paired", "paired_lo", "paired_hi")}
    dtypes |= {c: "int64" for c in ("n_a", "n_b", "n_pairs", "paired_dropped")}
    dtypes |= {c: "bool" for c in ("lower_bound", "paired_lower_bound")}
    dtypes |= {c: "string" for c in ("a", "b", "text", "paired_text")}
    return out.astype(dtypes)


def power_estimate(
    trials: pd.DataFrame,
    a: str,
    b: str,
    by: list[str],
    scheme_col: str = "init",
    target_ratio: float = 5.0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Seeds per cell needed to tell speedups a factor ``target_ratio`` apart, from a pilot.

    Per cell of ``by`` (and ``device_type``), A and B trials are joined on ``seed`` and
    pairs where A converged give log ratios ``r = log(dur_B / dur_A)`` (a pair where B
    did not converge contributes its lower bound, so the spread is then approximate).
    The pooled within-cell standard deviation is

        sd = sqrt( sum_cells sum_i (r_i - mean_cell)^2 / (N - K) )

    over the N pairs of the K cells with at least two pairs (cell means removed, so
    differences between cells do not count as noise). The seeds needed per cell is the
    smallest n >= 2 with

        t_{1 - alpha/2, n - 1} * sd / sqrt(n) < log(target_ratio) / 2,

    i.e. the (1 - alpha) t-interval of the mean log speedup spans less than a factor
    ``target_ratio`` (5 by default: it can tell 2x from 10x).

    Returns:
        ``{"sd_log_ratio", "n_pairs", "seeds_needed", "n_cells", "censored_pairs",
        "half_width"}``: ``sd_log_ratio`` and ``seeds_needed`` are None when fewer than
        two pairs share a cell; ``half_width`` is the target ``log(target_ratio) / 2``.
    """
    if not target_ratio > 1:
        raise ValueError(f"`target_ratio > 1` must hold, but got {target_ratio=}")
    keys = _keys(by)
    ss, n_pairs, dof, cells, censored = 0.0, 0, 0, 0, 0
    for key, g in _groups(trials, keys):
        ta, tb = g[g[scheme_col] == a], g[g[scheme_col] == b]
        if ta.empty or tb.empty:
            continue
        label = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))
        pairs = _pairs(ta, tb, label)
        a_d, a_e = time_to_event(_side(pairs, "_a"))
        b_d, b_e = time_to_event(_side(pairs, "_b"))
        keep = a_e
        r = np.log(b_d[keep] / a_d[keep])
        n_pairs += int(r.size)
        censored += int((~b_e[keep]).sum())
        if r.size >= 2:
            ss += float(((r - r.mean()) ** 2).sum())
            dof += int(r.size) - 1
            cells += 1
    half = math.log(target_ratio) / 2
    out: dict[str, Any] = {
        "sd_log_ratio": None,
        "n_pairs": n_pairs,
        "seeds_needed": None,
        "n_cells": cells,
        "censored_pairs": censored,
        "half_width": half,
    }
    if dof < 1:
        return out
    sd = math.sqrt(ss / dof)
    out["sd_log_ratio"] = sd
    out["seeds_needed"] = _seeds_needed(sd, half, alpha)
    return out


def _seeds_needed(sd: float, half: float, alpha: float) -> int:
    """Smallest n >= 2 with t_{1-alpha/2, n-1} * sd / sqrt(n) < half."""
    n = max(2, math.ceil((sps.norm.ppf(1 - alpha / 2) * sd / half) ** 2))
    while sps.t.ppf(1 - alpha / 2, n - 1) * sd / math.sqrt(n) >= half:
        n += 1
    return n
