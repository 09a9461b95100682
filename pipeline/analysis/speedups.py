"""The speedup of one scheme over another from their Kaplan-Meier medians.

A speedup of scheme A over scheme B is ``median_B / median_A`` with a percentile bootstrap
interval; when B's median is not reached the speedup is only a lower bound, and the number
to quote is the interval's lower limit (:attr:`Speedup.lo`, "at least lo"). The estimator
is written once, vectorized over studies (:func:`_speedup_rows`), so that the power
simulation runs exactly what :func:`speedup` reports.

This module is pure numpy/scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline.analysis.survival import _as_arrays, _km_medians_boot, _nan, km_median

__all__ = ["Speedup", "SpeedupKind", "fmt_ratio", "speedup"]


def fmt_ratio(x: float) -> str:
    """A ratio for text: ``3.2`` (one decimal) from 1 up, ``0.45`` (two digits) below."""
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

    def describe(self, a: str = "A") -> str:
        """The speedup in words, naming the faster scheme ``a`` where it did not converge.

        ``"3.2x [2.1, 5.0]"``, ``"3.2x [2.1, inf]"`` (no upper limit), ``"> 5.6x (95% CI
        lower limit 3.1x)"`` (lower bound), ``"n/a (A did not converge)"``, ``"n/a (no
        trials)"``.
        """
        if self.estimate is None:
            if self.n_a == 0 or self.n_b == 0:
                return "n/a (no trials)"
            return f"n/a ({a} did not converge)"
        lo = "0" if self.lo is None else fmt_ratio(self.lo)
        if self.lower_bound:
            return f"> {fmt_ratio(self.estimate)}x ({1 - self.alpha:.0%} CI lower limit {lo}x)"
        hi = "inf" if self.hi is None else fmt_ratio(self.hi)
        return f"{fmt_ratio(self.estimate)}x [{lo}, {hi}]"

    @property
    def text(self) -> str:
        """:meth:`describe` with the faster scheme called A."""
        return self.describe()


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
