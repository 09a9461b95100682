"""How many seeds a study needs for a decisive speedup verdict, simulated from a pilot.

:func:`power_estimate` simulates studies of n seeds from the pilot's trials, censoring
included, and runs the speedup estimator of :mod:`pipeline.analysis.speedups` on them.

This module is pure numpy/pandas.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.analysis.cells import (
    _groups,
    _keys,
    _label,
    _pairs,
    _side,
    _with_key_dtypes,
    cannot_train,
)
from pipeline.analysis.speedups import _FINITE, _LOWER, _check_boot, _speedup_rows
from pipeline.analysis.survival import _km_median_codes, km_median, time_to_event

if TYPE_CHECKING:
    from pipeline.claimspec import Comparison

__all__ = ["MIN_PILOT", "POWER_CELL_COLUMNS", "comparison_power", "power_estimate"]

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
        - ``frozen_baseline``: True when ``b`` is frozen (zero gradient at init) in every
          pilot trial: it cannot train, the speedup is unbounded whatever the seeds or the
          budget, nothing is simulated and ``reason`` and ``text`` say so ("uniform01 is
          frozen ...");
        - ``text``: a one-line summary;
        - ``cells``: a DataFrame, ``*by, device_type`` then :data:`POWER_CELL_COLUMNS`
          (``seeds_needed`` Int64, ``power`` the decisive fraction at it, or at
          ``max_seeds`` when none suffices, ``reason`` <NA> where seeds suffice);
        - ``n_cells``: cells with both schemes; ``n_pairs``: pairs joined on ``seed`` (0
          with a frozen baseline);
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
    frozen = _frozen_everywhere(trials, a, b, scheme_col)
    rows: list[dict[str, Any]] = []
    ss, dof, n_pairs, n_both, censored = 0.0, 0, 0, 0, 0
    for cell_no, (key, g) in enumerate(_groups(trials, keys)):
        ta, tb = g[g[scheme_col] == a], g[g[scheme_col] == b]
        if ta.empty or tb.empty:
            continue
        if frozen is None:  # (a frozen baseline is not paired: nothing is simulated)
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
        if frozen is not None:
            row["reason"] = frozen
            continue
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
    if frozen is not None:
        reason = frozen
    elif cells.empty:
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
    elif frozen is not None:
        text = frozen
    else:
        text = f"no number of seeds up to {max_seeds} per cell suffices: {reason}"
    return {
        "seeds_needed": needed,
        "reason": reason,
        "frozen_baseline": frozen is not None,
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


def _frozen_everywhere(trials: pd.DataFrame, a: str, b: str, scheme_col: str) -> str | None:
    """Why no seed count helps when the baseline ``b`` is frozen in every pilot trial (and
    ``a`` has trials), else None."""
    if trials.empty or "outcome" not in trials:
        return None
    schemes = trials[scheme_col]
    baseline = trials[schemes == b]
    if baseline.empty or not (schemes == a).any() or not cannot_train(baseline).all():
        return None
    return (
        f"{b} is frozen (zero gradient at init) in every pilot trial: it cannot train, so the "
        "speedup is unbounded whatever the seeds or the budget"
    )


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


def comparison_power(
    trials: pd.DataFrame, claims: Sequence[Comparison], **settings: Any
) -> list[dict[str, Any]]:
    """:func:`power_estimate` for each declared ``faster``/``than`` comparison, on the trials
    its verdict reads (its ``where``, its compared column, gain 1 as in
    ``speedup_rule.judge_declared``), with its claimed range and the speedup rule's cells.

    Returns:
        One dict per comparison, in order: ``claim`` (its id), ``faster``, ``than``,
        ``text`` (:func:`power_estimate`'s, or why none could be made, e.g. a pilot with
        several trials per scheme and seed in a cell, as a sampled one has) and
        ``seeds_needed`` (None where no number suffices or none was estimated).
    """
    from pipeline.analysis.judging import plain_scheme, select_rows
    from pipeline.analysis.speedup_rule import speedup_cells  # (it imports power, via stats)

    out: list[dict[str, Any]] = []
    for c in claims:
        rows = trials
        if c.on == "init_recurrent" and not rows.empty:
            rows = rows[rows["init_recurrent"].notna()]
            rows = rows.assign(init=rows["init_recurrent"], init_recurrent=pd.NA)
        elif not {"scale", "recurrent_scale", "init_recurrent"} & set(c.where):
            rows = plain_scheme(rows)
        rows = select_rows(rows, c.where) if not rows.empty else rows
        entry: dict[str, Any] = {"claim": c.id, "faster": c.faster, "than": c.than}
        schemes = set(rows["init"].astype(str)) if not rows.empty else set()
        if not {c.faster, c.than} <= schemes:
            entry.update(
                text=f"the pilot has no {c.faster}-vs-{c.than} pairs at gain 1 to estimate"
                " noise from",
                seeds_needed=None,
            )
        else:
            by = [k for k in speedup_cells(rows) if k in rows]
            try:
                est = power_estimate(
                    rows, c.faster, c.than, by, claimed=(c.low, c.high), **settings
                )
            except ValueError as exc:
                entry.update(text=f"not estimated: {exc}", seeds_needed=None)
            else:
                needed = est["seeds_needed"]
                entry.update(
                    text=est["text"], seeds_needed=None if needed is None else int(needed)
                )
        out.append(entry)
    return out
