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

Where things are: the verdicts, thresholds and shared helpers in
:mod:`pipeline.analysis.judging`; the speedup rule (C4 and every declared comparison,
:func:`classify_speedup`) in :mod:`pipeline.analysis.speedup_rule`; C1-C3 in
:mod:`pipeline.analysis.rules_init` and C5-C6 in :mod:`pipeline.analysis.rules_training`.
This module holds the registry, :func:`judge`, the re-reading of a study at another
patience, and the verdicts' outputs (``verdicts.json``, MLflow tags, the docs' rules
block: ``python -m pipeline.analysis.verdicts`` regenerates it). Mean-field predictions
(``models.theory``) are quoted beside the measurements they speak to. This package reads
tables; it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.analysis.judging import (
    ALPHA,
    C1_EARLY_STEPS,
    C1_LEVEL_RANGE,
    C1_MAX_SATURATION,
    C1_MIN_LEVEL,
    C1_RATIO_RANGE,
    C1_THEORY_TOLERANCE,
    C2_LOST_SATURATION,
    C2_TREND_TOLERANCE,
    C2_VANISHED_VARIANCE,
    C4_RANGE,
    C5_LARGE_HIDDEN,
    C5_TINY_HIDDEN,
    C5_WORKS_RATE,
    C6_NORM_TOLERANCE,
    INCONCLUSIVE,
    MIN_N,
    NOT_MEASURED,
    NOT_REPRODUCED,
    PARTLY,
    REFUTED,
    REPRODUCED,
    SUPPORTED,
    TANH_CELLS,
    THRESHOLDS,
    VERDICTS,
    Claim,
    Options,
    Verdict,
)
from pipeline.analysis.reproduction_rule import REPRODUCTION_RULE, judge_reproduction
from pipeline.analysis.rules_init import C1, C2, C3, judge_c1, judge_c2, judge_c3
from pipeline.analysis.rules_training import C5, C6, judge_c5, judge_c6
from pipeline.analysis.speedup_rule import (
    ABOVE,
    AT_LEAST,
    BELOW,
    C4,
    CELL_INCONCLUSIVE,
    CONTRADICTS,
    SMALL_N,
    SPEEDUP_RULE,
    UNBOUNDED,
    WITHIN,
    classify_speedup,
    combine_cells,
    judge_c4,
    judge_declared,
    xavier_speedups,
)
from pipeline.claimspec import BUILTIN_IDS, Comparison, Reproduction, parse_claims
from pipeline.claimspec import Claim as ClaimEntry

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

__all__ = [
    "ABOVE",
    "ALPHA",
    "AT_LEAST",
    "BELOW",
    "C1_EARLY_STEPS",
    "C1_LEVEL_RANGE",
    "C1_MAX_SATURATION",
    "C1_MIN_LEVEL",
    "C1_RATIO_RANGE",
    "C1_THEORY_TOLERANCE",
    "C2_LOST_SATURATION",
    "C2_TREND_TOLERANCE",
    "C2_VANISHED_VARIANCE",
    "C4_RANGE",
    "C5_LARGE_HIDDEN",
    "C5_TINY_HIDDEN",
    "C5_WORKS_RATE",
    "C6_NORM_TOLERANCE",
    "CELL_INCONCLUSIVE",
    "CLAIMS",
    "CONTRADICTS",
    "INCONCLUSIVE",
    "MIN_N",
    "NOT_MEASURED",
    "NOT_REPRODUCED",
    "PARTLY",
    "REFUTED",
    "REPRODUCED",
    "REPRODUCTION_RULE",
    "SMALL_N",
    "SPEEDUP_RULE",
    "SUPPORTED",
    "TANH_CELLS",
    "THRESHOLDS",
    "UNBOUNDED",
    "VERDICTS",
    "WITHIN",
    "Claim",
    "Options",
    "Verdict",
    "classify_speedup",
    "combine_cells",
    "judge",
    "judge_c1",
    "judge_c2",
    "judge_c3",
    "judge_c4",
    "judge_c5",
    "judge_c6",
    "judge_declared",
    "judge_reproduction",
    "rules_markdown",
    "verdict_tags",
    "with_patience",
    "write_verdicts",
    "xavier_speedups",
]

CLAIMS: dict[str, Claim] = {c.id: c for c in (C1, C2, C3, C4, C5, C6)}
"""The built-in claims, C1 to C6 (the source note's six)."""
assert tuple(CLAIMS) == BUILTIN_IDS


def judge(
    tables: StudyTables,
    claims: Sequence[ClaimEntry | dict[str, Any]] | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[Verdict]:
    """Judge a study's claims.

    Args:
        tables: the study's tables (``pipeline.analysis.tables``).
        claims: built-in ids, declared comparisons and reproductions
            (``pipeline.claimspec``); None: the
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
    items: list[ClaimEntry] = []
    for d in declared:
        if isinstance(d, dict):  # raw YAML entries: validate them all at once
            items = parse_claims(list(declared))
            break
        if isinstance(d, str) and d not in CLAIMS:
            raise ValueError(f"unknown claim {d!r}; built-in: {', '.join(CLAIMS)}")
        items.append(d)
    out: list[Verdict] = []
    for item in items:
        if isinstance(item, Comparison):
            out.append(judge_declared(tables, item, options))
        elif isinstance(item, Reproduction):
            out.append(judge_reproduction(tables, item, options))
        else:
            out.append(CLAIMS[item].judge(tables, options))
    return out


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
    lines += ["### Reproductions of published results", "", REPRODUCTION_RULE, ""]
    lines += [
        "Thresholds: "
        + ", ".join(f"`{name}` = {value!r}" for name, value in THRESHOLDS.items())
        + ".",
        "",
        RULES_END,
    ]
    return "\n".join(lines)


def write_verdicts(verdicts: Sequence[Verdict], path: Path) -> Path:
    """Write ``verdicts.json``: a list of :meth:`Verdict.to_dict` records. Returns ``path``.

    Never a half-written file, and a link planted under its name is replaced, not followed
    (:func:`pipeline.safeout.replace_file`)."""
    from pipeline.safeout import replace_file

    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps([v.to_dict() for v in verdicts], indent=2, allow_nan=False)
    return replace_file(path, text + "\n")


def verdict_tags(verdicts: Sequence[Verdict]) -> dict[str, str]:
    """One MLflow tag per verdict: ``initstudy.verdict.C4`` -> ``refuted``."""
    return {f"initstudy.verdict.{v.claim_id}": v.verdict for v in verdicts}


def _render_docs(path: Path) -> None:
    """Replace the generated rules block of ``path`` (docs/results.md) with the current one."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(RULES_BEGIN), text.index(RULES_END) + len(RULES_END)
    path.write_text(text[:start] + rules_markdown() + text[end:], encoding="utf-8")


if __name__ == "__main__":
    _render_docs(Path(__file__).resolve().parents[2] / "docs" / "results.md")
