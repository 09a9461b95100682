"""The Optuna storage: where a study's trials, their identity keys and results live.

Only the driver writes here. Every trial carries its identity key (``KEY``) from the
moment it is created, and its full TrialResult (``RESULT``, JSON) is written before the
trial is told, so a result is never lost: if MLflow is down or the driver dies between
``tell`` and logging, the run is back-filled from here later.

This module holds the pieces every reader shares (attribute names, errors, opening a
storage and a study, counting trials); the driver's calls, their retries and its lock are
in :mod:`pipeline.studystore`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from models.spec import TrialResult
from pipeline.urls import redact, sqlite_file, use_wal

KEY = "initstudy.key"
"""Trial user attribute: the identity key (hash of the TrialSpec and the claim)."""
RESULT = "initstudy.result"
"""Trial user attribute: the TrialResult as JSON, written before the trial is told."""
OUTCOME = "initstudy.outcome"
"""Trial user attribute: the outcome (``TrialResult.outcome``)."""
ERROR = "initstudy.error"
"""Trial user attribute: why the infrastructure failed this trial."""
SPEC_HASH = "initstudy.spec_hash"
SPEC_TEXT = "initstudy.spec"
PLANNED = "initstudy.n_trials"
CLAIM = "initstudy.claim"
DRIVER = "initstudy.driver"
STAGE = "initstudy.stage"
"""Study attribute (and MLflow tag) of a tuned protocol's stage: tune or measure."""
CHOSEN_LR = "initstudy.chosen_lr"
"""Study attribute of a tuned protocol's stage 2: each arm's chosen lr, by arm."""
"""Study user attribute: the driver that holds the study (host, pid, token, heartbeat);
see :class:`pipeline.studystore.DriverLock`."""

LOCK_STALE_SECONDS = 30.0
"""A driver lock whose heartbeat is older than this belongs to a dead driver."""

optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyError(ValueError):
    """The study cannot be opened as asked (spec changed, name unknown, bad URL)."""


class StudyBusy(RuntimeError):
    """Another live driver holds this study."""


class StorageUnavailable(RuntimeError):
    """The Optuna storage failed a call for good: unreachable for longer than the driver
    retries, or refusing writes (a full disk). Finished trials are kept; rerun to resume."""


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for a SQLAlchemy URL (SQLite file or PostgreSQL server)."""
    if url.startswith("sqlite:///"):
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            use_wal(path)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except Exception as exc:
        raise StudyError(f"cannot open the Optuna storage {redact(url)}: {exc}") from exc


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    *,
    spec_hash: str,
    spec_text: str,
    planned: int,
    claim: str | None,
    sampler: optuna.samplers.BaseSampler,
) -> optuna.Study:
    """Create the study, or load it if it exists with the same spec.

    Raises:
        StudyError: the study exists but was created from a different spec.
    """
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if name in names:
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
        existing = study.user_attrs.get(SPEC_HASH)
        if existing != spec_hash:
            raise StudyError(
                f"study {name!r} already exists with a different spec (hash {existing} != "
                f"{spec_hash}); resume it with its original spec, or start a new study with "
                "--study-name NEW"
            )
        return study
    study = optuna.create_study(
        study_name=name, storage=storage, sampler=sampler, direction="minimize"
    )
    study.set_user_attr(SPEC_HASH, spec_hash)
    study.set_user_attr(SPEC_TEXT, spec_text)
    study.set_user_attr(PLANNED, planned)
    study.set_user_attr(CLAIM, claim or "")
    return study


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The names of the studies in a storage, sorted."""
    return sorted(s.study_name for s in optuna.get_all_study_summaries(storage))


def delete_study(storage: optuna.storages.BaseStorage, name: str) -> None:
    """Delete a study and its trials from the storage (``StudyError`` if it is unknown)."""
    load_existing_study(storage, name)
    optuna.delete_study(study_name=name, storage=storage)


def load_existing_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """Load a study for reading; the error lists the studies that do exist."""
    names = study_names(storage)
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise StudyError(f"no study named {name!r} in this storage; studies: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def stored_result(trial: FrozenTrial) -> TrialResult | None:
    """The TrialResult stored on a trial, if any."""
    text = trial.user_attrs.get(RESULT)
    return TrialResult.from_json(text) if text else None


@dataclass(frozen=True)
class StudyCounts:
    """Where a study stands, read from the storage."""

    planned: int
    complete: int
    converged: int
    diverged: int
    censored: int
    stalled: int
    frozen: int
    running: int
    waiting: int
    failed: int

    def after_tell(self, outcome: str) -> StudyCounts:
        """These counts once one RUNNING trial is told with ``outcome``."""
        return replace(
            self,
            complete=self.complete + 1,
            running=max(0, self.running - 1),
            **{outcome: getattr(self, outcome) + 1},
        )

    def after_fail(self) -> StudyCounts:
        """These counts once one RUNNING trial is told FAIL."""
        return replace(self, failed=self.failed + 1, running=max(0, self.running - 1))

    @property
    def remaining(self) -> int:
        return max(0, self.planned - self.complete)


def study_counts(study: optuna.Study) -> StudyCounts:
    """Count trials by state and outcome."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    outcomes = [t.user_attrs.get(OUTCOME) for t in complete]
    return StudyCounts(
        planned=int(study.user_attrs.get(PLANNED, len(trials))),
        complete=len(complete),
        converged=outcomes.count("converged"),
        diverged=outcomes.count("diverged"),
        censored=outcomes.count("censored"),
        stalled=outcomes.count("stalled"),
        frozen=outcomes.count("frozen"),
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        failed=states.count(TrialState.FAIL),
    )
