"""Reading a study's results from its Optuna storage.

The Optuna storage is the source of truth: every COMPLETE trial carries its full
TrialResult (``storage.RESULT``). :func:`load_tables` reads them and hands them to
:func:`pipeline.analysis.tables.tables_from_results`, which builds the typed ``trials``,
``epochs`` and ``steps`` tables; the tables, their schemas and the read-only SQL over them
live in :mod:`pipeline.analysis.tables` (re-exported here for callers of this module).

:func:`param_importances` is Optuna's parameter importance of a study's searched
parameters, computed from the ``trials`` table (an in-memory Optuna study of the table's
trials, built with ``optuna.trial.create_trial``), so it needs no storage.

:func:`load_efficiency` is the study's efficiency for the report's footer
(:mod:`pipeline.analysis.efficiency`), from the driver's records of its runs
(``storage.SESSIONS``) and its COMPLETE trials' stored results.

This module reads the storage only; it must not import MLflow or Ray.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna
import pandas as pd
import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from models.spec import TrialResult
from pipeline import optuna_compat as compat
from pipeline import storage as st
from pipeline.analysis.efficiency import (
    Efficiency,
    sessions_from_attr,
    study_efficiency,
    timings_from_results,
)
from pipeline.analysis.tables import (
    EPOCH_COLUMNS,
    STEP_COLUMNS,
    TRIAL_COLUMNS,
    QueryError,
    StudyTables,
    device_type,
    objective_value,
    query,
    tables_from_results,
)
from pipeline.samplerspec import without_replicate
from pipeline.urls import sqlite_file

__all__ = [
    "EPOCH_COLUMNS",
    "MIN_IMPORTANCE_TRIALS",
    "STEP_COLUMNS",
    "TRIAL_COLUMNS",
    "Importances",
    "QueryError",
    "StudyTables",
    "device_type",
    "load_efficiency",
    "load_tables",
    "objective_value",
    "param_importances",
    "query",
    "study_span_seconds",
    "tables_from_results",
]


def load_tables(study: str, storage_url: str) -> StudyTables:
    """Read a study's COMPLETE trials from its Optuna storage.

    Args:
        study: study name.
        storage_url: SQLAlchemy URL of the Optuna storage (``sqlite:///...`` or PostgreSQL).

    Raises:
        storage.StudyError: the storage cannot be opened (a SQLite file that does not
            exist is refused rather than created), the study is unknown, or a COMPLETE
            trial has no stored result.
    """
    optuna_study, complete = _complete_trials(study, storage_url)
    rows: list[tuple[int, str, TrialResult]] = []
    missing: list[int] = []
    for t in sorted(complete, key=lambda t: t.number):
        result = st.stored_result(t)
        if result is None:
            missing.append(t.number)
        else:
            rows.append((t.number, str(t.user_attrs.get(st.KEY, "")), result))
    if missing:
        raise st.StudyError(
            f"study {study!r}: COMPLETE trial(s) {missing} have no stored result "
            f"({st.RESULT!r}); the storage is inconsistent"
        )
    attrs = optuna_study.user_attrs
    return tables_from_results(
        study,
        rows,
        claim=str(attrs.get(st.CLAIM) or ""),
        spec_text=str(attrs.get(st.SPEC_TEXT) or ""),
    )


def load_efficiency(study: str, storage_url: str) -> Efficiency:
    """A study's efficiency, one figure per driver run it recorded: its
    ``storage.SESSIONS`` attribute and its COMPLETE trials' stored results (a trial
    without one is left out here; :func:`load_tables` refuses it).

    Raises:
        storage.StudyError: as :func:`load_tables`.
    """
    optuna_study, complete = _complete_trials(study, storage_url)
    rows = [(t.number, r) for t in complete if (r := st.stored_result(t)) is not None]
    sessions = sessions_from_attr(optuna_study.user_attrs.get(st.SESSIONS))
    return study_efficiency(timings_from_results(rows), sessions)


def study_span_seconds(study: str, storage_url: str) -> float:
    """Seconds from the first trial's start to the last COMPLETE trial's end (0 for a study
    with none): how long its training took, whichever runs and resumes did it.

    Raises:
        storage.StudyError: as :func:`load_tables`.
    """
    _, complete = _complete_trials(study, storage_url)
    starts = [t.datetime_start for t in complete if t.datetime_start is not None]
    ends = [t.datetime_complete for t in complete if t.datetime_complete is not None]
    if not starts or not ends:
        return 0.0
    return max(0.0, (max(ends) - min(starts)).total_seconds())


def _complete_trials(study: str, storage_url: str) -> tuple[optuna.Study, list[FrozenTrial]]:
    """The study and its COMPLETE trials; a SQLite file that does not exist is refused
    rather than created."""
    path = sqlite_file(storage_url)
    if path is not None and not path.is_file():
        raise st.StudyError(f"no Optuna storage at {path} (from {storage_url!r})")
    optuna_study = st.load_existing_study(st.make_storage(storage_url), study)
    return optuna_study, optuna_study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


MIN_IMPORTANCE_TRIALS = 4
"""Fewer complete trials than this: parameter importance is "not enough trials"."""


@dataclass(frozen=True)
class Importances:
    """Optuna's importance of each searched parameter, or why there is none."""

    values: dict[str, float]
    """Parameter -> importance (they sum to 1), most important first; empty: not computed."""
    evaluator: str
    """"fANOVA" (Optuna's default, needs scikit-learn) or "PED-ANOVA" (pure Optuna)."""
    note: str = ""
    """Why there are no values ("not enough trials: ..."), else what was left out."""
    left_out: list[str] = field(default_factory=list)
    """Searched parameters not evaluated, each "name (why)"."""

    @property
    def enough(self) -> bool:
        return bool(self.values)


def _evaluator(seed: int) -> tuple[Any, str]:
    """fANOVA when scikit-learn is installed (Optuna's default evaluator needs it), else
    PED-ANOVA, which needs only Optuna and NumPy. Neither is imported until it runs."""
    try:
        found = importlib.util.find_spec("sklearn") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return optuna.importance.PedAnovaImportanceEvaluator, "PED-ANOVA"
    return partial(optuna.importance.FanovaImportanceEvaluator, seed=seed), "fANOVA"


def _native(value: Any) -> Any:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def _searched(tables: StudyTables) -> tuple[dict[str, BaseDistribution], pd.Series]:
    """The spec's distributions and the objective per trial; without a readable spec the
    searchable fields that vary, as categorical, and the ``value`` column."""
    from models.fields import SEARCHABLE
    from pipeline.studyspec import SpecError, parse_study_spec

    trials = tables.trials
    try:
        spec = parse_study_spec(yaml.safe_load(tables.spec_text), f"study {tables.study}")
    except (SpecError, yaml.YAMLError, ValueError, TypeError):
        varying = [n for n in SEARCHABLE if n in trials and trials[n].nunique(dropna=False) > 1]
        dists: dict[str, BaseDistribution] = {
            n: CategoricalDistribution(sorted({_native(v) for v in trials[n]}, key=str))
            for n in varying
            if n != "data_seed"
        }
        return dists, pd.to_numeric(trials["value"], errors="coerce").astype(float)
    scores = [
        spec.score(
            {
                "converged_epoch": _native(r.converged_epoch),
                "diverged_epoch": _native(r.diverged_epoch),
                "best_val_loss": float(r.best_val_loss),
            }
        )
        for r in trials.itertuples()
    ]
    return dict(spec.distributions()), pd.Series(scores, index=trials.index, dtype=float)


def varying_params(
    tables: StudyTables,
) -> tuple[dict[str, BaseDistribution], list[str], pd.Series]:
    """The searched parameters (the seed, a replicate, never among them) that are columns of
    the trials table, hold values inside their distribution and take two values; why each
    other one was left out; and the objective per trial."""
    trials = tables.trials
    dists, objective = _searched(tables)
    kept: dict[str, BaseDistribution] = {}
    left_out: list[str] = []
    for param, dist in without_replicate(dists).items():
        if param not in trials.columns:
            left_out.append(f"{param} (not a column of the trials table)")
            continue
        observed = [_native(v) for v in trials[param]]
        try:
            inside = all(compat.contains(dist, v) for v in observed)
        except (ValueError, TypeError):
            inside = False
        if not inside:
            left_out.append(f"{param} (values outside its distribution)")
        elif len(set(map(repr, observed))) < 2:
            left_out.append(f"{param} (one value)")
        else:
            kept[param] = dist
    return kept, left_out, objective


def params_study(
    trials: pd.DataFrame,
    kept: dict[str, BaseDistribution],
    objective: pd.Series,
    name: str | None = None,
) -> optuna.Study:
    """An in-memory study of the trials with a finite objective, over the ``kept`` params."""
    study = optuna.create_study(direction="minimize", study_name=name)
    study.add_trials(
        [
            optuna.trial.create_trial(
                params={p: _native(trials.at[i, p]) for p in kept},
                distributions=kept,
                value=float(objective.at[i]),
            )
            for i in trials.index
            if math.isfinite(objective.at[i])
        ]
    )
    return study


def param_importances(tables: StudyTables, *, seed: int = 0) -> Importances:
    """Optuna's importance of the study's searched parameters, from its trials table.

    The searched parameters are the study spec's distributions (``StudySpec.distributions``);
    one that is not a column of the trials table, takes one value only, or holds values
    outside its distribution is left out (:attr:`Importances.left_out`). Fewer than
    :data:`MIN_IMPORTANCE_TRIALS` trials, no parameter with two values, or one objective
    value for every trial give no values and a "not enough trials" note, not an error.
    fANOVA (seeded, so a report is reproducible) when scikit-learn is installed, else
    PED-ANOVA.
    """
    trials = tables.trials
    _, name = _evaluator(seed)
    if len(trials) < MIN_IMPORTANCE_TRIALS:
        return Importances(
            {}, name, f"not enough trials: {len(trials)} complete, needs {MIN_IMPORTANCE_TRIALS}"
        )
    kept, left_out, objective = varying_params(tables)
    why = ""
    if not kept:
        why = "no searched parameter takes two values"
    elif objective.nunique() < 2 or not objective.map(math.isfinite).all():
        why = "every trial has the same objective value"
    if why:
        return Importances({}, name, f"not enough trials: {why}", left_out)
    study = params_study(trials, kept, objective)
    make, name = _evaluator(seed)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            raw = optuna.importance.get_param_importances(
                study, evaluator=make(), params=list(kept), normalize=True
            )
    except (ValueError, RuntimeError) as exc:  # an evaluator's refusal is a note, not a crash
        return Importances({}, name, f"could not be computed: {exc}", left_out)
    values = {str(k): float(v) for k, v in raw.items()}
    if not values or not all(math.isfinite(v) for v in values.values()):
        return Importances({}, name, "not enough trials: the importances are undefined", left_out)
    note = "left out: " + ", ".join(left_out) if left_out else ""
    return Importances(values, name, note, left_out)
