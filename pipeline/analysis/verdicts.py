"""Claim verdicts: one registry of claims, each with its rule written once.

Every claim is one :class:`Claim` in :data:`CLAIMS`: its text, its rule (the words the
report and ``docs/results.md`` print) and the function that judges it from a study's
tables. :func:`judge` returns one :class:`Verdict` per claim a study declares (its spec's
``claims:`` list, see ``pipeline.claimspec``), or, with no list, per built-in claim its
data can measure. A verdict is one of :data:`VERDICTS`, always with the numbers that
decided it (``Verdict.numbers``, written to ``verdicts.json``).

Outcomes come from ``TrialResult.outcome`` (the ``outcome`` column): converged,
censored, stalled, frozen, diverged. For time-to-event statistics all but converged are
censored at the budget; the rules tell them apart: a frozen trial cannot train at all, so
a speedup over a frozen baseline is unbounded, not "slow".

"The scheme" means trials whose init scheme is applied to every matrix (no
``init_recurrent``) at gain 1 (``scale`` and ``recurrent_scale`` 1).

The speedup rule (C4 and every declared comparison) is :func:`classify_speedup`; the other
rules are in each ``judge_c*`` and their thresholds are the module constants below. Mean-
field predictions (``models.theory``) are quoted beside the measurements they speak to.
This module reads tables; it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from pipeline.claimspec import BUILTIN_IDS, Comparison, parse_claims

if TYPE_CHECKING:
    from pipeline.results import StudyTables

__all__ = [
    "C1_EARLY_STEPS",
    "C1_LEVEL_RANGE",
    "C1_MAX_SATURATION",
    "C1_MIN_LEVEL",
    "C1_RATIO_RANGE",
    "C2_LOST_SATURATION",
    "C2_TREND_TOLERANCE",
    "C2_VANISHED_VARIANCE",
    "C4_RANGE",
    "C5_LARGE_HIDDEN",
    "C5_TINY_HIDDEN",
    "C5_WORKS_RATE",
    "C6_NORM_TOLERANCE",
    "CLAIMS",
    "MIN_N",
    "TANH_CELLS",
    "VERDICTS",
    "Claim",
    "Verdict",
    "classify_speedup",
    "judge",
    "verdict_tags",
    "write_verdicts",
]

SUPPORTED = "supported"
REFUTED = "refuted"
PARTLY = "partly supported"
INCONCLUSIVE = "inconclusive"
NOT_MEASURED = "not measured by this study"
VERDICTS: tuple[str, ...] = (SUPPORTED, REFUTED, PARTLY, INCONCLUSIVE, NOT_MEASURED)
"""Every verdict a claim can get."""

XAVIER = "xavier"
UNIFORM = "uniform01"
TANH_CELLS: tuple[str, ...] = ("rnn_tanh",)
"""Cells whose hidden state is tanh(...) of the recurrence, where C1 is asked."""

MIN_N = 5
"""Fewest trials per arm (scheme, in one cell) for a speedup or a rate to decide anything."""
ALPHA = 0.05
"""Significance level of the tests (two-sided 95% intervals, sign and Fisher tests)."""
C1_EARLY_STEPS = 3
"""C1: the reference level is the mean hidden variance over this many first steps."""
C1_RATIO_RANGE = (0.5, 2.0)
"""C1 (constant): last-step / early variance within this range."""
C1_MIN_LEVEL = 1e-3
"""C1 (constant): a last-step variance below this has vanished (nothing is carried)."""
C1_MAX_SATURATION = 0.5
"""C1 (constant): more than this share of units saturated at the last step is not a
signal kept constant but one pinned at +-1."""
C1_LEVEL_RANGE = (0.5, 2.0)
"""C1 (level): "~1" means a last-step variance within this range."""
C2_LOST_SATURATION = 0.9
"""C2: the signal is lost at a hidden size when more than this share of units is saturated
at the last step (or most of its trials are frozen)."""
C2_VANISHED_VARIANCE = 1e-3
"""C2: the signal has vanished at a size when the median last-step hidden variance is below
this and the units are not saturated."""
C2_TREND_TOLERANCE = 0.02
"""C2: saturation "does not fall" with size: each size >= the previous one's minus this."""
C4_RANGE = (2.0, 10.0)
"""C4: the claimed range of the speedup."""
C5_TINY_HIDDEN = 8
"""C5: a "tiny" model has at most this many hidden units."""
C5_LARGE_HIDDEN = 32
"""C5: a model "at scale" has at least this many hidden units."""
C5_WORKS_RATE = 0.5
"""C5: "works": at least this share of a cell's trials converged."""
C6_NORM_TOLERANCE = 0.1
"""C6 (a): "preserves norm exactly": |dL/dh_0| / |dL/dh_T-1| (the gradient norm carried back
over the whole sequence) within 1 +- this."""
GAIN_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Verdict:
    """One claim's verdict, the rule that gave it and the numbers that decided it."""

    claim_id: str
    """"C1" .. "C6", or a declared comparison's id."""
    claim: str
    """The claim's text."""
    verdict: str
    """One of :data:`VERDICTS`."""
    rule: str
    """The rule applied, in words a reader can check."""
    evidence: str
    """The numbers that decided it, in a few sentences."""
    details: pd.DataFrame | None = None
    """The table behind it, when there is one."""
    numbers: dict[str, Any] = field(default_factory=dict)
    """What the rule used, machine-readable (``verdicts.json``)."""

    def to_dict(self) -> dict[str, Any]:
        """``{id, text, verdict, rule, evidence, numbers}`` with JSON-safe numbers."""
        return {
            "id": self.claim_id,
            "text": self.claim,
            "verdict": self.verdict,
            "rule": self.rule,
            "evidence": self.evidence,
            "numbers": _json_safe(self.numbers),
        }


@dataclass(frozen=True)
class Claim:
    """A built-in claim: its text, its rule in words, and its judge."""

    id: str
    text: str
    rule: str
    judge: Callable[[StudyTables, Options], Verdict]


@dataclass(frozen=True)
class Options:
    """Knobs of the statistics a judge may use."""

    n_boot: int = 2000
    seed: int = 0


# --------------------------------------------------------------------------- helpers


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if value is pd.NA or value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


def plain_scheme(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose scheme is applied to every matrix (no recurrent override) at gain 1."""
    if frame.empty:
        return frame
    mask = frame["init_recurrent"].isna() & np.isclose(frame["scale"].astype(float), 1.0)
    if "recurrent_scale" in frame:
        mask &= np.isclose(frame["recurrent_scale"].astype(float), 1.0)
    return frame[mask]


def recurrent_scheme(frame: pd.DataFrame) -> pd.Series:
    """The scheme that drew Whh: ``init_recurrent`` where set, else ``init``."""
    rec = frame["init_recurrent"].astype(object)
    return rec.where(rec.notna(), frame["init"].astype(object)).astype(str)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for evidence text: 3 significant digits, "n/a" for missing."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def _pct(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100 * value:.0f}%"


def _combine(verdicts: Iterable[str]) -> str:
    """Combine sub-verdicts: all the same -> that; otherwise partly supported."""
    found = [v for v in verdicts if v != NOT_MEASURED]
    if not found:
        return NOT_MEASURED
    if all(v == found[0] for v in found):
        return found[0]
    return PARTLY


def _rate(frame: pd.DataFrame, outcome: str = "converged") -> float:
    return float((frame["outcome"] == outcome).mean()) if len(frame) else math.nan


def wilson(successes: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """Wilson score interval of a proportion (NaNs for n = 0)."""
    if n == 0:
        return math.nan, math.nan
    z = float(sps.norm.ppf(1 - alpha / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _label(row: Any, dims: Sequence[str]) -> str:
    parts = []
    for dim in dims:
        value = row[dim]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        parts.append(f"{value}" if dim in ("cell", "task", "device_type") else f"{dim} {value}")
    return ", ".join(parts) or "all trials"


def _varying(frame: pd.DataFrame, candidates: Sequence[str]) -> list[str]:
    return [c for c in candidates if c in frame and frame[c].nunique(dropna=False) > 1]


def _theory(row: Any, **override: Any) -> Any:
    """The mean-field prediction for a trials row (``models.theory.predict``)."""
    from models.theory import predict

    values = {
        "task": str(row["task"]),
        "cell": str(row["cell"]),
        "hidden": int(row["hidden"]),
        "seq_len": int(row["seq_len"]),
        "init": str(row["init"]),
        "init_recurrent": None if pd.isna(row["init_recurrent"]) else str(row["init_recurrent"]),
        "scale": float(row["scale"]),
        "recurrent_scale": float(row.get("recurrent_scale", row["scale"])),
    }
    values.update(override)
    return predict(**values)


def _not_measured(claim: Claim, need: str, **numbers: Any) -> Verdict:
    return Verdict(claim.id, claim.text, NOT_MEASURED, claim.rule, need, numbers=numbers)


# --------------------------------------------------------------------------- speedups

WITHIN = "within"
BELOW = "below"
ABOVE = "above"
UNBOUNDED = "unbounded"
AT_LEAST = "at least"
SMALL_N = "n too small"
CELL_INCONCLUSIVE = "inconclusive"
CONTRADICTS = (BELOW, ABOVE, UNBOUNDED)
"""Cell classes that contradict a claimed range [low, high] (UNBOUNDED: above any high)."""

SPEEDUP_RULE = (
    "Per cell (task, cell type, hidden, seq_len, device type and any setting that varies): "
    "speedup = Kaplan-Meier median epochs-to-target of the slower scheme / the faster one's, "
    f"with a 95% bootstrap interval [lo, hi]. With fewer than {MIN_N} trials in an arm the cell "
    "is inconclusive (n too small). A cell is within [a, b] only if a <= lo and hi <= b; "
    "below if hi < a; above if lo > b. When the slower scheme's median is not reached the "
    "speedup is only a lower bound and lo is its confidence bound: it supports 'at least lo' "
    "and never 'within'; above if lo > b. When at least half of the slower scheme's trials are "
    "frozen (zero gradient at init) its median is infinite: the speedup is unbounded (it cannot "
    "train), which contradicts any finite range. When the faster scheme's own median is not "
    "reached nothing can be said (inconclusive). The claim is supported if every cell is "
    "within; refuted if no cell is within and at least one is below, above or unbounded; "
    "partly supported if some cells are within and others are not; inconclusive if no cell "
    "decides. Paired view: over every pair of trials sharing a seed, who converged first "
    "(an exact sign test)."
)


def classify_speedup(
    *,
    n_a: int,
    n_b: int,
    estimate: float | None,
    lo: float | None,
    hi: float | None,
    kind: str,
    low: float,
    high: float,
    min_n: int = MIN_N,
) -> str:
    """One speedup cell's class under :data:`SPEEDUP_RULE`.

    Args:
        n_a, n_b: trials of the faster and the slower arm.
        estimate, lo, hi: the speedup and its 95% interval (None: not bounded on that side).
        kind: ``finite``, ``lower_bound`` (B's median not reached), ``unbounded`` (B
            cannot train) or ``none`` (A's median not reached).
        low, high: the claimed range (``high`` may be ``inf``).

    Returns:
        One of WITHIN, BELOW, ABOVE, UNBOUNDED, AT_LEAST, SMALL_N, CELL_INCONCLUSIVE.
    """
    if min(n_a, n_b) < min_n:
        return SMALL_N
    if kind == "unbounded":
        return WITHIN if math.isinf(high) else UNBOUNDED
    if kind == "none" or estimate is None or pd.isna(estimate):
        return CELL_INCONCLUSIVE
    lo_v = 0.0 if lo is None or pd.isna(lo) else float(lo)
    hi_v = math.inf if hi is None or pd.isna(hi) else float(hi)
    if kind == "lower_bound":
        if lo_v > high:
            return ABOVE
        if math.isinf(high) and lo_v >= low:
            return WITHIN  # "at least low" is exactly what a lower bound can show
        return AT_LEAST if lo_v > 0 else CELL_INCONCLUSIVE
    if low <= lo_v and hi_v <= high:
        return WITHIN
    if hi_v < low:
        return BELOW
    if lo_v > high:
        return ABOVE
    return CELL_INCONCLUSIVE


def combine_cells(classes: Sequence[str]) -> str:
    """The claim's verdict from its cells' classes (the last sentence of the rule)."""
    if not classes:
        return NOT_MEASURED
    within = sum(c == WITHIN for c in classes)
    contra = sum(c in CONTRADICTS for c in classes)
    if within == len(classes):
        return SUPPORTED
    if within == 0 and contra:
        return REFUTED
    if within:
        return PARTLY
    return INCONCLUSIVE


SPEEDUP_BY: list[str] = ["task", "cell", "hidden", "seq_len"]
"""The cells a speedup is computed in (device type is added by ``speedup_table``)."""

SETTINGS: tuple[str, ...] = (
    "optimizer",
    "lr",
    "clip",
    "batch_size",
    "batches_per_epoch",
    "max_epochs",
    "target_loss",
    "patience",
    "divergence_factor",
    "val_size",
    "data_seed",
    "corpus",
)
"""Trial settings that, where a study varies them per scheme and seed, split speedup cells."""


def speedup_cells(trials: pd.DataFrame) -> list[str]:
    """:data:`SPEEDUP_BY`, plus every setting that varies within one scheme and seed there."""
    by = list(SPEEDUP_BY)
    if trials.empty:
        return by
    for name in SETTINGS:
        if name not in trials:
            continue
        groups = trials.groupby([*by, "device_type", "init", "seed"], dropna=False)[name]
        if (groups.nunique(dropna=False) > 1).any():
            by.append(name)
    return by


def comparison_table(
    trials: pd.DataFrame,
    faster: str,
    than: str,
    low: float,
    high: float,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Speedup of ``faster`` over ``than`` per cell, classified by :data:`SPEEDUP_RULE`.

    Columns: ``stats.speedup_table``'s plus ``frozen_b`` (share of ``than``'s trials
    frozen), ``kind`` (finite / lower_bound / unbounded / none) and ``cell_verdict``.
    """
    from pipeline.analysis.stats import speedup_table

    by = speedup_cells(trials)
    table = speedup_table(trials, faster, than, by, n_boot=n_boot, seed=seed).copy()
    if table.empty:
        return table
    keys = [*by, "device_type"]
    frozen = (
        trials[trials["init"] == than]
        .assign(frozen=lambda f: f["outcome"] == "frozen")
        .groupby(keys, dropna=False)["frozen"]
        .mean()
        .rename("frozen_b")
        .reset_index()
    )
    table = table.merge(frozen, on=keys, how="left")
    kinds = []
    for row in table.itertuples():
        if bool(row.lower_bound) and row.frozen_b >= 0.5:
            kinds.append("unbounded")
        elif pd.isna(row.speedup):
            kinds.append("none")
        else:
            kinds.append("lower_bound" if bool(row.lower_bound) else "finite")
    table["kind"] = kinds
    table["cell_verdict"] = [
        classify_speedup(
            n_a=int(r.n_a),
            n_b=int(r.n_b),
            estimate=None if pd.isna(r.speedup) else float(r.speedup),
            lo=None if pd.isna(r.lo) else float(r.lo),
            hi=None if pd.isna(r.hi) else float(r.hi),
            kind=k,
            low=low,
            high=high,
        )
        for r, k in zip(table.itertuples(), kinds, strict=True)
    ]
    return table


def _cell_text(row: Any, faster: str, than: str, low: float, high: float) -> str:
    cls, kind = row["cell_verdict"], row["kind"]
    span = f"at least {low:g}x" if math.isinf(high) else f"{low:g}-{high:g}x"
    n = f"n={int(row['n_a'])}/{int(row['n_b'])}"
    if kind == "unbounded":
        text = f"unbounded ({than} frozen in {_pct(float(row['frozen_b']))}: cannot train)"
    elif kind == "none":
        text = f"n/a ({faster}'s median not reached)"
    elif kind == "lower_bound" and pd.isna(row["lo"]):
        text = f"no bound ({than}'s median not reached; 95% lower limit 0)"
    elif kind == "lower_bound":
        text = f"at least {fmt(row['lo'])}x (95% lower bound; {than}'s median not reached)"
    else:
        text = f"{fmt(row['speedup'])}x [{fmt(row['lo'])}, {fmt(row['hi'])}]"
    word = {
        WITHIN: f"within {span}",
        BELOW: f"below {low:g}x",
        ABOVE: f"above {high:g}x",
        UNBOUNDED: f"above {high:g}x",
        AT_LEAST: "a lower bound cannot show 'within'",
        SMALL_N: f"inconclusive: n too small, needs >= {MIN_N} per arm",
        CELL_INCONCLUSIVE: "inconclusive",
    }[cls]
    if cls == CELL_INCONCLUSIVE and kind == "finite":
        word += f": the interval straddles {low:g}x or {high:g}x"
    pairs = ""
    if "pairs_a_first" in row and pd.notna(row.get("pairs_a_first")):
        n_pairs = int(row["pairs_a_first"] + row["pairs_b_first"] + row["pairs_tied"])
        if n_pairs:
            pairs = (
                f"; {faster} first in {int(row['pairs_a_first'])} of {n_pairs} pairs "
                f"(sign test p={fmt(row['sign_p'], 2)})"
            )
    return f"{text}, {n} ({word}{pairs})"


def judge_comparison(
    claim_id: str,
    text: str,
    trials: pd.DataFrame,
    faster: str,
    than: str,
    low: float,
    high: float,
    options: Options,
) -> Verdict:
    """A speedup claim (C4 or a declared comparison) judged cell by cell."""
    schemes = set(trials["init"].astype(str)) if len(trials) else set()
    if faster not in schemes or than not in schemes:
        return Verdict(
            claim_id,
            text,
            NOT_MEASURED,
            SPEEDUP_RULE,
            f"needs {faster} and {than} trials at gain 1 in the same cells; this study has "
            f"{', '.join(sorted(schemes)) or 'none'}.",
        )
    table = comparison_table(
        trials, faster, than, low, high, n_boot=options.n_boot, seed=options.seed
    )
    if table.empty:
        return Verdict(
            claim_id,
            text,
            NOT_MEASURED,
            SPEEDUP_RULE,
            f"needs {faster} and {than} trials in the same cells; they share none here.",
        )
    dims = _varying(table, [*speedup_cells(trials), "device_type"]) or ["seq_len"]
    classes = table["cell_verdict"].tolist()
    verdict = combine_cells(classes)
    parts = [
        f"{_label(row, dims)}: {_cell_text(row, faster, than, low, high)}"
        for _, row in table.iterrows()
    ]
    evidence = f"Speedup of {faster} over {than}: " + "; ".join(parts) + "."
    if verdict == INCONCLUSIVE:
        evidence += " " + _what_would_decide(table)
    cells = []
    for _, row in table.iterrows():
        cells.append(
            {
                **{d: row[d] for d in dims},
                "n_a": int(row["n_a"]),
                "n_b": int(row["n_b"]),
                "estimate": math.inf
                if row["kind"] == "unbounded"
                else None
                if pd.isna(row["speedup"])
                else float(row["speedup"]),
                "lo": None if pd.isna(row["lo"]) else float(row["lo"]),
                "hi": None if pd.isna(row["hi"]) else float(row["hi"]),
                "kind": row["kind"],
                "classification": row["cell_verdict"],
            }
        )
    numbers = {"faster": faster, "than": than, "range": [low, high], "cells": cells}
    return Verdict(claim_id, text, verdict, SPEEDUP_RULE, evidence, table, numbers)


def _what_would_decide(table: pd.DataFrame) -> str:
    classes = set(table["cell_verdict"])
    hints = []
    if SMALL_N in classes:
        hints.append(f"at least {MIN_N} seeds per scheme in each cell")
    if AT_LEAST in classes or "none" in set(table["kind"]):
        hints.append("a longer epoch budget (or a tuned lr), so the medians are reached")
    if CELL_INCONCLUSIVE in classes:
        hints.append("more seeds, to narrow the intervals")
    return "What would decide it: " + "; ".join(hints or ["more data"]) + "."


# --------------------------------------------------------------------------- C1

C1_RULE = (
    f"Xavier on {'/'.join(TANH_CELLS)} at gain 1, per-step hidden variance at init on the "
    "probe batch. (a) Constant: the median over trials of (variance at the last step / mean "
    f"over the first {C1_EARLY_STEPS} steps) lies in [{C1_RATIO_RANGE[0]:g}, "
    f"{C1_RATIO_RANGE[1]:g}], the last-step variance has not vanished (> {C1_MIN_LEVEL:g}) and "
    f"at most {C1_MAX_SATURATION:g} of the units are saturated (not pinned at +-1). (b) ~1: "
    f"the median last-step variance lies in [{C1_LEVEL_RANGE[0]:g}, {C1_LEVEL_RANGE[1]:g}]; "
    "the mean-field fixed point q* (models.theory) is shown beside it. Supported if (a) and "
    "(b) hold; partly supported if only (a) holds; refuted if (a) fails."
)


def c1_parts(steps: pd.DataFrame) -> pd.DataFrame:
    """Per trial of ``steps``: early and last variance, their ratio, last saturation."""
    rows = []
    for number, group in steps.sort_values("step").groupby("trial_number", sort=True):
        var = group["hidden_var"].astype(float).to_numpy()
        sat = group["hidden_sat"].astype(float).to_numpy()
        early = float(np.mean(var[:C1_EARLY_STEPS]))
        last = float(var[-1])
        first = group.iloc[0]
        rows.append(
            {
                "trial_number": number,
                "init": first["init"],
                "scale": float(first["scale"]),
                "hidden": int(first["hidden"]),
                "seq_len": int(first["seq_len"]),
                "early_var": early,
                "last_var": last,
                "ratio": last / early if early > 0 else math.nan,
                "last_sat": float(sat[-1]),
            }
        )
    return pd.DataFrame(rows)


def c1_constant(parts: pd.DataFrame) -> tuple[bool, dict[str, float]]:
    """C1 (a) on :func:`c1_parts` rows: constant, not vanished, not saturated."""
    ratio = float(parts["ratio"].median(skipna=True))
    level = float(parts["last_var"].median(skipna=True))
    sat = float(parts["last_sat"].median(skipna=True))
    ok = (
        C1_RATIO_RANGE[0] <= ratio <= C1_RATIO_RANGE[1]
        and level > C1_MIN_LEVEL
        and sat <= C1_MAX_SATURATION
    )
    return ok, {"ratio": ratio, "level": level, "saturation": sat}


def judge_c1(tables: StudyTables, options: Options) -> Verdict:
    """C1: Xavier's per-step hidden variance at init (:data:`C1_RULE`)."""
    claim = CLAIMS["C1"]
    steps = plain_scheme(tables.steps)
    if not steps.empty:
        steps = steps[(steps["init"] == XAVIER) & steps["cell"].isin(TANH_CELLS)]
    if steps.empty:
        return _not_measured(
            claim, "needs Xavier trials on rnn_tanh at gain 1; this study has none."
        )
    parts = c1_parts(steps)
    if not np.isfinite(parts["ratio"]).any():
        return _not_measured(claim, "needs finite per-step hidden variances at init.")
    constant, m = c1_constant(parts)
    level_ok = C1_LEVEL_RANGE[0] <= m["level"] <= C1_LEVEL_RANGE[1]
    trials = plain_scheme(tables.trials)
    trials = trials[(trials["init"] == XAVIER) & trials["cell"].isin(TANH_CELLS)]
    predicted = [
        _theory(row).hidden_var[-1]
        for _, row in trials.drop_duplicates(["task", "cell", "hidden", "seq_len"]).iterrows()
    ]
    q_pred = [
        _theory(row).q_star
        for _, row in trials.drop_duplicates(["task", "cell", "hidden", "seq_len"]).iterrows()
    ]
    pred = float(np.median(predicted)) if predicted else math.nan
    q_star = float(np.median(q_pred)) if q_pred else math.nan
    verdict = SUPPORTED if constant and level_ok else PARTLY if constant else REFUTED
    evidence = (
        f"{len(parts)} Xavier trials: (a) last/early variance ratio {fmt(m['ratio'])}, "
        f"last-step variance {fmt(m['level'])}, saturated share {fmt(m['saturation'])}: "
        f"{'constant' if constant else 'not constant (or vanished or saturated)'}; (b) level "
        f"{fmt(m['level'])} vs ~1: {'holds' if level_ok else 'does not hold'}. Mean-field "
        f"theory predicts {fmt(pred)} at the last step (stationary q* = {fmt(q_star)} for this "
        "input drive): a tanh RNN's stationary variance is q* < 1, not 1."
    )
    numbers = {
        "measured_variance": m["level"],
        "predicted_variance": pred,
        "q_star": q_star,
        "ratio": m["ratio"],
        "saturation": m["saturation"],
        "constant": constant,
        "level_near_1": level_ok,
        "n": len(parts),
    }
    return Verdict(claim.id, claim.text, verdict, claim.rule, evidence, parts, numbers)


# --------------------------------------------------------------------------- C2

C2_RULE = (
    "uniform01 at gain 1, per cell type with at least two hidden sizes (others are left out). "
    "Outcome: the signal is lost at a size if the median last-step saturation share exceeds "
    f"{C2_LOST_SATURATION:g} (saturated), or the units are not saturated and the median "
    f"last-step hidden variance is below {C2_VANISHED_VARIANCE:g} (vanished), or at least half "
    "are frozen; it holds if the signal is lost at the largest size and saturation does not "
    f"fall with size (tolerance {C2_TREND_TOLERANCE:g}). Mechanism, reported separately: the "
    "claim says 'vanish' (the hidden state shrinks towards 0); saturation (|h| -> 1) driven "
    "by the weights' mean (Perron root of U[0,1] ~ N/2, models.theory) is another. Supported "
    "if the outcome holds by vanishing; partly supported if it holds otherwise (saturated, "
    "or frozen with neither); refuted if the signal is not lost at the largest size."
)


def judge_c2(tables: StudyTables, options: Options) -> Verdict:
    """C2: uniform[0,1] loses the signal at large hidden sizes? (:data:`C2_RULE`)."""
    claim = CLAIMS["C2"]
    base = plain_scheme(tables.trials)
    uni = base[base["init"] == UNIFORM] if not base.empty else base
    if uni.empty or uni.groupby("cell")["hidden"].nunique().max() < 2:
        sizes = sorted(uni["hidden"].unique()) if len(uni) else []
        return _not_measured(
            claim,
            "needs uniform01 trials at gain 1 at two or more hidden sizes (the claim is a "
            f"trend with size); this study has hidden sizes {sizes or 'none'}.",
        )
    subs, texts, frames = [], [], []
    numbers: dict[str, Any] = {"sizes": []}
    for cell, group in uni.groupby("cell", sort=True):
        if group["hidden"].nunique() < 2:
            texts.append(f"{cell}: one hidden size only, no trend to judge")
            continue
        rows = []
        for hidden, g in group.groupby("hidden", sort=True):
            first = g.iloc[0]
            pred = _theory(first)
            rows.append(
                {
                    "cell": cell,
                    "hidden": int(hidden),
                    "n": len(g),
                    "saturation": float(g["hidden_sat_last"].median()),
                    "variance": float(g["hidden_var_last"].median()),
                    "frozen_share": _rate(g, "frozen"),
                    "spectral_radius": float(g["spectral_radius"].median()),
                    "perron_predicted": float(pred.perron_root),
                    "saturation_predicted": float(pred.hidden_sat[-1]),
                }
            )
        table = pd.DataFrame(rows)
        frames.append(table)
        saturated = table["saturation"] > C2_LOST_SATURATION
        vanished = ~saturated & (table["variance"] < C2_VANISHED_VARIANCE)
        lost = saturated | vanished | (table["frozen_share"] >= 0.5)
        sats = table["saturation"].to_numpy()
        trend = bool(np.all(np.diff(sats) >= -C2_TREND_TOLERANCE))
        largest = table.iloc[-1]
        outcome = bool(lost.iloc[-1]) and trend
        by_saturation, by_vanishing = bool(saturated.iloc[-1]), bool(vanished.iloc[-1])
        if not outcome:
            subs.append(REFUTED)
        else:
            subs.append(SUPPORTED if by_vanishing else PARTLY)
        per_size = "; ".join(
            f"hidden {r.hidden} (n={r.n}): saturated {fmt(r.saturation)} (predicted "
            f"{fmt(r.saturation_predicted)}), frozen {_pct(r.frozen_share)}, spectral radius "
            f"{fmt(r.spectral_radius)} (Perron root predicted {fmt(r.perron_predicted)})"
            for r in table.itertuples()
        )
        mech = (
            "by saturation driven by the weights' mean, not by vanishing"
            if by_saturation
            else "by vanishing"
            if by_vanishing
            else "with its trials frozen, by neither vanishing nor saturation"
        )
        texts.append(
            f"{cell}: {per_size}. The signal is "
            + (
                f"lost at hidden {largest['hidden']}, {mech}"
                if outcome
                else "not lost at the largest size"
            )
            + ("" if trend else " (saturation falls with size)")
        )
        numbers["sizes"] += table.to_dict("records")
    verdict = _combine(subs)
    details = pd.concat(frames, ignore_index=True)
    return Verdict(
        claim.id, claim.text, verdict, claim.rule, ". ".join(texts) + ".", details, numbers
    )


# --------------------------------------------------------------------------- C3

C3_RULE = (
    "Needs a sweep of the recurrent gain g (recurrent_scale, Whh alone) with one scheme at "
    "fixed input scale, on both sides of 1. Per gain, the measured per-step factor chi of the "
    "squared gradient norm back through time, (|dL/dh_0| / |dL/dh_T-1|)^(2/(T-1)) at init "
    "(median over trials), beside mean-field theory's chi = g^2 E[tanh'(h)^2] (models.theory); "
    "chi < 1 vanishes, > 1 explodes. The claim puts the boundary at g = 1: its half 'g < 1 "
    "vanishes' holds if chi < 1 at every gain < 1, its half 'g > 1 explodes' if chi > 1 at "
    "every gain > 1. Supported if both halves hold; partly supported if one does; refuted if "
    "neither. The predicted critical gain (chi = 1) is reported with the measured crossing."
)


def _chi_measured(frame: pd.DataFrame) -> pd.Series:
    first = frame["grad_norm_first"].astype(float).to_numpy()
    last = frame["grad_norm_last"].astype(float).to_numpy()
    steps = frame["seq_len"].astype(float).to_numpy() - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.exp(2 * (np.log(first) - np.log(last)) / steps)
    return pd.Series(out, index=frame.index, dtype=float)


def _crossing(gains: np.ndarray, chis: np.ndarray) -> float:
    """The gain where log(chi) crosses 0, interpolated between neighbouring gains."""
    with np.errstate(divide="ignore"):
        logs = np.log(chis)
    for i in range(len(gains) - 1):
        if np.isfinite(logs[i]) and np.isfinite(logs[i + 1]) and logs[i] < 0 <= logs[i + 1]:
            t = -logs[i] / (logs[i + 1] - logs[i])
            return float(gains[i] + t * (gains[i + 1] - gains[i]))
    return math.nan


def judge_c3(tables: StudyTables, options: Options) -> Verdict:
    """C3: gradients back through time against the recurrent gain (:data:`C3_RULE`)."""
    claim = CLAIMS["C3"]
    trials = tables.trials
    predicted: dict[str, Any] = {}
    ref = plain_scheme(trials)
    ref = ref[(ref["init"] == XAVIER) & ref["cell"].isin(TANH_CELLS)] if len(ref) else ref
    if len(ref):
        pred = _theory(ref.iloc[0])
        predicted = {
            "chi_predicted": pred.chi,
            "critical_gain_predicted": pred.critical_gain,
        }
    if trials.empty:
        return _not_measured(claim, "needs trials; this study has none.", **predicted)
    frame = trials[trials["cell"].isin(TANH_CELLS)].assign(
        scheme=recurrent_scheme(trials), chi=_chi_measured(trials)
    )
    frame = frame[np.isfinite(frame["chi"])]
    sweeps = []
    for key, group in frame.groupby(["scheme", "cell", "task", "hidden", "seq_len", "scale"]):
        gains = group["recurrent_scale"].astype(float)
        if (gains < 1 - GAIN_TOLERANCE).any() and (gains > 1 + GAIN_TOLERANCE).any():
            sweeps.append((key, group))
    if not sweeps:
        return _not_measured(
            claim,
            "needs a sweep of recurrent_scale (the gain of Whh alone) on both sides of 1 with "
            "one scheme on rnn_tanh, e.g. studies/scale_sweep.yaml.",
            **predicted,
        )
    subs, texts, rows = [], [], []
    numbers: dict[str, Any] = {"sweeps": []}
    for (scheme, cell, task, hidden, seq_len, scale), group in sweeps:
        per_gain = group.groupby("recurrent_scale", sort=True).agg(
            n=("trial_number", "size"), chi=("chi", "median"), radius=("spectral_radius", "median")
        )
        first = group.iloc[0]
        per_gain["chi_predicted"] = [
            float(_theory(first, recurrent_scale=float(g)).chi) for g in per_gain.index
        ]
        gains = per_gain.index.to_numpy(dtype=float)
        below = per_gain[gains < 1 - GAIN_TOLERANCE]
        above = per_gain[gains > 1 + GAIN_TOLERANCE]
        vanish_ok = bool((below["chi"] < 1).all())
        explode_ok = bool((above["chi"] > 1).all())
        subs.append(
            SUPPORTED
            if vanish_ok and explode_ok
            else PARTLY
            if vanish_ok or explode_ok
            else REFUTED
        )
        crit_pred = float(_theory(first, recurrent_scale=1.0).critical_gain)
        crit_meas = _crossing(gains, per_gain["chi"].to_numpy(dtype=float))
        detail = per_gain.reset_index().assign(
            scheme=scheme, cell=cell, task=task, hidden=hidden, seq_len=seq_len, scale=scale
        )
        rows.append(detail)
        gains_text = ", ".join(
            f"g {fmt(g)}: chi {fmt(r.chi)} (predicted {fmt(r.chi_predicted)})"
            for g, r in per_gain.iterrows()
        )
        texts.append(
            f"{scheme}, hidden {hidden}, seq_len {seq_len}: {gains_text}; gains < 1 "
            f"{'all vanish' if vanish_ok else 'do not all vanish'}, gains > 1 "
            f"{'all explode' if explode_ok else 'do not all explode'}; critical gain "
            f"predicted {fmt(crit_pred)}, measured {fmt(crit_meas)}"
        )
        numbers["sweeps"].append(
            {
                "scheme": scheme,
                "hidden": int(hidden),
                "seq_len": int(seq_len),
                "gains": gains.tolist(),
                "chi_measured": per_gain["chi"].tolist(),
                "chi_predicted": per_gain["chi_predicted"].tolist(),
                "critical_gain_predicted": crit_pred,
                "critical_gain_measured": crit_meas,
            }
        )
    numbers.update(predicted)
    if numbers["sweeps"]:
        numbers["critical_gain_predicted"] = numbers["sweeps"][0]["critical_gain_predicted"]
        numbers["critical_gain_measured"] = numbers["sweeps"][0]["critical_gain_measured"]
    details = pd.concat(rows, ignore_index=True)
    return Verdict(
        claim.id, claim.text, _combine(subs), claim.rule, ". ".join(texts) + ".", details, numbers
    )


# --------------------------------------------------------------------------- C4


def judge_c4(tables: StudyTables, options: Options) -> Verdict:
    """C4: Xavier's speedup over uniform[0,1] per cell (:data:`SPEEDUP_RULE`)."""
    claim = CLAIMS["C4"]
    low, high = C4_RANGE
    verdict = judge_comparison(
        claim.id, claim.text, plain_scheme(tables.trials), XAVIER, UNIFORM, low, high, options
    )
    if verdict.verdict == REFUTED:
        verdict = Verdict(
            verdict.claim_id,
            verdict.claim,
            verdict.verdict,
            verdict.rule,
            "Refuted as stated. " + verdict.evidence,
            verdict.details,
            verdict.numbers,
        )
    return verdict


def xavier_speedups(trials: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Speedup of Xavier over every other scheme at gain 1, classified against C4's range.

    uniform01 comes first (the headline), then the others by name; ``comparison``,
    ``other`` and ``in_verdict`` (True for the uniform01 rows, the only ones C4 reads) are
    added to :func:`comparison_table`'s columns. Empty without Xavier and another scheme.
    """
    base = plain_scheme(trials)
    schemes = set(base["init"].astype(str)) if not base.empty else set()
    if XAVIER not in schemes or len(schemes) < 2:
        return pd.DataFrame()
    rest = sorted(schemes - {XAVIER, UNIFORM})
    others = [UNIFORM, *rest] if UNIFORM in schemes else rest
    frames = []
    low, high = C4_RANGE
    for other in others:
        table = comparison_table(base, XAVIER, other, low, high, n_boot=n_boot, seed=seed)
        if table.empty:
            continue
        table.insert(0, "other", other)
        table.insert(0, "comparison", f"{XAVIER} vs {other}")
        frames.append(table)
    if not frames:
        return pd.DataFrame()
    table = pd.concat(frames, ignore_index=True)
    table["in_verdict"] = table["other"] == UNIFORM
    return table


# --------------------------------------------------------------------------- C5

C5_RULE = (
    f"uniform01 at gain 1, per cell type, needs a tiny cell (hidden <= {C5_TINY_HIDDEN}) and a "
    f"large one (hidden >= {C5_LARGE_HIDDEN}), each with Xavier in the same cell and at least "
    f"{MIN_N} trials per scheme. Outcome: 'works' at the tiny cell if at least "
    f"{C5_WORKS_RATE:g} of uniform01's trials converged; 'fails at scale' if fewer than "
    f"{C5_WORKS_RATE:g} converged at the large cell (stalled, frozen, censored and diverged all "
    "count as failing) while Xavier there converged at least as often as that threshold. "
    "Mechanism, judged on its own: 'loss explodes or NaN' holds if most failing uniform01 "
    "trials at the large cell diverged; the loss at init relative to the task's baseline is "
    "shown. Supported if the outcome and the mechanism hold; partly supported if only the "
    "outcome holds; refuted if it does not work at the tiny cell or does not fail at the "
    "large one."
)


def judge_c5(tables: StudyTables, options: Options) -> Verdict:
    """C5: uniform[0,1] at a tiny vs a large hidden size (:data:`C5_RULE`)."""
    claim = CLAIMS["C5"]
    base = plain_scheme(tables.trials)
    base = base[base["init"].isin([UNIFORM, XAVIER])] if len(base) else base
    subs, texts = [], []
    rows: list[dict[str, Any]] = []
    for (cell, task), group in base.groupby(["cell", "task"], sort=True):
        stats_rows = []
        for (hidden, seq_len), g in group.groupby(["hidden", "seq_len"], sort=True):
            u, x = g[g["init"] == UNIFORM], g[g["init"] == XAVIER]
            if len(u) < MIN_N or len(x) < MIN_N:
                continue
            failing = u[u["outcome"] != "converged"]
            stats_rows.append(
                {
                    "cell": cell,
                    "task": task,
                    "hidden": int(hidden),
                    "seq_len": int(seq_len),
                    "n_uniform": len(u),
                    "n_xavier": len(x),
                    "uniform_converged": _rate(u),
                    "xavier_converged": _rate(x),
                    "uniform_frozen": _rate(u, "frozen"),
                    "uniform_stalled": _rate(u, "stalled"),
                    "uniform_diverged": _rate(u, "diverged"),
                    "failing_diverged": _rate(failing, "diverged") if len(failing) else math.nan,
                    "initial_over_baseline": float(
                        (u["initial_loss"] / u["baseline_loss"]).median()
                    ),
                }
            )
        tiny = [r for r in stats_rows if r["hidden"] <= C5_TINY_HIDDEN]
        large = [r for r in stats_rows if r["hidden"] >= C5_LARGE_HIDDEN]
        rows += stats_rows
        if not tiny or not large:
            continue
        t = min(tiny, key=lambda r: r["hidden"] * r["seq_len"])
        big = max(large, key=lambda r: r["hidden"] * r["seq_len"])
        works = t["uniform_converged"] >= C5_WORKS_RATE
        fails = (
            big["uniform_converged"] < C5_WORKS_RATE and big["xavier_converged"] >= C5_WORKS_RATE
        )
        mechanism = big["failing_diverged"] > 0.5
        if not works or not fails:
            subs.append(REFUTED)
        else:
            subs.append(SUPPORTED if mechanism else PARTLY)
        texts.append(
            f"{cell}/{task}: tiny cell hidden {t['hidden']}, seq_len {t['seq_len']}: uniform01 "
            f"converged {_pct(t['uniform_converged'])} of {t['n_uniform']} (Xavier "
            f"{_pct(t['xavier_converged'])}); large cell hidden {big['hidden']}, seq_len "
            f"{big['seq_len']}: uniform01 converged {_pct(big['uniform_converged'])} (frozen "
            f"{_pct(big['uniform_frozen'])}, stalled {_pct(big['uniform_stalled'])}, diverged "
            f"{_pct(big['uniform_diverged'])}; Xavier {_pct(big['xavier_converged'])}); loss at "
            f"init {fmt(big['initial_over_baseline'])}x the baseline. It "
            + ("works tiny" if works else "does not work even tiny")
            + (" and fails at scale" if fails else " and does not fail at scale")
            + (
                ""
                if not (works and fails)
                else (
                    ", by exploding"
                    if mechanism
                    else ", by not learning (not by exploding or NaN)"
                )
            )
        )
    details = pd.DataFrame(rows)
    if not subs:
        sizes = sorted(set(details["hidden"])) if len(details) else []
        return _not_measured(
            claim,
            f"needs uniform01 and Xavier (>= {MIN_N} trials each) at a tiny hidden size "
            f"(<= {C5_TINY_HIDDEN}) and a large one (>= {C5_LARGE_HIDDEN}); this study has "
            f"hidden sizes {sizes or 'none'} with enough trials.",
        )
    numbers = {"cells": details.to_dict("records")}
    return Verdict(
        claim.id, claim.text, _combine(subs), claim.rule, ". ".join(texts) + ".", details, numbers
    )


# --------------------------------------------------------------------------- C6

C6_RULE = (
    "Three sub-checks, each where the study has the data, each holds / fails / inconclusive. "
    "(a) orthogonal preserves norm: in the network, the gradient norm carried back over the "
    "whole sequence at init, |dL/dh_0| / |dL/dh_T-1|, lies within 1 +- "
    f"{C6_NORM_TOLERANCE:g} for orthogonal Whh at gain 1 (median over trials; the per-step "
    "factor is shown beside it). "
    "(b) He suits ReLU: on rnn_relu, he_normal converges in at least half its trials and not "
    "significantly less often than Xavier (or identity, IRNN) in the same cells (one-sided "
    f"Fisher exact test, alpha {ALPHA:g}); fails if it converges in none, or significantly "
    "less often. (c) Xavier is the safe default for tanh: on rnn_tanh, Xavier never diverges, "
    "converges in at least half its trials and not significantly less often than the best "
    "scheme in the same cells; fails if it diverges, converges in none, or significantly less "
    f"often. Each needs >= {MIN_N} trials per scheme; a 0% rate never supports anything. "
    "Supported if every sub-check measured holds and all three were measured; refuted if "
    "every decided sub-check fails; partly supported if some hold; inconclusive otherwise."
)


def _rate_check(mine: pd.DataFrame, others: dict[str, pd.DataFrame], name: str) -> tuple[str, str]:
    """holds / fails / inconclusive for "``name`` converges about as often as the others"."""
    k, n = int((mine["outcome"] == "converged").sum()), len(mine)
    lo, hi = wilson(k, n)
    parts = [f"{name} converged {k}/{n} [{fmt(lo, 2)}, {fmt(hi, 2)}]"]
    worse = False
    for other, frame in others.items():
        k2, n2 = int((frame["outcome"] == "converged").sum()), len(frame)
        p = float(sps.fisher_exact([[k, n - k], [k2, n2 - k2]], alternative="less")[1])
        parts.append(f"{other} {k2}/{n2} (Fisher p={fmt(p, 2)})")
        worse |= p < ALPHA
    if k == 0 or worse:
        return "fails", ", ".join(parts)
    if k / n >= C5_WORKS_RATE:
        return "holds", ", ".join(parts)
    return "inconclusive", ", ".join(parts)


def _shared(frame: pd.DataFrame, schemes: Sequence[str]) -> pd.DataFrame:
    dims = ["task", "hidden", "seq_len"]
    rows = frame[frame["init"].isin(schemes)]
    present = rows.groupby(dims)["init"].nunique()
    keep = present[present == len(set(schemes))].index
    return rows[pd.MultiIndex.from_frame(rows[dims]).isin(keep)]


def judge_c6(tables: StudyTables, options: Options) -> Verdict:
    """C6: three sub-checks (:data:`C6_RULE`)."""
    claim = CLAIMS["C6"]
    trials = tables.trials
    checks: list[dict[str, Any]] = []
    missing: list[str] = []
    base = plain_scheme(trials)

    ortho = base[base["init"] == "orthogonal"] if len(base) else base
    if len(ortho):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = ortho["grad_norm_first"].astype(float) / ortho["grad_norm_last"].astype(float)
        ortho = ortho.assign(ratio=ratio, factor=np.sqrt(_chi_measured(ortho)))
        ortho = ortho[np.isfinite(ortho["ratio"]) & np.isfinite(ortho["factor"])]
    if len(ortho) >= MIN_N:
        carried = float(ortho["ratio"].median())
        factor = float(ortho["factor"].median())
        radius = float(ortho["spectral_radius"].median())
        state = "holds" if abs(carried - 1) <= C6_NORM_TOLERANCE else "fails"
        checks.append(
            {
                "check": "(a) orthogonal preserves norm",
                "state": state,
                "evidence": f"orthogonal Whh has spectral radius {fmt(radius, 4)}; in the "
                f"network the gradient norm carried back over the sequence is {fmt(carried)}x "
                f"its size at the last step ({fmt(factor)} per step; n={len(ortho)})",
                "value": carried,
            }
        )
    else:
        missing.append(f"(a) needs >= {MIN_N} orthogonal trials at gain 1")

    relu = base[base["cell"] == "rnn_relu"] if len(base) else base
    rivals = [s for s in (XAVIER, "identity") if s in set(relu["init"])] if len(relu) else []
    if len(relu) and "he_normal" in set(relu["init"]) and rivals:
        shared = _shared(relu, ["he_normal", *rivals])
        he = shared[shared["init"] == "he_normal"]
        others = {s: shared[shared["init"] == s] for s in rivals}
        if len(he) >= MIN_N and all(len(f) >= MIN_N for f in others.values()):
            state, text = _rate_check(he, others, "he_normal")
            checks.append(
                {"check": "(b) He suits ReLU", "state": state, "evidence": f"rnn_relu: {text}"}
            )
        else:
            missing.append(f"(b) needs >= {MIN_N} he_normal and Xavier trials on rnn_relu")
    else:
        missing.append("(b) needs he_normal and Xavier (or identity) on rnn_relu")

    tanh = base[base["cell"] == "rnn_tanh"] if len(base) else base
    if len(tanh) and XAVIER in set(tanh["init"]) and tanh["init"].nunique() > 1:
        shared = _shared(tanh, sorted(set(tanh["init"].astype(str))))
        if shared.empty:
            keys = tanh.loc[tanh["init"] == XAVIER, ["task", "hidden", "seq_len"]]
            shared = tanh.merge(keys.drop_duplicates(), on=["task", "hidden", "seq_len"])
        rates = shared.groupby("init")["outcome"].apply(lambda s: float((s == "converged").mean()))
        best = str(rates.drop(XAVIER).idxmax())
        xav = shared[shared["init"] == XAVIER]
        if len(xav) >= MIN_N and (shared["init"] == best).sum() >= MIN_N:
            state, text = _rate_check(xav, {best: shared[shared["init"] == best]}, XAVIER)
            diverged = float(xav["diverged"].astype(bool).mean())  # at any epoch
            if diverged > 0:
                state = "fails"
            checks.append(
                {
                    "check": "(c) Xavier is the safe default for tanh",
                    "state": state,
                    "evidence": f"rnn_tanh: {text}; Xavier diverged {_pct(diverged)}",
                }
            )
        else:
            missing.append(f"(c) needs >= {MIN_N} Xavier trials and of the best other scheme")
    else:
        missing.append("(c) needs Xavier and another scheme on rnn_tanh")

    details = pd.DataFrame(checks, columns=["check", "state", "evidence", "value"])
    if not checks:
        return _not_measured(claim, "; ".join(missing) + ".")
    states = [c["state"] for c in checks]
    decided = [s for s in states if s != "inconclusive"]
    if decided and all(s == "holds" for s in states) and not missing:
        verdict = SUPPORTED
    elif decided and all(s == "fails" for s in decided):
        verdict = REFUTED
    elif "holds" in states:
        verdict = PARTLY
    else:
        verdict = INCONCLUSIVE
    evidence = "; ".join(f"{c['evidence']}: {c['state']}" for c in checks)
    if missing:
        evidence += "; not measured: " + ", ".join(missing)
    numbers = {"checks": [{k: c.get(k) for k in ("check", "state", "value")} for c in checks]}
    return Verdict(claim.id, claim.text, verdict, claim.rule, evidence + ".", details, numbers)


# --------------------------------------------------------------------------- registry

CLAIMS: dict[str, Claim] = {
    c.id: c
    for c in (
        Claim(
            "C1",
            "Xavier keeps hidden-state variance roughly constant (~1) across time steps",
            C1_RULE,
            judge_c1,
        ),
        Claim(
            "C2",
            "uniform[0,1] (mean 0.5, variance 1/12) makes the signal vanish for large hidden "
            "sizes",
            C2_RULE,
            judge_c2,
        ),
        Claim(
            "C3",
            "recurrent weights with gain > 1 explode gradients back through time, < 1 vanish",
            C3_RULE,
            judge_c3,
        ),
        Claim(
            "C4",
            "Xavier cuts epochs-to-convergence 2-10x against uniform[0,1] (headline)",
            SPEEDUP_RULE,
            judge_c4,
        ),
        Claim(
            "C5",
            "uniform[0,1] works for tiny models and short sequences, fails at scale (loss "
            "explodes or NaN)",
            C5_RULE,
            judge_c5,
        ),
        Claim(
            "C6",
            "He suits ReLU, orthogonal preserves norm exactly, Xavier is the safe default for "
            "tanh",
            C6_RULE,
            judge_c6,
        ),
    )
}
"""The built-in claims, C1 to C6 (the source note's six)."""
assert tuple(CLAIMS) == BUILTIN_IDS


def judge(
    tables: StudyTables,
    claims: Sequence[str | Comparison | dict[str, Any]] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[Verdict]:
    """Judge a study's claims.

    Args:
        tables: the study's tables (``pipeline.results``).
        claims: built-in ids and declared comparisons (``pipeline.claimspec``); None: the
            spec's ``claims:`` (``tables.claims``) if it has them, else every built-in claim
            this study's data can measure (all six if it can measure none).
        n_boot, seed: the bootstrap of the speedup intervals.

    Returns:
        One verdict per claim, in the order given (C1 to C6 by default).
    """
    options = Options(n_boot=n_boot, seed=seed)
    declared = claims if claims is not None else getattr(tables, "claims", None)
    if declared is None:
        verdicts = [c.judge(tables, options) for c in CLAIMS.values()]
        measured = [v for v in verdicts if v.verdict != NOT_MEASURED]
        return measured or verdicts
    items: list[str | Comparison] = []
    for d in declared:
        if isinstance(d, dict):  # raw YAML entries: validate them all at once
            items = parse_claims(list(declared))
            break
        if isinstance(d, str) and d not in CLAIMS:
            raise ValueError(f"unknown claim {d!r}; built-in: {', '.join(CLAIMS)}")
        items.append(d)
    return [
        judge_declared(tables, item, options)
        if isinstance(item, Comparison)
        else CLAIMS[item].judge(tables, options)
        for item in items
    ]


def with_patience(tables: StudyTables, patience: int) -> StudyTables:
    """The same study with convergence re-read from the epochs table at another ``patience``.

    Only a patience at most the study's own can be re-read for trials that stopped when they
    converged (their history ends ``patience - 1`` epochs after the converged epoch). A trial
    converges at the first of ``patience`` consecutive epochs at or below its target, before
    any divergence; frozen trials stay frozen. The objective ``value`` follows where the
    study scored by epochs to converge.
    """
    from dataclasses import replace

    trials = tables.trials.copy()
    if trials.empty:
        return tables
    budget = trials["max_epochs"].astype(float) + 1
    old_epochs = trials["converged_epoch"].astype("Float64").fillna(budget).astype(float)
    scored_by_epochs = np.isclose(trials["value"].astype(float), old_epochs)
    too_long = trials["patience"] < patience
    if bool(too_long.any()):
        raise ValueError(
            f"patience {patience} cannot be re-read: trials ran with patience "
            f"{int(trials['patience'].min())} and stopped after converging"
        )
    epochs = tables.epochs.sort_values(["trial_number", "epoch"])
    losses = {n: g["val_loss"].to_numpy(dtype=float) for n, g in epochs.groupby("trial_number")}
    conv: list[Any] = []
    outcome: list[str] = []
    for row in trials.itertuples():
        values = losses.get(row.trial_number, np.array([]))
        hit = values <= float(row.target_loss)
        first = None
        for e in range(len(hit) - patience + 1):
            if hit[e : e + patience].all():
                first = e + 1
                break
        diverged = None if pd.isna(row.diverged_epoch) else int(row.diverged_epoch)
        if row.outcome == "frozen" or first is None or (diverged is not None and first > diverged):
            conv.append(pd.NA)
            outcome.append("censored" if row.outcome == "converged" else str(row.outcome))
        else:
            conv.append(first)
            outcome.append("converged")
    trials["converged_epoch"] = pd.array(conv, dtype="Int64")
    trials["outcome"] = pd.array(outcome, dtype="string")
    trials["converged"] = trials["outcome"] == "converged"
    trials["censored"] = ~trials["converged"]
    epochs = trials["converged_epoch"].astype("Float64").fillna(budget).astype(float)
    trials["value"] = np.where(scored_by_epochs, epochs, trials["value"].astype(float))
    return replace(tables, trials=trials)


RULES_BEGIN = (
    "<!-- rules:begin (generated by `python -m pipeline.analysis.verdicts`; do not edit) -->"
)
RULES_END = "<!-- rules:end -->"


def rules_markdown() -> str:
    """The claims and their rules as Markdown, rendered from :data:`CLAIMS` (for the docs)."""
    lines = [RULES_BEGIN, ""]
    for claim in CLAIMS.values():
        lines += [f"### {claim.id}: {claim.text}", "", claim.rule, ""]
    lines += [
        "Thresholds: "
        + ", ".join(
            f"`{name}` = {globals()[name]!r}"
            for name in sorted(__all__)
            if name.isupper() and name not in ("CLAIMS", "VERDICTS", "TANH_CELLS")
        )
        + ".",
        "",
        RULES_END,
    ]
    return "\n".join(lines)


def write_verdicts(verdicts: Sequence[Verdict], path: Path) -> Path:
    """Write ``verdicts.json``: a list of :meth:`Verdict.to_dict` records. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([v.to_dict() for v in verdicts], indent=2, allow_nan=False)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(path)  # never a half-written file
    return path


def verdict_tags(verdicts: Sequence[Verdict]) -> dict[str, str]:
    """One MLflow tag per verdict: ``initstudy.verdict.C4`` -> ``refuted``."""
    return {f"initstudy.verdict.{v.claim_id}": v.verdict for v in verdicts}


def judge_declared(tables: StudyTables, claim: Comparison, options: Options) -> Verdict:
    """A declared comparison, on the trials its ``where`` keeps, by the speedup rule."""
    trials = tables.trials
    if not {"scale", "recurrent_scale", "init_recurrent"} & set(claim.where):
        trials = plain_scheme(trials)
    for column, values in claim.where.items():
        col = trials[column]
        mask = np.zeros(len(trials), dtype=bool)
        for v in values:
            if isinstance(v, float):
                mask |= np.isclose(col.astype(float).to_numpy(), v)
            else:
                mask |= (col == v).fillna(False).to_numpy(dtype=bool)
        trials = trials[mask]
    return judge_comparison(
        claim.id, claim.text, trials, claim.faster, claim.than, claim.low, claim.high, options
    )


def _render_docs(path: Path) -> None:
    """Replace the generated rules block of ``path`` (docs/results.md) with the current one."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(RULES_BEGIN), text.index(RULES_END) + len(RULES_END)
    path.write_text(text[:start] + rules_markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    _render_docs(Path(__file__).resolve().parent.parent / "docs" / "results.md")
