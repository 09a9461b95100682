"""A speedup from any design: an accelerated-failure-time model of epochs-to-converge.

The Kaplan-Meier rule (:mod:`pipeline.analysis.speedup_rule`) compares two schemes cell by
cell and needs :data:`~pipeline.analysis.judging.MIN_N` trials per arm in each cell, which a
grid gives and a sampled (TPE, random, QMC) design with continuous parameters rarely does.
:func:`aft_speedup` fits one parametric accelerated-failure-time (AFT) regression to every
trial of the two schemes instead::

    log T = b0 + b * [scheme is the faster one] + sum_k c_k * x_k + sigma * eps

with ``T`` the epochs to converge (right-censored: censored, stalled, diverged and frozen
trials enter as censored at their budget, :func:`~pipeline.analysis.survival.time_to_event`)
and ``x_k`` the study's searched parameters (``lr``, ``hidden`` and ``seq_len`` on a log
scale, other numbers as they are, categories as indicators). At equal covariates the time
ratio of the slower scheme to the faster one is ``exp(-b)``: the **speedup**, with the
Wald 95% interval ``exp(-b -+ 1.96 se)``. The fits are lifelines' (``WeibullAFTFitter``,
``LogNormalAFTFitter``; :data:`FAMILIES`).

Model check (:class:`ModelCheck`): every family is fitted and the one with the lowest AIC is
used; the interaction of the scheme with ``hidden`` and ``seq_len`` is tested by a
likelihood-ratio test. Where it is significant (p < ALPHA) the speedup depends on the
regime and is read per regime (:attr:`AFTSpeedup.readings`, at each value of hidden and
seq_len, or their quartiles when they take more than :data:`MAX_READ_VALUES`) instead of
averaged. Each estimate is classified by the project's speedup rule
(:func:`~pipeline.analysis.speedup_rule.classify_speedup`) and the readings combined by its
:func:`~pipeline.analysis.speedup_rule.combine_cells`. What cannot be estimated (an arm
without a converged trial, no varying data, a fit that fails) is said, never raised.

This module reads tables; it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from pipeline.analysis.judging import ALPHA, INCONCLUSIVE, MIN_N, NOT_MEASURED, fmt
from pipeline.analysis.speedup_rule import CELL_INCONCLUSIVE, classify_speedup, combine_cells
from pipeline.analysis.survival import time_to_event

__all__ = [
    "AFT_RULE",
    "FAMILIES",
    "AFTSpeedup",
    "ModelCheck",
    "Reading",
    "aft_speedup",
]

FAMILIES: tuple[str, ...] = ("weibull", "lognormal")
"""The parametric families fitted and compared by AIC (also allowed: ``loglogistic``)."""
REGIME = ("hidden", "seq_len")
"""Covariates whose interaction with the scheme is tested (a regime-dependent speedup)."""
LOG_COVARIATES = frozenset({"lr", "hidden", "seq_len"})
"""Numeric covariates that enter on a log scale (as do those a spec searched with log)."""
NOT_COVARIATES = frozenset(
    {"init", "init_recurrent", "seed", "data_seed", "max_epochs", "target_loss", "patience"}
)
"""Columns never used as covariates: the compared factor, replicates and the budget."""
MAX_READ_VALUES = 5
"""A regime covariate with at most this many values is read at each; else at its quartiles."""
MAX_LOG_SE = 3.0
"""A log time ratio with a larger standard error is not estimable (its interval spans a
factor over 10^5: the data hardly bound it, as when one arm barely converges)."""
MAX_COVARIATE_LEVELS = 8
"""A categorical covariate with more levels than this is left out (too many indicators)."""

AFT_RULE = (
    "Accelerated-failure-time speedup (any design): one parametric regression of log "
    "epochs-to-converge on the scheme (a factor) and the study's searched parameters "
    "(lr, hidden and seq_len on a log scale), fitted by maximum likelihood with censored, "
    "stalled, diverged and frozen trials censored at their budget; Weibull and log-normal "
    "errors are both fitted and the lower AIC is used. speedup = exp(-b), the time ratio of "
    "the slower scheme to the faster at equal covariates, with its Wald 95% interval [lo, hi]. "
    "The scheme's interaction with hidden and seq_len is tested (likelihood ratio); when "
    f"p < {ALPHA:g} the speedup is read at each hidden and seq_len value instead of pooled. "
    "Each estimate is classified as in the speedup rule (within [a, b] only if a <= lo and "
    "hi <= b; below if hi < a; above if lo > b; unbounded when at least half of the slower "
    "scheme's trials are frozen, overall or at a hidden or seq_len value, which is then left "
    "out of the fit; only 'at least lo' where the model's median of the slower scheme lies "
    "past its budget; inconclusive where the faster scheme's does, or with fewer than "
    f"{MIN_N} trials in an arm) and combined as there. An arm without a converged trial, "
    "or a fit that fails, is not estimable (inconclusive)."
)

_PRIMARY = {"weibull": "lambda_", "lognormal": "mu_", "loglogistic": "alpha_"}
_SCHEME = "faster_scheme"
_Z = float(sps.norm.ppf(1 - ALPHA / 2))


class NotEstimable(Exception):
    """Why a speedup cannot be estimated from these trials."""


@dataclass(frozen=True)
class Reading:
    """The speedup at one set of covariate values (``at`` empty: the pooled model's)."""

    at: dict[str, float]
    estimate: float | None
    lo: float | None
    hi: float | None
    kind: str
    """As in the speedup rule: ``finite``, ``lower_bound`` (the slower scheme's model median
    is past its budget), ``unbounded`` (it cannot train) or ``none`` (the faster scheme's
    median is past its budget, or nothing could be estimated)."""
    classification: str

    @property
    def label(self) -> str:
        return ", ".join(f"{k} {v:g}" for k, v in self.at.items()) or "all trials"

    @property
    def text(self) -> str:
        if self.kind == "unbounded":
            return "unbounded (cannot train)"
        if self.estimate is None:
            return "not estimable"
        if self.kind == "lower_bound":
            return (
                f"at least {fmt(self.lo)}x (the slower scheme's model median is past its budget)"
            )
        if self.kind == "none":
            return "n/a (the faster scheme's model median is past its budget)"
        return f"{fmt(self.estimate)}x [{fmt(self.lo)}, {fmt(self.hi)}]"


@dataclass(frozen=True)
class ModelCheck:
    """The model check: AIC per family, and the scheme-by-regime likelihood-ratio test."""

    aic: dict[str, float]
    """Family -> AIC of the main-effects model (a family whose fit failed is absent)."""
    family: str
    """The family used (lowest AIC)."""
    interaction: tuple[str, ...] = ()
    """The covariates whose interaction with the scheme was tested."""
    lr_stat: float | None = None
    df: int = 0
    p: float | None = None
    """The likelihood-ratio test's p-value (None: not tested, see :attr:`note`)."""
    note: str = ""

    @property
    def regime_dependent(self) -> bool:
        return self.p is not None and self.p < ALPHA

    @property
    def text(self) -> str:
        aic = ", ".join(f"{f} {a:.1f}" for f, a in self.aic.items())
        parts = [f"AIC {aic} ({self.family} used)"]
        if self.p is not None and self.lr_stat is not None:
            found = "regime-dependent: read per regime" if self.regime_dependent else "none found"
            parts.append(
                f"scheme x {', '.join(self.interaction)}: LR chi2 {self.lr_stat:.2f}, "
                f"df {self.df}, p {fmt(self.p, 2)} ({found})"
            )
        if self.note:
            parts.append(self.note)
        return "; ".join(parts)


@dataclass(frozen=True)
class AFTSpeedup:
    """The AFT speedup of ``faster`` over ``than`` and its classification."""

    faster: str
    than: str
    low: float
    high: float
    n_a: int
    n_b: int
    pooled: Reading | None = None
    """The main-effects model's speedup (None: not estimable, see :attr:`reason`)."""
    readings: list[Reading] = field(default_factory=list)
    """The interaction model's speedup per regime (empty: no regime covariate varies)."""
    check: ModelCheck | None = None
    covariates: list[str] = field(default_factory=list)
    """The covariates in the model (as columns: ``log lr``, ``scale``, ``cell=gru``...)."""
    notes: list[str] = field(default_factory=list)
    """Covariates left out and why."""
    reason: str = ""
    """Why nothing could be estimated ("" when something was)."""
    frozen: list[Reading] = field(default_factory=list)
    """Regimes (hidden, seq_len values) where the slower scheme is frozen in at least half
    its trials: unbounded (cannot train), judged as such and left out of the fit."""

    @property
    def judged(self) -> list[Reading]:
        """The readings the verdict combines: per regime where the interaction is
        significant, else the pooled one; and every regime where the slower scheme cannot
        train."""
        if self.check is not None and self.check.regime_dependent and self.readings:
            return [*self.readings, *self.frozen]
        return ([] if self.pooled is None else [self.pooled]) + self.frozen

    @property
    def verdict(self) -> str:
        """The speedup rule's verdict over :attr:`judged`; inconclusive when nothing could be
        estimated from two arms with trials."""
        if not self.judged:
            return INCONCLUSIVE if self.n_a and self.n_b else NOT_MEASURED
        return combine_cells([r.classification for r in self.judged])

    @property
    def evidence(self) -> str:
        head = f"AFT speedup of {self.faster} over {self.than} (n={self.n_a}/{self.n_b})"
        if not self.judged:
            return f"{head}: not estimable: {self.reason}."
        parts = [f"{r.label}: {r.text} ({r.classification})" for r in self.judged]
        check = "" if self.check is None else f" Model check: {self.check.text}."
        covs = ", ".join(self.covariates) or "none"
        notes = f" Left out: {'; '.join(self.notes)}." if self.notes else ""
        return f"{head}: " + "; ".join(parts) + f". Covariates: {covs}.{check}{notes}"

    def numbers(self) -> dict[str, Any]:
        """The machine-readable record (``verdicts.json``)."""

        def one(r: Reading) -> dict[str, Any]:
            return {
                "at": r.at,
                "estimate": math.inf if r.kind == "unbounded" else r.estimate,
                "lo": r.lo,
                "hi": r.hi,
                "kind": r.kind,
                "classification": r.classification,
            }

        c = self.check
        return {
            "method": "aft",
            "faster": self.faster,
            "than": self.than,
            "range": [self.low, self.high],
            "n": [self.n_a, self.n_b],
            "covariates": self.covariates,
            "cells": [one(r) for r in self.judged],
            "readings": [one(r) for r in self.readings],
            "family": None if c is None else c.family,
            "aic": {} if c is None else c.aic,
            "interaction_p": None if c is None else c.p,
            "reason": self.reason,
        }


# --------------------------------------------------------------------------- design


def _design(
    rows: pd.DataFrame, faster: str, covariates: Sequence[str], log: Sequence[str]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Durations, events, the scheme indicator and centred covariates; what was left out."""
    duration, event = time_to_event(rows)
    frame = pd.DataFrame(
        {
            "T": duration,
            "E": event.astype(float),
            _SCHEME: (rows["init"].astype(str) == faster).to_numpy(dtype=float),
        }
    )
    notes: list[str] = []
    for name in covariates:
        if name in NOT_COVARIATES or name not in rows.columns:
            continue
        values = rows[name]
        if values.isna().any():
            notes.append(f"{name} (missing in some trials)")
            continue
        if values.nunique() < 2:
            continue  # a single value: nothing to adjust for
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            x = values.to_numpy(dtype=float)
            if (name in LOG_COVARIATES or name in log) and (x > 0).all():
                frame[f"log {name}"] = np.log(x) - np.log(x).mean()
            else:
                frame[name] = x - x.mean()
            continue
        levels = sorted(values.astype(str).unique())
        if len(levels) > MAX_COVARIATE_LEVELS:
            notes.append(f"{name} ({len(levels)} levels; at most {MAX_COVARIATE_LEVELS})")
            continue
        for level in levels[1:]:
            frame[f"{name}={level}"] = (values.astype(str) == level).to_numpy(dtype=float)
    # Keep a covariate only if it adds a dimension: collinear ones (with the scheme or each
    # other) make the fit singular. The scheme comes first, so it is never the one dropped.
    kept: list[str] = []
    base = np.column_stack([np.ones(len(frame)), frame[_SCHEME].to_numpy()])
    for col in [c for c in frame.columns if c not in ("T", "E", _SCHEME)]:
        trial = np.column_stack([base, frame[col].to_numpy()])
        if np.linalg.matrix_rank(trial) > np.linalg.matrix_rank(base):
            base = trial
            kept.append(col)
        else:
            notes.append(f"{col} (collinear with the scheme or the covariates before it)")
    return frame[["T", "E", _SCHEME, *kept]], kept, notes


# --------------------------------------------------------------------------- fits


def _fit(family: str, frame: pd.DataFrame) -> Any:
    """A lifelines AFT fit; raises NotEstimable with the reason when it fails."""
    from lifelines import LogLogisticAFTFitter, LogNormalAFTFitter, WeibullAFTFitter
    from lifelines.exceptions import ConvergenceError

    fitters = {
        "weibull": WeibullAFTFitter,
        "lognormal": LogNormalAFTFitter,
        "loglogistic": LogLogisticAFTFitter,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence is checked below, on the numbers
        try:
            fitted = fitters[family]().fit(frame, "T", "E")
        except (ConvergenceError, ValueError, np.linalg.LinAlgError, ZeroDivisionError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise NotEstimable(f"the {family} fit did not converge ({first[:120]})") from e
    se = fitted.standard_errors_[_PRIMARY[family]]
    if not np.all(np.isfinite(se.to_numpy(dtype=float))):
        raise NotEstimable(f"the {family} fit has no finite standard errors (a flat likelihood)")
    return fitted


def _ratio(fitted: Any, family: str, weights: dict[str, float]) -> tuple[float, float, float]:
    """exp(-a'b) and its Wald interval, a = the weights on the primary coefficients."""
    key = _PRIMARY[family]
    names = list(weights)
    coef = fitted.params_[key].reindex(names).to_numpy(dtype=float)
    idx = [(key, n) for n in names]
    cov = fitted.variance_matrix_.loc[idx, idx].to_numpy(dtype=float)
    a = np.array([weights[n] for n in names])
    log_t = float(a @ coef)
    se = math.sqrt(max(float(a @ cov @ a), 0.0))
    if not (math.isfinite(log_t) and math.isfinite(se)) or se > MAX_LOG_SE:
        raise NotEstimable(
            "the data hardly bound the ratio (one arm barely converges there): "
            f"its 95% interval spans a factor over {math.exp(2 * _Z * MAX_LOG_SE):.0g}"
        )
    return math.exp(-log_t), math.exp(-log_t - _Z * se), math.exp(-log_t + _Z * se)


def _read(
    fitted: Any, family: str, centred: dict[str, float], budgets: tuple[float, float]
) -> tuple[float, float, float, str]:
    """The speedup at covariates ``centred`` (the rest at their means) and its kind: as in
    the Kaplan-Meier rule, ``lower_bound`` where the model's median for the slower scheme
    lies beyond its budget (an extrapolation: only "at least lo" is shown) and ``none``
    where the faster scheme's does (nothing can be said)."""
    columns = [c for c in fitted.params_[_PRIMARY[family]].index if c != "Intercept"]
    weights = {_SCHEME: 1.0}
    weights |= {f"{_SCHEME}:{c}": v for c, v in centred.items() if f"{_SCHEME}:{c}" in columns}
    est, lo, hi = _ratio(fitted, family, weights)
    rows = []
    for s in (1.0, 0.0):
        row = dict.fromkeys(columns, 0.0) | {c: v for c, v in centred.items() if c in columns}
        row[_SCHEME] = s
        for c in columns:
            if c.startswith(f"{_SCHEME}:"):
                row[c] = s * row[c.removeprefix(f"{_SCHEME}:")]
        rows.append(row)
    medians = np.asarray(fitted.predict_median(pd.DataFrame(rows)), dtype=float).reshape(-1)
    if not medians[0] <= budgets[0]:
        return est, lo, hi, "none"
    if not medians[1] <= budgets[1]:
        return est, lo, hi, "lower_bound"
    return est, lo, hi, "finite"


def _frozen_regimes(
    rows: pd.DataFrame, faster: str, than: str, regime: Sequence[str]
) -> tuple[pd.DataFrame, list[tuple[dict[str, float], int, int]]]:
    """The rows without the regimes (values of the discrete ``regime`` columns) where
    ``than`` is frozen in at least half its trials, and those regimes with the trials of
    ``faster`` and ``than`` in each."""
    columns = [c for c in regime if c in rows and 1 < rows[c].nunique() <= MAX_READ_VALUES]
    if not columns:
        return rows, []
    b = rows[rows["init"].astype(str) == than]
    shares = (b["outcome"] == "frozen").groupby([b[c] for c in columns]).mean()
    keep = np.ones(len(rows), dtype=bool)
    found = []
    for key, share in shares.items():
        if share < 0.5:
            continue
        values = key if isinstance(key, tuple) else (key,)
        at = {c: float(v) for c, v in zip(columns, values, strict=True)}
        there = np.ones(len(rows), dtype=bool)
        for c, v in at.items():
            there &= np.isclose(rows[c].astype(float).to_numpy(), v)
        keep &= ~there
        schemes = rows["init"].astype(str).to_numpy()[there]
        found.append((at, int((schemes == faster).sum()), int((schemes == than).sum())))
    return rows[keep], found


def _reading_values(rows: pd.DataFrame, name: str) -> list[float]:
    values = np.sort(rows[name].astype(float).unique())
    if values.size <= MAX_READ_VALUES:
        return [float(v) for v in values]
    return [float(v) for v in np.quantile(rows[name].astype(float), [0.25, 0.5, 0.75])]


# --------------------------------------------------------------------------- entry point


def aft_speedup(
    trials: pd.DataFrame,
    faster: str,
    than: str,
    *,
    covariates: Sequence[str],
    low: float,
    high: float,
    log: Sequence[str] = (),
    families: Sequence[str] = FAMILIES,
    min_n: int = MIN_N,
) -> AFTSpeedup:
    """The AFT speedup of ``faster`` over ``than`` on ``trials`` (see the module's text).

    Args:
        trials: ``trials`` rows (``init``, the outcome columns and the covariates); rows of
            other schemes are ignored.
        covariates: candidate covariates (columns); those that do not vary, are missing or
            are collinear are left out (:attr:`AFTSpeedup.notes`).
        low, high: the claimed range (``high`` may be ``inf``).
        log: further numeric covariates to take on a log scale.
        families: the parametric families to fit and compare (:data:`FAMILIES`).
        min_n: fewest trials per arm for a classification other than "n too small".
    """
    unknown = [f for f in families if f not in _PRIMARY]
    if not families or unknown:
        raise ValueError(f"unknown AFT families {unknown}; allowed: {', '.join(_PRIMARY)}")
    scheme = trials["init"].astype(str) if len(trials) else pd.Series([], dtype=str)
    rows = trials[scheme.isin([faster, than]).to_numpy()]
    a, b = rows[rows["init"].astype(str) == faster], rows[rows["init"].astype(str) == than]
    result = AFTSpeedup(faster, than, low, high, len(a), len(b))

    def none(reason: str, **more: Any) -> AFTSpeedup:
        return replace(result, reason=reason, **more)

    if a.empty or b.empty:
        missing = " and ".join(s for s, f in ((faster, a), (than, b)) if f.empty)
        return none(f"no {missing} trials")

    def unbounded(at: dict[str, float], n_a: int, n_b: int) -> Reading:
        cls = classify_speedup(
            n_a=n_a, n_b=n_b, estimate=None, lo=None, hi=None, kind="unbounded",
            low=low, high=high, min_n=min_n,
        )  # fmt: skip
        return Reading(at, None, None, None, "unbounded", cls)

    rows, frozen = _frozen_regimes(rows, faster, than, [c for c in REGIME if c in covariates])
    result = replace(result, frozen=[unbounded(*regime) for regime in frozen])
    a, b = rows[rows["init"].astype(str) == faster], rows[rows["init"].astype(str) == than]
    if a.empty or b.empty:  # every regime of the slower scheme is frozen
        return result
    frozen_b = float((b["outcome"] == "frozen").mean())
    if frozen_b >= 0.5:
        reason = f"{than} frozen in {frozen_b:.0%} of its trials: cannot train"
        return replace(result, pooled=unbounded({}, len(a), len(b)), notes=[reason])
    for arm, frame in ((faster, a), (than, b)):
        if not time_to_event(frame)[1].any():
            return none(
                f"{arm} has no converged trial, so the time ratio has no finite estimate "
                "(the Kaplan-Meier rule's lower bound is what such data can show)"
            )
    design, kept, notes = _design(rows, faster, covariates, log)
    result = replace(result, covariates=kept, notes=notes)
    fits: dict[str, Any] = {}
    failures: list[str] = []
    for family in families:
        try:
            fits[family] = _fit(family, design)
        except NotEstimable as e:
            failures.append(str(e))
    if not fits:
        return none("; ".join(failures))
    aic = {f: float(m.AIC_) for f, m in fits.items()}
    family = min(aic, key=aic.__getitem__)

    budgets = (float(a["max_epochs"].max()), float(b["max_epochs"].max()))

    def read(fitted: Any, at: dict[str, float], centred: dict[str, float]) -> Reading:
        try:
            est, lo, hi, kind = _read(fitted, family, centred, budgets)
        except NotEstimable:
            return Reading(at, None, None, None, "none", CELL_INCONCLUSIVE)
        cls = classify_speedup(
            n_a=len(a), n_b=len(b), estimate=None if kind == "none" else est, lo=lo,
            hi=None if kind == "lower_bound" else hi, kind=kind, low=low, high=high, min_n=min_n,
        )  # fmt: skip
        return Reading(at, est, lo, hi, kind, cls)

    try:
        _ratio(fits[family], family, {_SCHEME: 1.0})
    except NotEstimable as e:
        return none(str(e))
    pooled = read(fits[family], {}, {})
    regime = [f"log {r}" for r in REGIME if f"log {r}" in kept]
    check = ModelCheck(aic, family, note="; ".join(failures))
    readings: list[Reading] = []
    if not regime:
        untested = "no interaction to test: neither hidden nor seq_len varies in the model"
        check = replace(check, note="; ".join([*failures, untested]))
    else:
        wide = design.assign(**{f"{_SCHEME}:{c}": design[_SCHEME] * design[c] for c in regime})
        names = [c.removeprefix("log ") for c in regime]
        try:
            full = _fit(family, wide)
            stat = max(2.0 * (float(full.log_likelihood_) - fits[family].log_likelihood_), 0.0)
            p = float(sps.chi2.sf(stat, len(regime)))
            check = ModelCheck(aic, family, tuple(names), stat, len(regime), p, check.note)
            centre = {n: float(np.log(rows[n].astype(float)).mean()) for n in names}
            for values in itertools.product(*[_reading_values(rows, n) for n in names]):
                at = dict(zip(names, values, strict=True))
                centred = {f"log {n}": math.log(v) - centre[n] for n, v in at.items()}
                readings.append(read(full, at, centred))
        except NotEstimable as e:
            check = ModelCheck(aic, family, tuple(names), note=f"interaction not tested: {e}")
    return replace(result, pooled=pooled, readings=readings, check=check)
