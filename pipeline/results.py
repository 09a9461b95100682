"""Reading a study's results from its Optuna storage.

The Optuna storage is the source of truth: every COMPLETE trial carries its full
TrialResult (``storage.RESULT``). :func:`load_tables` reads them and hands them to
:func:`pipeline.analysis.tables.tables_from_results`, which builds the typed ``trials``,
``epochs`` and ``steps`` tables; the tables, their schemas and the read-only SQL over them
live in :mod:`pipeline.analysis.tables` (re-exported here for callers of this module).

This module reads the storage only; it must not import MLflow or Ray.
"""

from __future__ import annotations

import optuna
from optuna.trial import FrozenTrial, TrialState

from models.spec import TrialResult
from pipeline import storage as st
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
from pipeline.urls import sqlite_file

__all__ = [
    "EPOCH_COLUMNS",
    "STEP_COLUMNS",
    "TRIAL_COLUMNS",
    "QueryError",
    "StudyTables",
    "device_type",
    "load_tables",
    "objective_value",
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
