"""The AFT speedup (:mod:`pipeline.analysis.aft`) applied to a study.

:func:`study_aft` fits it to a comparison of a study's schemes, with the study's searched
parameters as covariates; :func:`comparisons` lists the comparisons a report shows (each
declared ``faster``/``than`` claim, and Xavier over uniform[0,1] when the study has both);
:func:`aft_section` is the report's section; :func:`judge_sampled` gives a declared claim
its verdict from the model where the design cannot be judged cell by cell (every
Kaplan-Meier cell has fewer than ``MIN_N`` trials in an arm, or the study has no trial at
gain 1 because it samples the scale).

This module reads tables; it knows nothing of Optuna, MLflow or Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.analysis.aft import AFT_RULE, NOT_COVARIATES, AFTSpeedup, aft_speedup
from pipeline.analysis.judging import (
    C4_RANGE,
    MIN_N,
    NOT_MEASURED,
    UNIFORM,
    XAVIER,
    Verdict,
    select_rows,
)
from pipeline.analysis.summary import searched_params
from pipeline.claimspec import Comparison

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

__all__ = ["AFTSection", "aft_section", "comparisons", "judge_sampled", "study_aft"]


@dataclass(frozen=True)
class AFTSection:
    """The report's AFT section: one row per reading, one model check per comparison."""

    columns: list[str]
    rows: list[list[str]]
    checks: list[tuple[str, str]]
    """(comparison, model check and notes) per comparison."""


def _rows(tables: StudyTables, claim: Comparison, covariates: list[str]) -> pd.DataFrame:
    """The trials a comparison is fitted on: its ``where``, the compared column as ``init``,
    and gain 1 unless the gain is a covariate (a sampled scale is adjusted for instead)."""
    trials = tables.trials
    if trials.empty:
        return trials
    if claim.on == "init_recurrent":
        trials = trials[trials["init_recurrent"].notna()]
        trials = trials.assign(
            input_init=trials["init"], init=trials["init_recurrent"], init_recurrent=pd.NA
        )
    elif "init_recurrent" not in claim.where:
        trials = trials[trials["init_recurrent"].isna()]
    if "scale" not in covariates and "scale" not in claim.where:
        trials = trials[np.isclose(trials["scale"].astype(float), 1.0)]
    if "recurrent_scale" in trials and not {"recurrent_scale"} & {*covariates, *claim.where}:
        same = np.isclose(trials["recurrent_scale"].astype(float), trials["scale"].astype(float))
        trials = trials[same]  # Whh at the gain of the rest (1 unless the scale is sampled)
    return select_rows(trials, claim.where)


def _model_rows(
    tables: StudyTables, claim: Comparison
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The trials, the covariates and the log-scaled ones of a comparison's model."""
    params, _ = searched_params(tables.spec_text, tables.trials)
    names = [p.name for p in params if p.name not in NOT_COVARIATES and p.name not in claim.where]
    log = [p.name for p in params if p.log]
    return _rows(tables, claim, names), names, log


def study_aft(tables: StudyTables, claim: Comparison) -> AFTSpeedup:
    """The AFT speedup of a comparison on a study, its searched parameters as covariates."""
    rows, names, log = _model_rows(tables, claim)
    return aft_speedup(
        rows, claim.faster, claim.than, covariates=names, low=claim.low, high=claim.high, log=log
    )


def comparisons(tables: StudyTables) -> list[Comparison]:
    """The declared ``faster``/``than`` claims, then Xavier over uniform[0,1] (C4's range)
    when the study has both schemes and no declared claim compares them already."""
    out = [c for c in (tables.claims or []) if isinstance(c, Comparison)]
    schemes = set(tables.trials["init"].astype(str)) if len(tables.trials) else set()
    pair = {XAVIER, UNIFORM}
    declared = any({c.faster, c.than} == pair and not c.where for c in out)
    if pair <= schemes and not declared:
        low, high = C4_RANGE
        out.append(Comparison("C4 (AFT)", XAVIER, UNIFORM, low, high))
    return out


def _range(c: Comparison) -> str:
    return f"at least {c.low:g}x" if math.isinf(c.high) else f"{c.low:g}-{c.high:g}x"


def aft_section(tables: StudyTables) -> AFTSection | None:
    """The AFT speedup of every :func:`comparisons` entry, read pooled and per regime, with
    its model check; None when the study has no such comparison."""
    claims = comparisons(tables)
    if not claims:
        return None
    columns = [
        "comparison",
        "claimed",
        "read at",
        "n (faster / than)",
        "AFT speedup [95% CI]",
        "class",
        "in verdict",
    ]
    rows: list[list[str]] = []
    checks: list[tuple[str, str]] = []
    for claim in claims:
        name = f"{claim.id}: {claim.faster} vs {claim.than}"
        fit = study_aft(tables, claim)
        n = f"{fit.n_a} / {fit.n_b}"
        judged = {id(r) for r in fit.judged}
        readings = [r for r in (fit.pooled, *fit.readings, *fit.frozen) if r is not None]
        if not readings:
            rows.append([name, _range(claim), "", n, f"not estimable: {fit.reason}", "", ""])
        for r in readings:
            used = "yes" if id(r) in judged else "no"
            rows.append([name, _range(claim), r.label, n, r.text, r.classification, used])
        notes = [] if fit.check is None else [fit.check.text]
        if fit.covariates:
            notes.append(f"covariates: {', '.join(fit.covariates)}")
        if fit.notes:
            notes.append(f"left out: {'; '.join(fit.notes)}")
        checks.append((name, "; ".join(notes) or "no model fitted"))
    return AFTSection(columns, rows, checks)


def _km_cannot_judge(km: Verdict) -> str:
    """Why the Kaplan-Meier rule could not judge this design ("" when it could)."""
    cells = km.numbers.get("cells")
    if km.verdict == NOT_MEASURED:
        return km.evidence
    if cells and all(c.get("classification") == "n too small" for c in cells):
        return f"each of its {len(cells)} cells has fewer than {MIN_N} trials in an arm"
    return ""


def judge_sampled(tables: StudyTables, claim: Comparison, km: Verdict) -> Verdict:
    """A declared comparison's verdict: the Kaplan-Meier rule's (``km``) where the design
    can be judged cell by cell, else the AFT model's, saying why."""
    why = _km_cannot_judge(km)
    if not why or tables.trials.empty:
        return km
    rows = _model_rows(tables, claim)[0]
    arms = rows["init"].astype(str).value_counts() if len(rows) else pd.Series(dtype=int)
    if min(int(arms.get(claim.faster, 0)), int(arms.get(claim.than, 0))) < MIN_N:
        return km  # too few trials for the model too: the KM verdict says what is missing
    fit = study_aft(tables, claim)
    numbers: dict[str, Any] = {**fit.numbers(), "kaplan_meier": km.numbers}
    evidence = (
        f"{fit.evidence} Judged by the AFT model because the Kaplan-Meier rule cannot judge "
        f"this design: {why.rstrip('.')}."
    )
    if not fit.judged:
        evidence += (
            " What would decide it: trials that converge in both arms, over a wider budget."
        )
    return Verdict(km.claim_id, km.claim, fit.verdict, AFT_RULE, evidence, None, numbers)
