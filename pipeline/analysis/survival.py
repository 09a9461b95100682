"""Kaplan-Meier statistics of epochs-to-convergence, on right-censored durations.

A trial's **duration** is its converged epoch if it converged (before any divergence),
else its ``max_epochs``; its **event** is "converged" (:func:`time_to_event`). Trials that
diverged or never reached the target are censored at the budget. The estimator is
``scipy.stats.ecdf`` on ``scipy.stats.CensoredData``: :func:`km_median` reads the median
and its log-log confidence band off it, :func:`km_curve` the survival curve the report
draws. Bootstrap and simulation code needs thousands of medians at once and uses
:func:`_km_median_codes`, the same estimator vectorized (tests check it against scipy).

This module is pure numpy/scipy/pandas.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import stats as sps

__all__ = ["KMMedian", "km_curve", "km_median", "time_to_event"]

_HALF = 0.5 + 1e-9
"""S(t) <= 0.5 with room for rounding (a product like 7/8 * 6/7 * ... landing on 0.5)."""


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


def _nan(x: float | None) -> float:
    """None as NaN (for numeric columns and arrays)."""
    return math.nan if x is None else x


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


def km_curve(durations: npt.ArrayLike, events: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival ("not yet converged") as step points, starting at (0, 1).

    The curve of ``scipy.stats.ecdf`` on the right-censored durations (the estimator of
    :func:`km_median`), at each epoch where a trial converged: the survival from there on,
    to be drawn as steps (``where="post"``). Without any event it is the one point (0, 1).
    """
    d, e = _as_arrays(durations, events)
    times, surv = np.array([0.0]), np.array([1.0])
    if not e.any():
        return times, surv
    sf = sps.ecdf(sps.CensoredData.right_censored(d, ~e)).sf
    at_event = np.isin(sf.quantiles, d[e])
    times = np.concatenate([times, np.asarray(sf.quantiles, dtype=float)[at_event]])
    surv = np.concatenate([surv, np.asarray(sf.probabilities, dtype=float)[at_event]])
    return times, surv


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
