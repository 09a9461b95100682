"""Statistics per cell of a ``trials`` table: outcome summaries and speedup tables.

A cell is a group of ``by`` columns and ``device_type``: device types are never pooled.
The functions read these columns of :data:`pipeline.analysis.tables.TRIAL_COLUMNS`:
``converged_epoch``, ``diverged_epoch`` (optional), ``max_epochs``, ``device_type``,
``seed`` (pairing), the scheme column and the ``by`` columns.

This module is pure numpy/scipy/pandas.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from models.fields import COLUMNS
from pipeline.analysis.paired import paired_comparison
from pipeline.analysis.speedups import speedup
from pipeline.analysis.survival import _nan, km_median, time_to_event

__all__ = [
    "SPEEDUP_COLUMNS",
    "SUMMARY_COLUMNS",
    "cannot_train",
    "group_summary",
    "speedup_table",
]


def cannot_train(trials: pd.DataFrame) -> pd.Series:
    """Per trial: frozen at init (zero gradient into Wxh and Whh) and not converged.

    That is the outcome ``frozen``, and also a ``diverged`` trial whose init diagnosis is
    frozen (``frozen_at_init``): its loss exploded in training (which takes precedence in
    the outcome), but its recurrent matrices had no gradient to learn from. The rules that
    read "frozen" as "cannot train" (an unbounded speedup, a lost signal) read this, so
    they judge trials that did not explode as before, and see the diagnosis of those that
    did. A table without the ``frozen_at_init`` column is read by its outcome alone.
    """
    frozen = trials["outcome"] == "frozen"
    if "frozen_at_init" in trials:
        at_init = trials["frozen_at_init"].astype("boolean").fillna(False).astype(bool)
        frozen = frozen | (at_init & (trials["outcome"] == "diverged"))
    return frozen.astype(bool)


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


def group_summary(trials: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Outcome rates and KM median per group of ``by`` and ``device_type``.

    Device types are always a group key (CPU and CUDA runs are never pooled). Missing
    values in ``by`` columns (e.g. ``init_recurrent``) form their own group.

    Returns:
        Columns ``*by, device_type, n, converged_rate, diverged_rate, censored_rate,
        km_median, km_lo, km_hi, median_text``. ``diverged_rate`` is the share whose
        outcome is diverged (before converging), ``censored_rate`` the share not converged
        (the time-to-event view); ``km_*`` are NaN where not reached or unbounded,
        ``median_text`` is :attr:`KMMedian.text`.
    """
    keys = _keys(by)
    rows = []
    for key, g in _groups(trials, keys):
        d, e = time_to_event(g)
        km = km_median(d, e)
        # Diverged as the outcome rule says (models.spec.TrialResult.outcome): a trial that
        # converged and diverged later is converged, so the rates do not overlap.
        if "outcome" in g:
            diverged = (g["outcome"] == "diverged").to_numpy(dtype=bool)
        elif "diverged_epoch" in g:
            diverged = g["diverged_epoch"].notna().to_numpy(dtype=bool) & ~e.astype(bool)
        else:
            diverged = np.zeros(len(g), dtype=bool)
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

_FACTORS: tuple[str, ...] = tuple(name for name in COLUMNS if name != "seed")
"""TrialSpec columns (factors and settings, ``models.fields.COLUMNS``) that may vary within
a cell and break the seed pairing: all but the ``seed`` the pairs are joined on."""


def _label(keys: list[str], key: tuple[Hashable, ...]) -> str:
    """``"seq_len=10, device_type='cpu'"``: a cell in messages (a NumPy scalar, as pandas 2
    gives group keys, shown as its Python value)."""
    return ", ".join(
        f"{k}={v.item() if isinstance(v, np.generic) else v!r}"
        for k, v in zip(keys, key, strict=True)
    )


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
