"""The speedup rule: C4 and every declared comparison, judged cell by cell.

:data:`SPEEDUP_RULE` is the rule in words; :func:`classify_speedup` classifies one cell and
:func:`combine_cells` turns the cells into the claim's verdict. :func:`judge_comparison`
judges one speedup claim on a study's trials, :func:`judge_c4` the headline (Xavier over
uniform[0,1]) and :func:`judge_declared` a comparison a study spec declares
(``pipeline.claimspec``). This module reads tables; it knows nothing of Optuna, MLflow or
Ray.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from models import fields
from pipeline.analysis.cells import cannot_train, speedup_table
from pipeline.analysis.judging import (
    C4_RANGE,
    INCONCLUSIVE,
    MIN_N,
    NOT_MEASURED,
    PARTLY,
    REFUTED,
    SUPPORTED,
    UNIFORM,
    XAVIER,
    Claim,
    Options,
    Verdict,
    _label,
    _pct,
    _varying,
    fmt,
    plain_scheme,
    select_rows,
)
from pipeline.claimspec import Comparison

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

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

SETTINGS: tuple[str, ...] = fields.SETTINGS
"""Trial settings (``models.fields.SETTINGS``: the protocol's fields that have a column) that,
where a study varies them per scheme and seed, split speedup cells."""


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
    frozen at init and not converged, ``cells.cannot_train``), ``kind`` (finite /
    lower_bound / unbounded / none) and ``cell_verdict``.
    """
    by = speedup_cells(trials)
    table = speedup_table(trials, faster, than, by, n_boot=n_boot, seed=seed).copy()
    if table.empty:
        return table
    keys = [*by, "device_type"]
    frozen = (
        trials[trials["init"] == than]
        .assign(frozen=cannot_train)
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


# --------------------------------------------------------------------------- C4


def judge_c4(tables: StudyTables, options: Options) -> Verdict:
    """C4: Xavier's speedup over uniform[0,1] per cell (:data:`SPEEDUP_RULE`)."""
    claim = C4
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


def judge_declared(tables: StudyTables, claim: Comparison, options: Options) -> Verdict:
    """A declared comparison, on the trials its ``where`` keeps, by the speedup rule; where
    the design cannot be judged cell by cell (a sampled study), by the AFT model
    (``pipeline.analysis.aft_study.judge_sampled``)."""
    trials = tables.trials
    if claim.on == "init_recurrent":  # Whh's scheme as the compared one, the rest fixed
        trials = trials[trials["init_recurrent"].notna()]
        trials = trials.assign(
            input_init=trials["init"], init=trials["init_recurrent"], init_recurrent=pd.NA
        )
    elif not {"scale", "recurrent_scale", "init_recurrent"} & set(claim.where):
        trials = plain_scheme(trials)
    trials = select_rows(trials, claim.where)
    km = judge_comparison(
        claim.id, claim.text, trials, claim.faster, claim.than, claim.low, claim.high, options
    )
    from pipeline.analysis.aft_study import judge_sampled  # it imports this module

    return judge_sampled(tables, claim, km)


C4 = Claim(
    "C4",
    "Xavier cuts epochs-to-convergence 2-10x against uniform[0,1] (headline)",
    SPEEDUP_RULE,
    judge_c4,
)
"""The headline claim, judged by the speedup rule."""
