"""The Optuna storage: where a study's trials, their identity keys and results live.

Only the driver writes here. Every trial carries its identity key (``KEY``) from the
moment it is created, and its full TrialResult (``RESULT``, JSON) is written before the
trial is told, so a result is never lost: if MLflow is down or the driver dies between
``tell`` and logging, the run is back-filled from here later.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
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
"""Study user attribute: the driver that holds the study (host, pid, token, heartbeat)."""

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


def load_existing_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    """Load a study for reading; the error lists the studies that do exist."""
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    if name not in names:
        known = ", ".join(names) if names else "none"
        raise StudyError(f"no study named {name!r} in this storage; studies: {known}")
    return optuna.load_study(study_name=name, storage=storage)


def set_trial_attr(study: optuna.Study, trial_id: int, key: str, value: Any) -> None:
    """Set a user attribute on a trial that is still running (one storage write)."""
    study._storage.set_trial_user_attr(trial_id, key, value)


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


class DriverLock:
    """One live driver per study: a heartbeat in the study's user attributes.

    A second driver on the same study is refused while the holder's heartbeat is fresh.
    A lock left by a driver that died is taken over at once when that driver ran on this
    host (its pid is gone), else once its heartbeat is ``LOCK_STALE_SECONDS`` old; that
    driver's RUNNING trials are then rerun.
    """

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        self.study = study
        self.storage = storage
        self.token = uuid.uuid4().hex
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(), "token": self.token}

    def acquire(self) -> None:
        current = self.study.user_attrs.get(DRIVER)
        if current and current.get("token") != self.token:
            age = time.time() - float(current.get("heartbeat", 0))
            if age < LOCK_STALE_SECONDS and not self._dead_here(current):
                raise StudyBusy(
                    f"study {self.study.study_name!r} is being run by another driver "
                    f"(host {current.get('host')}, pid {current.get('pid')}, heartbeat "
                    f"{age:.0f} s ago); wait for it to finish, or stop it first"
                )
        self.beat()
        time.sleep(0.2)  # let a racing driver's write land, then check who won
        if self._read().get("token") != self.token:
            raise StudyBusy(f"study {self.study.study_name!r} was just taken by another driver")

    def _dead_here(self, holder: dict[str, Any]) -> bool:
        """True if the holder ran on this host and its process no longer exists."""
        if holder.get("host") != self.holder["host"]:
            return False
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    def _read(self) -> dict[str, Any]:
        fresh = optuna.load_study(study_name=self.study.study_name, storage=self.storage)
        value = fresh.user_attrs.get(DRIVER) or {}
        return dict(value)

    def beat(self) -> None:
        self.study.set_user_attr(DRIVER, {**self.holder, "heartbeat": time.time()})

    def release(self) -> None:
        if self._read().get("token") == self.token:
            self.study.set_user_attr(DRIVER, None)
