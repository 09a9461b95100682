"""Statistics of epochs-to-convergence: Kaplan-Meier medians, speedups, power.

Epochs-to-convergence is a time-to-event measurement. A trial's **duration** is its
converged epoch if it converged (before any divergence), else its ``max_epochs``; its
**event** is "converged". Trials that diverged or never reached the target are censored
at the budget: we know only that they needed more than ``max_epochs`` epochs. So

- medians are Kaplan-Meier medians (``scipy.stats.ecdf`` on right-censored data) with
  a confidence interval read off the KM log-log confidence band, and a median that the
  curve never reaches is reported as "> budget", never as a number;
- a speedup of scheme A over scheme B is ``median_B / median_A`` with a bootstrap
  interval; when B's median is not reached the speedup is only a lower bound, and the
  number to quote is the interval's lower limit (:attr:`Speedup.lo`, "at least lo");
- a paired comparison uses the replicate seeds (members of a pack share one data
  stream, so A and B with the same seed saw the same batches) and keeps every pair: an
  exact sign test on which scheme converged first, plus the geometric mean of per-seed
  ratios over the pairs where both converged (labelled so), with a t-interval;
- a power estimate simulates studies of n seeds from the pilot's trials, censoring
  included, and runs the table's own speedup estimator on them.

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
from typing import Any, Literal

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


def _km_median_codes(codes: np.ndarray, times: np.ndarray) -> np.ndarray:
    """KM medians of many samples at once; NaN = not reached.

    Args:
        codes: ``(R, m)``: row r is a sample of m trials, each coded ``2 * i + event``
            with ``i`` its duration's index into ``times`` and ``event`` 1 if it converged.
        times: the sorted distinct durations.

    Returns:
        ``(R,)``: per row, the same estimator as :func:`km_median` (the at-risk set at t
        includes trials censored at t).
    """
    n_rows, n_t = codes.shape[0], times.size
    flat = (np.arange(n_rows)[:, None] * (2 * n_t) + codes).ravel()
    counts = np.bincount(flat, minlength=n_rows * 2 * n_t).reshape(n_rows, n_t, 2)
    deaths = counts[:, :, 1].astype(float)
    total = counts[:, :, 0] + counts[:, :, 1]  # (faster than counts.sum(axis=2))
    at_risk = np.cumsum(total[:, ::-1], axis=1)[:, ::-1]
    hazard = np.divide(deaths, at_risk, out=np.zeros_like(deaths), where=at_risk > 0)
    surv = np.cumprod(1.0 - hazard, axis=1)
    below = surv <= _HALF
    return np.where(below.any(axis=1), times[np.argmax(below, axis=1)], np.nan)


def _km_medians_boot(
    d: np.ndarray, e: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """KM medians of ``n_boot`` resamples (with replacement) of the trials; NaN = not reached.

    The same estimator as :func:`km_median`, vectorized over resamples because thousands
    of ``scipy.stats.ecdf`` calls per comparison are slow; tests check it against scipy.
    """
    times, inv = np.unique(d, return_inverse=True)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    return _km_median_codes(2 * inv[idx] + e[idx], times)


# -- speedups -------------------------------------------------------------------------------


def _fmt_ratio(x: float) -> str:
    return f"{x:.1f}" if x >= 1 else f"{x:.2g}"


SpeedupKind = Literal["finite", "lower_bound", "none"]
"""What a :class:`Speedup` estimate is: a number with a two-sided interval (``finite``),
a lower bound because B's median was not reached (``lower_bound``), or nothing because
A's median was not reached or a group has no trials (``none``)."""

_FINITE, _LOWER, _NONE = 0, 1, 2
"""Codes of the kinds in vectorized code."""


@dataclass(frozen=True)
class Speedup:
    """Speedup of scheme A over scheme B: how many times fewer epochs A needs.

    Always ``lo <= estimate``, and ``estimate <= hi`` where ``hi`` is given.
    """

    estimate: float | None
    """median_B / median_A; for a lower bound budget_B / median_A (a point, not a
    confidence bound); None = A's median not reached (or no trials)."""
    lo: float | None
    """Lower limit of the (1 - alpha) percentile bootstrap interval, i.e. a one-sided
    (1 - alpha/2) confidence lower bound (None = not bounded away from 0). For a lower
    bound this, not ``estimate``, is what a verdict may quote as "at least lo"."""
    hi: float | None
    """Upper confidence limit (None = unbounded, always so for a lower bound)."""
    lower_bound: bool
    """True when B's median was not reached within its budget: the speedup is then more
    than ``estimate``, which uses B's budget."""
    n_a: int
    """Trials of A."""
    n_b: int
    """Trials of B."""
    alpha: float = 0.05
    """1 - confidence level of the interval."""

    @property
    def kind(self) -> SpeedupKind:
        """``"finite"``, ``"lower_bound"`` or ``"none"`` (see :data:`SpeedupKind`)."""
        if self.estimate is None:
            return "none"
        return "lower_bound" if self.lower_bound else "finite"

    @property
    def text(self) -> str:
        """``"3.2x [2.1, 5.0]"``, ``"3.2x [2.1, inf]"`` (no upper limit), ``"> 5.6x (95%
        CI lower limit 3.1x)"`` (lower bound), ``"n/a (A did not converge)"``."""
        if self.estimate is None:
            if self.n_a == 0 or self.n_b == 0:
                return "n/a (no trials)"
            return "n/a (A did not converge)"
        lo = "0" if self.lo is None else _fmt_ratio(self.lo)
        if self.lower_bound:
            return f"> {_fmt_ratio(self.estimate)}x ({1 - self.alpha:.0%} CI lower limit {lo}x)"
        hi = "inf" if self.hi is None else _fmt_ratio(self.hi)
        return f"{_fmt_ratio(self.estimate)}x [{lo}, {hi}]"


def _check_boot(n_boot: int, alpha: float) -> None:
    if n_boot < 1:
        raise ValueError(f"`n_boot >= 1` must hold, but got {n_boot=}")
    if not 0 < alpha < 1:
        raise ValueError(f"`0 < alpha < 1` must hold, but got {alpha=}")


def _speedup_rows(
    med_a: np.ndarray,
    med_b: np.ndarray,
    budget_a: np.ndarray,
    budget_b: np.ndarray,
    boot_a: np.ndarray,
    boot_b: np.ndarray,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The speedup estimator of :func:`speedup`, for S studies at once.

    Args:
        med_a, med_b: ``(S,)`` KM medians of A and B, NaN = not reached.
        budget_a, budget_b: ``(S,)`` largest durations (the censoring points).
        boot_a, boot_b: ``(S, n_boot)`` bootstrap KM medians, NaN = not reached.
        alpha: 1 - confidence level.

    Returns:
        ``kind`` (codes ``_FINITE``, ``_LOWER``, ``_NONE``), ``estimate`` (NaN for none),
        ``lo`` (NaN = not bounded away from 0) and ``hi`` (NaN = unbounded), each ``(S,)``;
        ``lo <= estimate <= hi`` wherever they are numbers.
    """
    a_ok, b_ok = ~np.isnan(boot_a), ~np.isnan(boot_b)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo_vals = np.where(a_ok, np.where(b_ok, boot_b, budget_b[:, None]) / boot_a, 0.0)
        hi_vals = np.where(
            b_ok, np.where(a_ok, boot_b / boot_a, boot_b / budget_a[:, None]), np.inf
        )
        lo_q = np.quantile(lo_vals, alpha / 2, axis=1, method="lower")
        hi_q = np.quantile(hi_vals, 1 - alpha / 2, axis=1, method="higher")
        kind = np.where(np.isnan(med_a), _NONE, np.where(np.isnan(med_b), _LOWER, _FINITE))
        estimate = np.where(kind == _LOWER, budget_b, med_b) / med_a
    estimate = np.where(kind == _NONE, np.nan, estimate)
    lo = np.where((lo_q > 0) & (kind != _NONE), np.minimum(lo_q, estimate), np.nan)
    hi = np.where(np.isfinite(hi_q) & (kind == _FINITE), np.maximum(hi_q, estimate), np.nan)
    return kind, estimate, lo, hi


def _none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


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

    ``lo`` is the ``alpha/2`` quantile of those ratios: the lower end of the (1 - alpha)
    percentile interval, equivalently a one-sided (1 - alpha/2) confidence lower bound.
    It is clipped to at most ``estimate`` (and ``hi`` to at least it).

    When B's median is not reached in the data, the speedup is a lower bound
    (``kind == "lower_bound"``, ``lower_bound=True``, ``hi`` None): ``estimate =
    budget_B / median_A`` is then only a point (what the ratio would be were B to
    converge at its budget), and **``lo`` is the confidence bound a verdict may quote as
    "at least lo"**. When A's median is not reached there is no estimate (``kind ==
    "none"``).

    Args:
        a_durations, a_events, b_durations, b_events: per-trial durations and events of
            A and B (see :func:`km_median`).
        n_boot: bootstrap resamples.
        seed: their random seed.
        alpha: 1 - confidence level.
    """
    _check_boot(n_boot, alpha)
    a_d, a_e = _as_arrays(a_durations, a_events)
    b_d, b_e = _as_arrays(b_durations, b_events)
    n_a, n_b = int(a_d.size), int(b_d.size)
    if n_a == 0 or n_b == 0:
        return Speedup(None, None, None, False, n_a, n_b, alpha)
    km_a, km_b = km_median(a_d, a_e, alpha), km_median(b_d, b_e, alpha)
    if km_a.median is None:
        return Speedup(None, None, None, False, n_a, n_b, alpha)
    rng = np.random.default_rng(seed)
    ma = _km_medians_boot(a_d, a_e, n_boot, rng)
    mb = _km_medians_boot(b_d, b_e, n_boot, rng)
    kind, est, lo, hi = _speedup_rows(
        np.array([km_a.median]),
        np.array([_nan(km_b.median)]),
        np.array([km_a.budget]),
        np.array([km_b.budget]),
        ma[None, :],
        mb[None, :],
        alpha,
    )
    return Speedup(
        float(est[0]), _none(lo[0]), _none(hi[0]), bool(kind[0] == _LOWER), n_a, n_b, alpha
    )


# -- paired comparisons ---------------------------------------------------------------------


@dataclass(frozen=True)
class PairedComparison:
    """A against B over pairs that share a replicate seed: who converged first, and by how much.

    Every pair counts in the sign test; the ratio uses only the pairs where both converged.
    """

    n_pairs: int
    """Pairs given."""
    a_first: int
    """Pairs where A converged and B had not yet (B censored at or after A's epoch, or B
    converged at a later epoch)."""
    b_first: int
    """Pairs where B converged first (the same rule with A and B swapped)."""
    ties: int
    """The rest: both censored (whatever their budgets), both converged at the same epoch,
    or one converged after the other was censored at an earlier budget (order unknown)."""
    sign_p: float
    """Two-sided exact sign test of ``a_first`` out of ``a_first + b_first`` (p = 0.5,
    ties left out); 1.0 when every pair is tied."""
    n_both: int
    """Pairs where both converged: the ones the ratio is over."""
    ratio_both_converged: float | None
    """Geometric mean of ``epochs_B / epochs_A`` over the ``n_both`` pairs (None = none)."""
    ratio_lo: float | None
    """Lower limit of its t-interval (None with fewer than two such pairs)."""
    ratio_hi: float | None
    """Upper limit of its t-interval (None with fewer than two such pairs)."""

    def describe(self, a: str = "A", b: str = "B") -> str:
        """The comparison in words, naming the schemes ``a`` and ``b``.

        ``"A first in 7 of 10 pairs (B first in 1, 2 tied), sign test p=0.07; 2.3x [1.4,
        3.8] over the 5 pairs where both converged"``; ``"n/a (no pairs)"``.
        """
        if self.n_pairs == 0:
            return "n/a (no pairs)"
        s = "" if self.n_pairs == 1 else "s"
        out = (
            f"{a} first in {self.a_first} of {self.n_pairs} pair{s} ({b} first in "
            f"{self.b_first}, {self.ties} tied), sign test p={self.sign_p:.2g}; "
        )
        if self.ratio_both_converged is None:
            return out + "no pair where both converged"
        ratio = f"{_fmt_ratio(self.ratio_both_converged)}x"
        if self.ratio_lo is None or self.ratio_hi is None:
            return out + f"{ratio} in the 1 pair where both converged"
        ci = f"[{_fmt_ratio(self.ratio_lo)}, {_fmt_ratio(self.ratio_hi)}]"
        return out + f"{ratio} {ci} over the {self.n_both} pairs where both converged"

    @property
    def text(self) -> str:
        """:meth:`describe` with the schemes called A and B."""
        return self.describe()


def paired_comparison(
    a_durations: npt.ArrayLike,
    a_events: npt.ArrayLike,
    b_durations: npt.ArrayLike,
    b_events: npt.ArrayLike,
    *,
    alpha: float = 0.05,
) -> PairedComparison:
    """Compare A and B over pairs that share a replicate seed (and data stream).

    The arrays are aligned: element i of A and of B used the same seed. No pair is
    dropped. Per pair, A is first if A converged and either B converged at a later epoch
    or B was censored at an epoch >= A's (B had not converged by then); B first likewise;
    otherwise the pair is tied (both censored, equal epochs, or one converged after the
    other's earlier censoring, when the order is unknown). With equal budgets this is
    "A converged, and B did not or later".

    The sign test is ``scipy.stats.binomtest(a_first, a_first + b_first, 0.5)``,
    two-sided. The ratio ``epochs_B / epochs_A`` is averaged (geometric mean) over the
    pairs where both converged only, with the t-interval of the mean log ratio,
    ``exp(mean +- t_{1-alpha/2, m-1} * sd / sqrt(m))`` for m >= 2 such pairs: with the
    5-8 seeds a study runs per cell, a bootstrap over pairs covered the true ratio only
    85-91% of the time for a nominal 95% (simulated log-normal and t3 log ratios), the
    t-interval 94-98%. That ratio is conditional on both converging (it leaves out the
    pairs where either scheme failed), so it is not the speedup: read it with the sign
    test, which counts those pairs.

    Args:
        a_durations, a_events, b_durations, b_events: per-pair durations and events.
        alpha: 1 - confidence level of the ratio's interval.

    Raises:
        ValueError: the arrays differ in length, or bad durations or ``alpha``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"`0 < alpha < 1` must hold, but got {alpha=}")
    a_d, a_e = _as_arrays(a_durations, a_events)
    b_d, b_e = _as_arrays(b_durations, b_events)
    if a_d.size != b_d.size:
        raise ValueError(
            f"paired arrays must have the same length, but got {a_d.size} (A) and {b_d.size} (B)"
        )
    a_first = a_e & np.where(b_e, a_d < b_d, a_d <= b_d)
    b_first = b_e & np.where(a_e, b_d < a_d, b_d <= a_d)
    n_a_first, n_b_first = int(a_first.sum()), int(b_first.sum())
    untied = n_a_first + n_b_first
    sign_p = float(sps.binomtest(n_a_first, untied, 0.5).pvalue) if untied else 1.0
    both = a_e & b_e
    logs = np.log(b_d[both] / a_d[both])
    ratio = lo = hi = None
    if logs.size:
        ratio = float(np.exp(logs.mean()))
    if logs.size >= 2:
        half = sps.t.ppf(1 - alpha / 2, logs.size - 1) * logs.std(ddof=1) / math.sqrt(logs.size)
        lo, hi = float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))
    return PairedComparison(
        n_pairs=int(a_d.size),
        a_first=n_a_first,
        b_first=n_b_first,
        ties=int(a_d.size) - untied,
        sign_p=min(sign_p, 1.0),
        n_both=int(logs.size),
        ratio_both_converged=ratio,
        ratio_lo=lo,
        ratio_hi=hi,
    )


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
    "kind",
    "speedup",
    "lo",
    "hi",
    "lower_bound",
    "text",
    "n_pairs",
    "pairs_a_first",
    "pairs_b_first",
    "pairs_tied",
    "sign_p",
    "paired_ratio_both",
    "paired_ratio_lo",
    "paired_ratio_hi",
    "paired_n_both",
    "paired_text",
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


def _label(keys: list[str], key: tuple[Hashable, ...]) -> str:
    """``"seq_len=10, device_type='cpu'"``: a cell in messages."""
    return ", ".join(f"{k}={v!r}" for k, v in zip(keys, key, strict=True))


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
        One row per cell where both schemes have trials: ``*by, device_type``, then
        :data:`SPEEDUP_COLUMNS`:

        - ``a, b, n_a, n_b, kind, speedup, lo, hi, lower_bound, text``: :func:`speedup`
          (``kind`` is :attr:`Speedup.kind`; for a lower bound, ``lo`` is the number to
          quote as "at least");
        - ``n_pairs, pairs_a_first, pairs_b_first, pairs_tied, sign_p,
          paired_ratio_both, paired_ratio_lo, paired_ratio_hi, paired_n_both,
          paired_text``: :func:`paired_comparison` on the trials joined by ``seed`` (the
          ratio and its interval over the ``paired_n_both`` pairs where both converged;
          ``paired_text`` names the schemes).

        Missing numbers are NaN.

    Raises:
        ValueError: a scheme has several trials for one seed in a cell.
    """
    keys = _keys(by)
    rows = []
    for key, g in _groups(trials, keys):
        ta, tb = g[g[scheme_col] == a], g[g[scheme_col] == b]
        if ta.empty or tb.empty:
            continue
        label = _label(keys, key)
        s = speedup(*time_to_event(ta), *time_to_event(tb), n_boot=n_boot, seed=seed)
        pairs = _pairs(ta, tb, label)
        p = paired_comparison(
            *time_to_event(_side(pairs, "_a")), *time_to_event(_side(pairs, "_b"))
        )
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "a": a,
                "b": b,
                "n_a": s.n_a,
                "n_b": s.n_b,
                "kind": s.kind,
                "speedup": _nan(s.estimate),
                "lo": _nan(s.lo),
                "hi": _nan(s.hi),
                "lower_bound": s.lower_bound,
                "text": s.text,
                "n_pairs": p.n_pairs,
                "pairs_a_first": p.a_first,
                "pairs_b_first": p.b_first,
                "pairs_tied": p.ties,
                "sign_p": p.sign_p,
                "paired_ratio_both": _nan(p.ratio_both_converged),
                "paired_ratio_lo": _nan(p.ratio_lo),
                "paired_ratio_hi": _nan(p.ratio_hi),
                "paired_n_both": p.n_both,
                "paired_text": p.describe(a, b),
            }
        )
    out = _with_key_dtypes(pd.DataFrame(rows, columns=[*keys, *SPEEDUP_COLUMNS]), trials, keys)
    floats = ("speedup", "lo", "hi", "sign_p", "paired_ratio_both")
    dtypes = {c: "float64" for c in (*floats, "paired_ratio_lo", "paired_ratio_hi")}
    ints = ("n_a", "n_b", "n_pairs", "pairs_a_first", "pairs_b_first", "pairs_tied")
    dtypes |= {c: "int64" for c in (*ints, "paired_n_both")}
    dtypes |= {"lower_bound": "bool"}
    dtypes |= {c: "string" for c in ("a", "b", "kind", "text", "paired_text")}
    return out.astype(dtypes)


# -- power ----------------------------------------------------------------------------------

MIN_PILOT = 2
"""Pilot trials per scheme and cell below which :func:`power_estimate` does not simulate."""

_SEED_GRID = (6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64)
_CAP_CHECK_AFTER = 16
"""Past this many seeds the search first checks the cap, so hopeless cells end quickly."""

POWER_CELL_COLUMNS = [
    "n_a",
    "n_b",
    "converged_a",
    "converged_b",
    "seeds_needed",
    "power",
    "reason",
]
""":func:`power_estimate`'s ``cells`` columns after the group keys."""


@dataclass(frozen=True)
class _Arm:
    """One scheme's pilot trials in one cell, coded as in :func:`_km_median_codes`."""

    times: np.ndarray
    codes: np.ndarray
    events: np.ndarray

    @classmethod
    def of(cls, d: np.ndarray, e: np.ndarray) -> _Arm:
        times, inv = np.unique(d, return_inverse=True)
        return cls(times, 2 * inv.reshape(-1) + e, e)

    def simulate(
        self, n: int, n_sim: int, n_boot: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """KM medians ``(n_sim,)``, budgets ``(n_sim,)`` and bootstrap medians ``(n_sim,
        n_boot)`` of ``n_sim`` studies of ``n`` trials drawn from the pilot."""
        study = self.codes[rng.integers(0, self.codes.size, size=(n_sim, n))]
        med = _km_median_codes(study, self.times)
        budget = self.times[study.max(axis=1) // 2]
        inner = rng.integers(0, n, size=(n_sim, n_boot, n), dtype=np.int16 if n < 2**15 else int)
        boot = study[np.arange(n_sim)[:, None, None], inner].reshape(n_sim * n_boot, n)
        return med, budget, _km_median_codes(boot, self.times).reshape(n_sim, n_boot)


def _decisive(
    kind: np.ndarray, lo: np.ndarray, hi: np.ndarray, claimed: tuple[float, float]
) -> np.ndarray:
    """Where a speedup CI is wholly inside ``claimed``, wholly below or wholly above it."""
    low, high = claimed
    lo0 = np.nan_to_num(lo, nan=0.0)
    hi_inf = np.where(np.isnan(hi), np.inf, hi)
    finite = (kind == _FINITE) & (
        ((lo0 >= low) & (hi_inf <= high)) | (hi_inf < low) | (lo0 > high)
    )
    return finite | ((kind == _LOWER) & (lo0 > high))


def _decisive_fraction(
    arm_a: _Arm,
    arm_b: _Arm,
    n: int,
    claimed: tuple[float, float],
    alpha: float,
    n_sim: int,
    n_boot: int,
    rng: np.random.Generator,
) -> float:
    """Fraction of simulated n-seed studies whose :func:`speedup` CI is decisive."""
    med_a, budget_a, boot_a = arm_a.simulate(n, n_sim, n_boot, rng)
    med_b, budget_b, boot_b = arm_b.simulate(n, n_sim, n_boot, rng)
    kind, _, lo, hi = _speedup_rows(med_a, med_b, budget_a, budget_b, boot_a, boot_b, alpha)
    return float(_decisive(kind, lo, hi, claimed).mean())


def _seeds_for_cell(
    arm_a: _Arm,
    arm_b: _Arm,
    *,
    claimed: tuple[float, float],
    alpha: float,
    power: float,
    min_seeds: int,
    max_seeds: int,
    n_sim: int,
    n_boot: int,
    seed: tuple[int, ...],
) -> tuple[int | None, float]:
    """Smallest n in [min_seeds, max_seeds] decisive in >= ``power`` of simulations, and
    that fraction.

    Scans ``min_seeds`` and :data:`_SEED_GRID` upwards (checking ``max_seeds`` first once past
    :data:`_CAP_CHECK_AFTER`), then bisects between the last failing and the first
    passing grid value; power is assumed to grow with n. Returns ``(None, fraction at
    max_seeds)`` when even ``max_seeds`` is not enough.
    """

    memo: dict[int, float] = {}

    def frac(n: int) -> float:
        if n not in memo:
            rng = np.random.default_rng([*seed, n])
            memo[n] = _decisive_fraction(arm_a, arm_b, n, claimed, alpha, n_sim, n_boot, rng)
        return memo[n]

    inner = [n for n in _SEED_GRID if min_seeds < n < max_seeds]
    grid = sorted({min_seeds, *inner, max_seeds})
    prev, found, f = min_seeds - 1, None, 0.0
    for n in grid:
        if n > _CAP_CHECK_AFTER and n < max_seeds and prev <= _CAP_CHECK_AFTER:
            f_cap = frac(max_seeds)
            if f_cap < power:
                return None, f_cap
        f = frac(n)
        if f >= power:
            found = n
            break
        prev = n
    if found is None:
        return None, f
    while found - prev > 1:
        mid = (prev + found) // 2
        f_mid = frac(mid)
        if f_mid >= power:
            found, f = mid, f_mid
        else:
            prev = mid
    return found, f


def power_estimate(
    trials: pd.DataFrame,
    a: str,
    b: str,
    by: list[str],
    scheme_col: str = "init",
    *,
    claimed: tuple[float, float] = (2.0, 10.0),
    alpha: float = 0.05,
    power: float = 0.8,
    min_seeds: int = 5,
    max_seeds: int = 64,
    n_sim: int = 200,
    n_boot: int = 100,
    seed: int = 0,
) -> dict[str, Any]:
    """Seeds per cell a study needs for a decisive speedup verdict, simulated from a pilot.

    Per cell of ``by`` (and ``device_type``), each scheme's pilot trials are resampled
    with their censoring (a trial that did not converge stays censored at its budget):
    ``n_sim`` studies of n seeds per scheme, each run through :func:`speedup`'s own
    estimator (KM medians, percentile bootstrap of ``n_boot`` resamples, lower bound when
    B's median is not reached). A simulated study is *decisive* when its (1 - alpha) CI
    lies wholly inside ``claimed`` (lo >= low and hi <= high), wholly below it (hi <
    low) or wholly above it (lo > high; a lower bound only so). A cell needs the smallest
    n <= ``max_seeds`` decisive in at least ``power`` of the simulations; the study needs
    the largest over cells. Simulations use fixed seeds, so results are reproducible.

    The simulation inherits the pilot's spread: a pilot of a few seeds per cell makes the
    answer rough, and one of fewer than :data:`MIN_PILOT` trials per scheme is not used.

    Args:
        trials: the pilot's ``trials`` table.
        a, b: the schemes compared (A expected faster; B the baseline).
        by: columns that define a cell (as in :func:`speedup_table`).
        scheme_col: the column naming the scheme.
        claimed: the claimed speedup range (C4's 2-10x).
        alpha: 1 - confidence level of the speedup CI.
        power: fraction of simulated studies that must be decisive.
        min_seeds: the smallest n tried (5: with fewer trials per scheme the percentile
            bootstrap has so few distinct resamples that its intervals are too narrow, and
            simulated studies of 2-4 seeds come out "decisive" more often than of 5).
        max_seeds: the largest n tried.
        n_sim, n_boot: simulated studies per n, bootstrap resamples per study.
        seed: random seed of the simulations.

    Returns:
        A dict:

        - ``seeds_needed``: the seeds per cell that suffice in every cell, or None;
        - ``reason``: why ``seeds_needed`` is None (None otherwise), per cell, e.g. "the
          baseline uniform01 never converges within the budget: a longer budget is
          needed, not more seeds";
        - ``text``: a one-line summary;
        - ``cells``: a DataFrame, ``*by, device_type`` then :data:`POWER_CELL_COLUMNS`
          (``seeds_needed`` Int64, ``power`` the decisive fraction at it, or at
          ``max_seeds`` when none suffices, ``reason`` <NA> where seeds suffice);
        - ``n_cells``: cells with both schemes; ``n_pairs``: pairs joined on ``seed``;
          ``n_both``: pairs where both converged; ``censored_pairs``: pairs where at
          least one was censored;
        - ``sd_log_ratio``: descriptive, pooled within-cell sd of ``log(epochs_B /
          epochs_A)`` over pairs where both converged (NaN with no cell of two);
        - ``claimed``, ``target_power``, ``min_seeds``, ``max_seeds``: the settings.

    Raises:
        ValueError: a bad setting (naming it), or several trials per scheme and seed in a
            cell (see :func:`speedup_table`).
    """
    low, high = claimed
    if not 0 < low < high:
        raise ValueError(f"`0 < low < high` must hold for claimed=(low, high), got {claimed}")
    if not 0 < power < 1:
        raise ValueError(f"`0 < power < 1` must hold, but got {power=}")
    if not 2 <= min_seeds <= max_seeds:
        raise ValueError(
            f"`2 <= min_seeds <= max_seeds` must hold, but got {min_seeds=}, {max_seeds=}"
        )
    if n_sim < 1:
        raise ValueError(f"`n_sim >= 1` must hold, but got {n_sim=}")
    _check_boot(n_boot, alpha)
    keys = _keys(by)
    rows: list[dict[str, Any]] = []
    ss, dof, n_pairs, n_both, censored = 0.0, 0, 0, 0, 0
    for cell_no, (key, g) in enumerate(_groups(trials, keys)):
        ta, tb = g[g[scheme_col] == a], g[g[scheme_col] == b]
        if ta.empty or tb.empty:
            continue
        pairs = _pairs(ta, tb, _label(keys, key))
        pa_d, pa_e = time_to_event(_side(pairs, "_a"))
        pb_d, pb_e = time_to_event(_side(pairs, "_b"))
        both = pa_e & pb_e
        r = np.log(pb_d[both] / pa_d[both])
        n_pairs, n_both = n_pairs + len(pairs), n_both + int(both.sum())
        censored += int((~both).sum())
        if r.size >= 2:
            ss, dof = ss + float(((r - r.mean()) ** 2).sum()), dof + int(r.size) - 1
        a_d, a_e = time_to_event(ta)
        b_d, b_e = time_to_event(tb)
        row: dict[str, Any] = {
            **dict(zip(keys, key, strict=True)),
            "n_a": int(a_d.size),
            "n_b": int(b_d.size),
            "converged_a": float(a_e.mean()),
            "converged_b": float(b_e.mean()),
            "seeds_needed": None,
            "power": math.nan,
            "reason": None,
        }
        rows.append(row)
        if min(a_d.size, b_d.size) < MIN_PILOT:
            row["reason"] = (
                f"fewer than {MIN_PILOT} pilot trials of {a} or {b}: too few to estimate the noise"
            )
            continue
        if not a_e.any() or (not b_e.any() and b_d.max() / a_d[a_e].min() <= high):
            # No simulated study can be decisive: A never reaches its median, or B never
            # converges and its budget over A's fastest epoch, the largest lower bound
            # a study could show, is not above the range.
            row["power"] = 0.0
        else:
            row["seeds_needed"], row["power"] = _seeds_for_cell(
                _Arm.of(a_d, a_e),
                _Arm.of(b_d, b_e),
                claimed=(low, high),
                alpha=alpha,
                power=power,
                min_seeds=min_seeds,
                max_seeds=max_seeds,
                n_sim=n_sim,
                n_boot=n_boot,
                seed=(seed, cell_no),
            )
        if row["seeds_needed"] is None:
            row["reason"] = _why_no_seeds(a, b, a_d, a_e, b_d, b_e, max_seeds)
    cells = _with_key_dtypes(
        pd.DataFrame(rows, columns=[*keys, *POWER_CELL_COLUMNS]), trials, keys
    ).astype(
        {
            "n_a": "int64",
            "n_b": "int64",
            "converged_a": "float64",
            "converged_b": "float64",
            "seeds_needed": "Int64",
            "power": "float64",
            "reason": "string",
        }
    )
    needed: int | None = None
    reason: str | None = None
    if cells.empty:
        reason = f"no cell of ({', '.join(keys)}) has both {a} and {b} trials"
    elif cells["reason"].notna().any():
        groups: dict[str, list[str]] = {}
        for row in rows:
            if row["reason"] is not None:
                groups.setdefault(row["reason"], []).append(
                    _label(keys, tuple(row[k] for k in keys))
                )
        reason = "; ".join(f"{why} ({' / '.join(labels)})" for why, labels in groups.items())
    else:
        needed = int(cells["seeds_needed"].max())
    if needed is not None:
        text = (
            f"{needed} seeds per cell make the {1 - alpha:.0%} CI of the speedup decisive "
            f"about the claimed {low:g}-{high:g}x (inside it, or wholly below or above it) in "
            f">= {power:.0%} of {n_sim} simulated studies, in each of the {len(cells)} cells"
        )
    else:
        text = f"no number of seeds up to {max_seeds} per cell suffices: {reason}"
    return {
        "seeds_needed": needed,
        "reason": reason,
        "text": text,
        "cells": cells,
        "n_cells": len(cells),
        "n_pairs": n_pairs,
        "n_both": n_both,
        "censored_pairs": censored,
        "sd_log_ratio": math.sqrt(ss / dof) if dof else math.nan,
        "claimed": (low, high),
        "target_power": power,
        "min_seeds": min_seeds,
        "max_seeds": max_seeds,
    }


def _why_no_seeds(
    a: str,
    b: str,
    a_d: np.ndarray,
    a_e: np.ndarray,
    b_d: np.ndarray,
    b_e: np.ndarray,
    max_seeds: int,
) -> str:
    """Why no n up to ``max_seeds`` gives a decisive speedup in a cell."""
    longer = "a longer budget is needed, not more seeds"
    if not a_e.any():
        return f"{a} never converges within the budget: {longer}"
    if km_median(a_d, a_e).median is None:
        return f"{a}'s median is not reached within the budget: {longer}"
    if not b_e.any():
        return f"the baseline {b} never converges within the budget: {longer}"
    if km_median(b_d, b_e).median is None:
        return f"the baseline {b}'s median is not reached within the budget: {longer}"
    return f"more than {max_seeds} seeds per cell would be needed"
