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

import json
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy as sa
from optuna.trial import FrozenTrial, TrialState

from models.spec import TrialResult
from pipeline import optuna_compat as compat
from pipeline.exitcodes import EXIT_STORE_CORRUPT as EXIT_STORE_CORRUPT
from pipeline.urls import canonical_url, folder_lock, redact, sqlite_file, use_wal

KEY = "initstudy.key"
"""Trial user attribute: the identity key (hash of the TrialSpec and the claim)."""
RESULT = "initstudy.result"
"""Trial user attribute: the TrialResult as JSON, written before the trial is told."""
OUTCOME = "initstudy.outcome"
"""Trial user attribute: the outcome (``TrialResult.outcome``)."""
SEED = "initstudy.seed"
"""Trial user attribute: the trial's seed, an int, when the study's space searches
``seed`` (a replicate, never a sampled parameter: no trial holds a seed distribution;
trials stored before keep it among their params)."""
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
SESSIONS = "initstudy.sessions"
"""Study attribute: one record per driver run (``started`` and ``ended``, unix seconds; the
``slots`` it trained on, ``cpus_per_trial``), for the study-efficiency figure."""
RETRY_OF = "initstudy.retry_of"
"""Trial user attribute of a trial enqueued by a rerun to retry a FAIL trial (same
params): that trial's number. A FAIL trial is retried once; the retry may fail in turn."""
"""Study user attribute: the driver that holds the study (host, pid, token, heartbeat);
see :class:`pipeline.studystore.DriverLock`."""

LOCK_STALE_SECONDS = 30.0
"""A driver lock whose heartbeat is older than this belongs to a dead driver."""

optuna.logging.set_verbosity(optuna.logging.WARNING)


class StudyError(ValueError):
    """The study cannot be opened as asked (spec changed, name unknown, bad URL)."""


class StudyBusy(RuntimeError):
    """Another live driver holds this study."""


class StoreCorrupt(StudyError):
    """A study store's file is empty or not a database: refused, and nothing is written
    to it. The message names the file and what to do (restore it, or remove it)."""

    exit_code = EXIT_STORE_CORRUPT


class StorageUnavailable(RuntimeError):
    """The Optuna storage failed a call for good: unreachable for longer than the driver
    retries, or refusing writes (a full disk). Finished trials are kept; rerun to resume."""


def make_storage(url: str) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage for a SQLAlchemy URL (SQLite file or PostgreSQL server).

    A SQLite file that exists must be a database (:func:`check_store_file`); a new one is
    created (tables and all) while this process holds the run folder's creation lock
    (:func:`creating`), so two drivers starting at once do not both create its tables.
    Tables created concurrently through a server are retried (:func:`_rdb_storage`).

    Raises:
        StoreCorrupt: the SQLite file is empty or not a database (nothing is written).
        StudyError: the storage cannot be opened (bad URL, unreachable server).
    """
    with creating(url):
        return storage_unlocked(url)


@contextmanager
def creating(url: str) -> Iterator[None]:
    """Hold the creation lock of a SQLite storage's file: an exclusive ``flock`` on its
    folder (no file is added), so one process at a time checks the file, creates it and
    its tables, and creates a study in it. Other URLs: no lock (a server's concurrent
    creations are retried instead). Reentrant only across processes, not within one."""
    path = sqlite_file(url)
    if path is None:
        yield
        return
    with folder_lock(path):
        check_store_file(path, "Optuna storage")
        yield


SQLITE_HEADER = b"SQLite format 3\x00"


def check_store_file(path: Path, what: str) -> None:
    """Refuse a SQLite store file that exists but is empty (0 bytes) or not a database
    (random bytes, a truncated copy); a missing file is fine (it is created). Only reads.

    Raises:
        StoreCorrupt: naming the file and what to do.
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StudyError(f"cannot read the {what} {str(path)!r}: {exc}") from exc
    problem: str | None = "is empty (0 bytes)"
    if size > 0:
        with path.open("rb") as f:
            header = f.read(len(SQLITE_HEADER))
        problem = "is not a SQLite database" if header != SQLITE_HEADER else _unreadable(path)
    if problem is not None:
        raise StoreCorrupt(
            f"the {what} {str(path)!r} {problem}: restore it from a backup, or remove it "
            "(and its -wal and -shm files) to start over; nothing was written to it"
        )


def _unreadable(path: Path) -> str | None:
    """Why SQLite cannot read the schema of ``path`` (opened read-only), or None.

    A header that says WAL makes even a read-only connection create the -wal and -shm
    files; those this check created beside a file it refuses are removed again, so a
    refused store is left as it was.
    """
    sidecars = [path.with_name(path.name + end) for end in ("-wal", "-shm")]
    created = [p for p in sidecars if not p.exists()]
    problem = None
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
    except sqlite3.Error as exc:
        problem = f"cannot be opened ({exc})"
    else:
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.DatabaseError as exc:
            if is_corruption(exc):  # not a lock, a busy writer or a passing I/O error
                problem = f"is corrupt ({exc})"
        finally:
            con.close()
    if problem is not None:
        for p in created:
            p.unlink(missing_ok=True)
    return problem


def is_corruption(exc: sqlite3.Error) -> bool:
    """Whether SQLite's error says the file itself is damaged (``SQLITE_CORRUPT``,
    ``SQLITE_NOTADB``). A lock, a busy writer or an I/O error is not: another process may
    be checkpointing the same store (it removes the -wal file as it closes), and calling a
    sound store corrupt would tell its user to delete it."""
    text = str(exc).lower()
    return "malformed" in text or "not a database" in text


CREATE_TRIES = 8
"""Tries of creating a storage's tables while another process creates them too."""


def storage_unlocked(url: str) -> optuna.storages.RDBStorage:
    """:func:`make_storage` for a caller that holds :func:`creating` already."""
    url = canonical_url(url)  # postgres:// is postgresql://
    if url.startswith("sqlite:///"):
        path = sqlite_file(url)
        if path is not None:
            use_wal(path)
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    for attempt in range(CREATE_TRIES):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as exc:
            # Another process created the same tables (or version row) between Optuna's
            # check and its CREATE: they exist now, so a retry finds them.
            if attempt + 1 < CREATE_TRIES and _created_meanwhile(exc):
                time.sleep(random.uniform(0.05, 0.3))
                continue
            raise StudyError(f"cannot open the Optuna storage {redact(url)}: {exc}") from exc
    raise AssertionError("unreachable")


def _created_meanwhile(exc: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError

    text = str(exc).lower()
    return isinstance(exc, IntegrityError) or "already exists" in text or "duplicate" in text


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
    if name not in names:
        try:
            study = optuna.create_study(
                study_name=name, storage=storage, sampler=sampler, direction="minimize"
            )
        except optuna.exceptions.DuplicatedStudyError:
            pass  # another driver created it just now: load it, as if it had been there
        else:
            study.set_user_attr(SPEC_TEXT, spec_text)
            study.set_user_attr(PLANNED, planned)
            study.set_user_attr(CLAIM, claim or "")
            study.set_user_attr(SPEC_HASH, spec_hash)  # last: the study is complete now
            return study
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    existing = _spec_hash(study)
    if existing is None and not study.get_trials(deepcopy=False):
        # Created by a driver that died before it set the spec: this one finishes it.
        study.set_user_attr(SPEC_TEXT, spec_text)
        study.set_user_attr(PLANNED, planned)
        study.set_user_attr(CLAIM, claim or "")
        study.set_user_attr(SPEC_HASH, spec_hash)
        existing = spec_hash
    if existing != spec_hash:
        raise StudyError(
            f"study {name!r} already exists with a different spec (hash {existing} != "
            f"{spec_hash}); resume it with its original spec, or start a new study with "
            "--study-name NEW"
        )
    if planned > int(study.user_attrs.get(PLANNED, 0)):  # a tuned stage 1 grown by extensions
        study.set_user_attr(PLANNED, planned)
    return study


CREATION_WAIT_SECONDS = 10.0
"""How long a driver waits for a study another driver is creating to get its spec."""


def _spec_hash(study: optuna.Study) -> str | None:
    """The study's spec hash; while it is missing (another driver is creating the study,
    which sets it last), read again for up to ``CREATION_WAIT_SECONDS``."""
    deadline = time.monotonic() + CREATION_WAIT_SECONDS
    while True:
        value = study.user_attrs.get(SPEC_HASH)
        if value is not None or time.monotonic() >= deadline:
            return None if value is None else str(value)
        time.sleep(0.1)


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
    """FAIL trials not retried yet (:func:`unretried_failures`)."""

    def after_tell(self, outcome: str) -> StudyCounts:
        """These counts once one RUNNING trial is told with ``outcome``."""
        return replace(
            self,
            complete=self.complete + 1,
            running=max(0, self.running - 1),
            **{outcome: getattr(self, outcome) + 1},
        )

    def after_create(self, n: int) -> StudyCounts:
        """These counts once ``n`` RUNNING trials are created."""
        return replace(self, running=self.running + n)

    def after_fail(self) -> StudyCounts:
        """These counts once one RUNNING trial is told FAIL."""
        return replace(self, failed=self.failed + 1, running=max(0, self.running - 1))

    @property
    def remaining(self) -> int:
        return max(0, self.planned - self.complete)


def study_counts(study: optuna.Study) -> StudyCounts:
    """Count trials by state and outcome: in a few SQL queries on a database storage (a
    count, not a read of every trial, so progress and status stay fast at 100,000
    trials), else from the trials."""
    planned = study.user_attrs.get(PLANNED)
    engine = compat.engine(study)  # None: not a database
    if engine is None:
        return _counted(study.get_trials(deepcopy=False), planned)
    models = compat.rdb_models()
    t = models.TrialModel.__table__
    a = models.TrialUserAttributeModel.__table__
    mine = t.c.study_id == compat.study_id(study)
    joined = a.join(t, a.c.trial_id == t.c.trial_id)
    with engine.connect() as conn:
        states = dict(
            conn.execute(
                sa.select(t.c.state, sa.func.count()).where(mine).group_by(t.c.state)
            ).all()
        )
        where = (mine, t.c.state == TrialState.COMPLETE, a.c.key == OUTCOME)
        query = sa.select(a.c.value_json, sa.func.count()).select_from(joined).where(*where)
        outcomes = {json.loads(v): n for v, n in conn.execute(query.group_by(a.c.value_json))}
    failed = 0
    if states.get(TrialState.FAIL):  # rare: read the trials to apply the retry rule
        failed = len(unretried_failures(study.get_trials(deepcopy=False)))
    total = sum(states.values())
    return StudyCounts(
        planned=int(planned if planned is not None else total),
        complete=states.get(TrialState.COMPLETE, 0),
        **{name: outcomes.get(name, 0) for name in OUTCOMES},
        running=states.get(TrialState.RUNNING, 0),
        waiting=states.get(TrialState.WAITING, 0),
        failed=failed,
    )


OUTCOMES = ("converged", "diverged", "censored", "stalled", "frozen")
"""The outcomes :class:`StudyCounts` counts."""


def _counted(trials: list[FrozenTrial], planned: object) -> StudyCounts:
    states = [t.state for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    outcomes = [t.user_attrs.get(OUTCOME) for t in complete]
    return StudyCounts(
        planned=int(planned if planned is not None else len(trials)),  # type: ignore[call-overload]
        complete=len(complete),
        **{name: outcomes.count(name) for name in OUTCOMES},
        running=states.count(TrialState.RUNNING),
        waiting=states.count(TrialState.WAITING),
        failed=len(unretried_failures(trials)),
    )


def live_keys(study: optuna.Study) -> set[str | None]:
    """Keys of the study's complete, running and waiting trials: one SQL query on a
    database storage (the key attributes only, not every trial whole), so a resume of a
    100,000-trial grid reads them in a second or so."""
    engine = compat.engine(study)  # None: not a database
    if engine is None:
        trials = study.get_trials(deepcopy=False, states=LIVE_STATES)
        return {t.user_attrs.get(KEY) for t in trials}
    models = compat.rdb_models()
    t = models.TrialModel.__table__
    a = models.TrialUserAttributeModel.__table__
    query = (
        sa.select(a.c.value_json)
        .select_from(a.join(t, a.c.trial_id == t.c.trial_id))
        .where(t.c.study_id == compat.study_id(study), t.c.state.in_(LIVE_STATES), a.c.key == KEY)
    )
    with engine.connect() as conn:
        return {json.loads(value) for (value,) in conn.execute(query)}


LIVE_STATES = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
"""A trial in one of these states holds its key: its grid point needs no new trial."""


def unretried_failures(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The FAIL trials a rerun retries: not retried already (no trial's ``RETRY_OF`` is
    its number) and whose key no live trial (complete, running, waiting) holds, the latest
    one per key. A FAIL
    trial stays in the storage as history; once its grid point has a new trial, or its
    params were enqueued again, it is no longer counted as failed."""
    live = {t.user_attrs.get(KEY) for t in trials if t.state in LIVE_STATES}
    retried = {t.user_attrs.get(RETRY_OF) for t in trials}
    latest: dict[object, FrozenTrial] = {}  # one per key: a point that failed twice is one
    for t in trials:
        key = t.user_attrs.get(KEY)
        live_key = key is not None and key in live
        if t.state == TrialState.FAIL and t.number not in retried and not live_key:
            latest[key if key is not None else ("trial", t.number)] = t
    return sorted(latest.values(), key=lambda t: t.number)
