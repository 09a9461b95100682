"""The study store: one study in the Optuna storage, behind the few calls the driver makes.

Every call is retried while the database is unreachable (a PostgreSQL restart, a locked
SQLite file), for up to ``STORAGE_RETRY_SECONDS`` (:func:`pipeline.retry.retrying`), with
one note when it fails and one when it is back. A retried write that may have landed
before the connection dropped is checked first: a trial already told is not told again, a
grid point's trial is not created twice, and an ask that created its trial is not asked
again. The store also holds the study's lock (:class:`DriverLock`) while the driver runs.

Optuna has no public API for some of this (a RUNNING trial with its params in one call, a
tell that skips the sampler, the params of an interrupted ask, an attribute by trial id):
its private API is used in this module only (checked by tests/cluster/test_storage_contract).
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

import optuna
import sqlalchemy as sa
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from models.spec import TrialResult
from pipeline import optuna_compat as compat
from pipeline import retry, urls
from pipeline import storage as st

STORAGE_RETRY_SECONDS = 60.0
"""How long a storage call is retried while the database is unreachable."""
STORAGE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Seconds between retries of a storage call (the last one repeats)."""
HEARTBEAT_SECONDS = 5.0
"""How often the lock's holder refreshes its heartbeat (well under LOCK_STALE_SECONDS)."""

_T = TypeVar("_T")


@dataclass(frozen=True)
class StoredTrial:
    """A trial as the driver sees it: who it is, its params, key and stored result."""

    number: int
    trial_id: int
    params: dict[str, Any]
    key: str | None
    result_json: str | None
    """The TrialResult stored on the trial, as the worker wrote it (None: not trained)."""

    @property
    def result(self) -> TrialResult | None:
        return TrialResult.from_json(self.result_json) if self.result_json else None


def _stored(t: FrozenTrial | optuna.trial.Trial) -> StoredTrial:
    """The driver's view of a trial; its seed (an attribute) among its params."""
    attrs = t.user_attrs
    params = dict(t.params)
    if st.SEED in attrs:
        params["seed"] = attrs[st.SEED]
    key, result = attrs.get(st.KEY), attrs.get(st.RESULT)
    return StoredTrial(t.number, compat.trial_id(t), params, key, result)


def _unless_landed(write: Callable[[], object], landed: Callable[[], bool]) -> Callable[[], None]:
    """A write for :meth:`StudyStore.call` that is not repeated if its failed try landed.

    The first call writes. A later call (a retry after a dropped connection, when the
    first try may have committed all the same) first asks ``landed()`` and writes only if
    it says no.
    """
    tried = False

    def attempt() -> None:
        nonlocal tried
        if tried and landed():
            return
        tried = True
        write()

    return attempt


class StudyStore:
    """One study, opened by :meth:`open`; the only writer of its trials is the driver."""

    def __init__(
        self,
        url: str,
        storage: optuna.storages.RDBStorage,
        study: optuna.Study,
        note: Callable[[str], None],
    ) -> None:
        self.url = url
        self.storage = storage
        self.study = study
        """The Optuna study (for tests and readers; the driver goes through the methods)."""
        self._note = note
        self._down = False
        """Whether the last call failed and is being retried (for the two notes)."""

    @classmethod
    def open(
        cls,
        url: str,
        name: str,
        *,
        spec_hash: str,
        spec_text: str,
        planned: int,
        claim: str | None,
        sampler: optuna.samplers.BaseSampler | None = None,
        sampler_seed: int = 0,
        note: Callable[[str], None] = lambda _: None,
    ) -> StudyStore:
        """Create the study or load it (same spec only); see :func:`storage.open_study`.

        ``sampler`` None is for a study whose trials are all created here (a grid): it gets
        a seeded random sampler, consulted only to finish an interrupted ask.
        ``note`` is told when the storage goes away and when it is back.

        Two drivers opening the same new storage and study at once both get it (one
        creates it, the other loads it); the lock (:meth:`locked`) then picks one.

        Raises:
            storage.StoreCorrupt: the SQLite file is empty or not a database.
            storage.StudyError: bad URL, or the study exists with a different spec.
        """
        # One process at a time creates a SQLite storage's tables and a study in it
        # (st.creating); a server's concurrent creations are retried (st.open_study).
        with st.creating(url):
            storage = st.storage_unlocked(url)
            study = st.open_study(
                storage,
                name,
                spec_hash=spec_hash,
                spec_text=spec_text,
                planned=planned,
                claim=claim,
                sampler=sampler or optuna.samplers.RandomSampler(seed=sampler_seed),
            )
        return cls(url, storage, study, note)

    @property
    def name(self) -> str:
        return self.study.study_name

    def close(self) -> None:
        """Close the storage's connections (the store is not used after this)."""
        self.storage.remove_session()
        self.storage.engine.dispose()

    # -- the retry ---------------------------------------------------------------------

    def call(self, what: str, fn: Callable[[], _T]) -> _T:
        """Make one storage call; while the database is unreachable, retry it with backoff
        for up to ``STORAGE_RETRY_SECONDS``, with a note when it fails and when it is back.

        ``fn`` must be safe to repeat (reads, attribute writes) or guard itself
        (:func:`_unless_landed`).

        Raises:
            storage.StorageUnavailable: still unreachable after that long, or the database
                refused the call for good (a full disk, a read-only file).
        """

        def on_retry(exc: BaseException) -> None:
            if not self._down:
                self._down = True
                self._note(
                    f"the Optuna storage failed to {what} ({_cause(exc)}); retrying for up to "
                    f"{STORAGE_RETRY_SECONDS:.0f} s"
                )

        policy = retry.retrying(STORAGE_RETRY_SECONDS, STORAGE_RETRY_DELAYS, on_retry)
        try:
            value = policy(fn)
        except Exception as exc:
            if retry.database_error(exc) is None:
                raise  # a bug or bad data, not the database
            where = f"the Optuna storage {urls.redact(self.url)}"
            if not retry.is_transient(exc):
                raise st.StorageUnavailable(f"{where} failed to {what}: {_cause(exc)}") from exc
            raise st.StorageUnavailable(
                f"{where} is unreachable (failed to {what}: {_cause(exc)}); finished trials "
                "are kept: run the same command again to resume"
            ) from exc
        if self._down:
            self._down = False
            self._note("the Optuna storage is reachable again")
        return value

    # -- reads -------------------------------------------------------------------------

    def counts(self) -> st.StudyCounts:
        return self.call("count the trials", lambda: st.study_counts(self.study))

    def trials(self, *states: TrialState) -> list[StoredTrial]:
        """The trials in these states (all, if none given)."""
        return [_stored(t) for t in self._frozen(*states)]

    def running(self) -> list[StoredTrial]:
        return self.trials(TrialState.RUNNING)

    def complete(self) -> list[StoredTrial]:
        return self.trials(TrialState.COMPLETE)

    def n_waiting(self) -> int:
        """Trials enqueued and not asked yet."""
        return len(self._frozen(TrialState.WAITING))

    def live_keys(self) -> set[str | None]:
        """Keys of the trials that are complete, running or waiting. A grid point whose
        only trials are FAIL is not among them: the driver creates a fresh trial for it
        (:meth:`create_running`), so a rerun retries a failed grid trial."""
        return self.call("read the trials", self._live_keys)

    def _live_keys(self) -> set[str | None]:
        return st.live_keys(self.study)

    def failed(self) -> list[StoredTrial]:
        """The FAIL trials a rerun retries (:func:`storage.unretried_failures`): a grid's
        get a fresh trial from the grid's creation (their key is not live); a sampled
        study's are enqueued again with :meth:`retry`."""
        trials = self.call("read the trials", lambda: self.study.get_trials(deepcopy=False))
        return [_stored(t) for t in st.unretried_failures(trials)]

    def retry(self, trial: StoredTrial) -> None:
        """Enqueue a FAIL trial's params again, WAITING with ``RETRY_OF`` (one write): the
        next ask takes them, and the FAIL trial is no longer :meth:`failed`. A retried
        call first checks that the enqueue did not land."""

        def landed() -> bool:
            trials = self.study.get_trials(deepcopy=False)
            return any(t.user_attrs.get(st.RETRY_OF) == trial.number for t in trials)

        params = {name: v for name, v in trial.params.items() if name != "seed"}
        attrs: dict[str, Any] = {st.RETRY_OF: trial.number}
        if "seed" in trial.params:  # the same replicate, an attribute (never a param)
            attrs[st.SEED] = trial.params["seed"]

        def write() -> None:
            self.study.enqueue_trial(params, user_attrs=attrs)

        self.call(f"retry trial {trial.number}", _unless_landed(write, landed))

    def _frozen(self, *states: TrialState) -> list[FrozenTrial]:
        """The trials in ``states`` (all if none), those from the database alone: Optuna's
        cache loads every trial first (a resume of 100,000 trials reads its RUNNING ones)."""
        if states:
            return self.call(
                "read the trials", lambda: compat.trials_in_states(self.study, states)
            )
        return self.call("read the trials", lambda: self.study.get_trials(False, states=None))

    # -- new trials --------------------------------------------------------------------

    def create_running(
        self,
        params: dict[str, Any],
        distributions: dict[str, BaseDistribution],
        key: str,
        seed: int | None = None,
    ) -> tuple[int, int] | None:
        """Create one grid point's trial, RUNNING, with its params, key and seed (an attribute)
        in one write (``enqueue_trial`` then ``ask`` scanned the waiting trials): its number
        and id, or None when a retry found its failed try had landed (RUNNING, unclaimed)."""
        attrs: dict[str, Any] = {st.KEY: key} if seed is None else {st.KEY: key, st.SEED: seed}
        template = FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.now(),
            datetime_complete=None,
            params=params,
            distributions=distributions,
            user_attrs=attrs,
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        created: list[FrozenTrial] = []
        self.call(
            "create a grid trial",
            _unless_landed(
                lambda: created.append(compat.create_trial(self.study, template)),
                lambda: key in self._live_keys(),
            ),
        )
        return (created[0].number, compat.trial_id(created[0])) if created else None

    def ask(
        self, distributions: dict[str, BaseDistribution], claimed: Collection[int]
    ) -> StoredTrial | None:
        """Ask Optuna for one trial (an enqueued one first).

        An ask that failed may still have created (or popped) its trial: if a RUNNING trial
        not in ``claimed`` exists, that ask landed and is not repeated, and None is returned
        (the caller takes the RUNNING trials it has not claimed). This needs the study's
        lock: every RUNNING trial is then the caller's.
        """
        asked: list[StoredTrial] = []

        def unclaimed() -> bool:
            running = self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return any(t.number not in claimed for t in running)

        self.call(
            "ask for a trial",
            _unless_landed(
                lambda: asked.append(_stored(self.study.ask(distributions))), unclaimed
            ),
        )
        return asked[0] if asked else None

    def finish_ask(
        self, trial: StoredTrial, distributions: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """The params of a RUNNING trial whose ask was interrupted (a dead driver, a dropped
        connection): those it lacks drawn as the ask would have (enqueued values first, then
        the sampler), and an enqueued seed (never drawn: no distribution)."""

        def draw() -> dict[str, Any]:
            live = optuna.trial.Trial(self.study, trial.trial_id)
            drawn = {name: compat.suggest(live, name, d) for name, d in distributions.items()}
            fixed = self.storage.get_trial_system_attrs(trial.trial_id).get("fixed_params") or {}
            return drawn | ({"seed": fixed["seed"]} if "seed" in fixed else {})

        return self.call("finish an interrupted ask", draw)

    # -- writes to a RUNNING trial -----------------------------------------------------

    def pin_attrs(self, attrs: dict[str, object]) -> None:
        """Set study attributes that must never change: one already set to another value
        is refused (e.g. a tuned protocol's chosen lrs, recomputed on resume). None values
        are not set, and with none to set the storage is not read."""
        attrs = {name: value for name, value in attrs.items() if value is not None}
        if not attrs:
            return
        current = self.call("read the study", lambda: dict(self.study.user_attrs))
        for name, value in attrs.items():
            if name not in current:
                self.call("set a study attribute", partial(self.study.set_user_attr, name, value))
            elif current[name] != value:
                raise st.StudyError(
                    f"study {self.name!r}: {name} is {current[name]!r} in the storage but this"
                    f" run computed {value!r}; the stored results it was derived from changed."
                    " Start a new study with --study-name NEW"
                )

    def record_session(self, session: dict[str, Any]) -> None:
        """Add this driver run's record to the study's :data:`~pipeline.storage.SESSIONS`,
        or replace it (the one with its ``started``); the driver holds the lock, so the
        read and the write cannot race another driver's."""

        def write() -> None:
            stored = self.study.user_attrs.get(st.SESSIONS, [])
            kept = [s for s in stored if s.get("started") != session["started"]]
            self.study.set_user_attr(st.SESSIONS, [*kept, session])

        self.call("record the driver run", write)

    def set_key(self, trial_id: int, key: str) -> None:
        self.call("set a trial's key", lambda: self._set_attr(trial_id, st.KEY, key))

    def set_seed(self, trial_id: int, seed: int) -> None:
        self.call("set a trial's seed", lambda: self._set_attr(trial_id, st.SEED, seed))

    def store_result(self, trial_id: int, result_json: str, outcome: str) -> None:
        """Store a trial's result (the worker's JSON, as it is) and outcome, before the
        tell: a result stored is never lost, even if the driver dies before telling."""
        self.call("store a result", lambda: self._set_attr(trial_id, st.RESULT, result_json))
        self.call("store an outcome", lambda: self._set_attr(trial_id, st.OUTCOME, outcome))

    def report(self, trial_id: int, epoch: int, value: float) -> None:
        """A trial's intermediate value (its validation loss) at an epoch, as it trains;
        written again with the same value when a retried pack streams that epoch again."""
        storage = compat.storage(self.study)
        write = partial(storage.set_trial_intermediate_value, trial_id, epoch, value)
        self.call("report an intermediate value", write)

    def store_error(self, trial_id: int, error: str) -> None:
        """Record why the infrastructure failed a trial."""
        self.call("store an error", lambda: self._set_attr(trial_id, st.ERROR, error))

    def _set_attr(self, trial_id: int, key: str, value: Any) -> None:
        compat.storage(self.study).set_trial_user_attr(trial_id, key, value)

    # -- finishing a trial -------------------------------------------------------------

    def tell(self, number: int, trial_id: int, value: float, direct: bool = False) -> None:
        """Tell a trial COMPLETE with its value.

        ``direct`` is for a study that never consults its sampler (a grid): the tell is
        then the state write alone (``study.tell`` also reads the trial back and calls the
        sampler's hook). A value that is not finite always goes through ``study.tell``.
        """
        if direct and math.isfinite(value):
            storage = compat.storage(self.study)  # through Optuna's cache
            self._tell_once(
                number,
                trial_id,
                lambda: storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [value]),
            )
        else:
            self._tell_once(number, trial_id, lambda: self.study.tell(number, value))

    def fail(self, number: int, trial_id: int) -> None:
        """Tell a trial FAIL (it is rerun on resume)."""
        self._tell_once(number, trial_id, lambda: self.study.tell(number, state=TrialState.FAIL))

    def _tell_once(self, number: int, trial_id: int, tell: Callable[[], object]) -> None:
        """A tell, retried while the storage is down; a retry after a tell that did commit
        before the connection dropped finds the trial finished and tells nothing."""
        storage = compat.storage(self.study)

        def finished() -> bool:
            return storage.get_trial(trial_id).state.is_finished()

        self.call(f"tell trial {number}", _unless_landed(tell, finished))

    # -- the lock ----------------------------------------------------------------------

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the study's lock, its heartbeat refreshed on a thread, then release it.

        Raises:
            storage.StudyBusy: another live driver holds it.
        """
        lock = DriverLock(self.study, self.storage)
        lock.acquire()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                with suppress(Exception):  # a missed heartbeat is retried on the next beat
                    lock.beat()

        thread = threading.Thread(target=beat, name="initstudy-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=HEARTBEAT_SECONDS)
            # A lock that cannot be released goes stale on its own (LOCK_STALE_SECONDS).
            with suppress(st.StorageUnavailable):
                self.call("release the study's lock", lock.release)


def _holder_of(raw: str | None) -> dict[str, Any] | None:
    """The lock's holder from its stored JSON (None: never held, or released)."""
    value = json.loads(raw) if raw else None
    return dict(value) if isinstance(value, dict) else None


def _cause(exc: BaseException) -> str:
    """The database's own words for a failed call, on one line (200 characters at most)."""
    failure = retry.database_error(exc) or exc
    return " ".join(str(getattr(failure, "orig", None) or failure).split())[:200]


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

    @staticmethod
    def live_holder(study: optuna.Study) -> dict[str, Any] | None:
        """The driver that holds ``study`` and is alive (a fresh heartbeat, and not a
        process gone from this host), with ``age`` (seconds since its heartbeat); None if
        no live driver holds it."""
        current = study.user_attrs.get(st.DRIVER)
        if not current:
            return None
        age = time.time() - float(current.get("heartbeat", 0) or 0)
        if age >= st.LOCK_STALE_SECONDS or DriverLock._dead_here(current):
            return None
        return {**current, "age": age}

    def acquire(self) -> None:
        """Take the lock, atomically: the holder row is swapped from the value read to
        this driver's only if no one changed it meanwhile (one SQL statement, so of two
        drivers racing exactly one wins); the loser is told who holds it.

        Raises:
            storage.StudyBusy: a live driver holds it (named: host, pid, heartbeat age).
        """
        for _ in range(5):
            raw = self._read_raw()
            current = _holder_of(raw)
            if current is not None and current.get("token") != self.token:
                self._refuse(current)
            mine = json.dumps({**self.holder, "heartbeat": time.time()})
            if self._swap(raw, mine):
                return
        raise st.StudyBusy(f"study {self.study.study_name!r} is being taken by another driver")

    def _refuse(self, current: dict[str, Any]) -> None:
        age = time.time() - float(current.get("heartbeat", 0) or 0)
        if age >= st.LOCK_STALE_SECONDS or self._dead_here(current):
            return  # a dead driver's lock: taken over
        raise st.StudyBusy(
            f"study {self.study.study_name!r} is being run by another driver "
            f"(host {current.get('host')}, pid {current.get('pid')}, heartbeat "
            f"{age:.0f} s ago); wait for it to finish, or stop it first"
        )

    def _table(self) -> Any:
        return compat.rdb_models().StudyUserAttributeModel.__table__

    def _read_raw(self) -> str | None:
        """The lock's row as stored (JSON text), None if the study never had one."""
        table = self._table()
        query = sa.select(table.c.value_json).where(
            table.c.study_id == compat.study_id(self.study), table.c.key == st.DRIVER
        )
        with self._engine().connect() as conn:
            value = conn.execute(query).scalar_one_or_none()
        return None if value is None else str(value)

    def _swap(self, old: str | None, new: str) -> bool:
        """Write ``new`` as the lock's row if it still is ``old``; whether it was."""
        table = self._table()
        where = (table.c.study_id == compat.study_id(self.study), table.c.key == st.DRIVER)
        try:
            with self._engine().begin() as conn:
                if old is None:  # no row yet: the unique (study, key) lets one insert win
                    conn.execute(
                        sa.insert(table).values(
                            study_id=compat.study_id(self.study), key=st.DRIVER, value_json=new
                        )
                    )
                    return True
                done = conn.execute(
                    sa.update(table)
                    .where(*where, table.c.value_json == old)
                    .values(value_json=new)
                )
                return bool(done.rowcount == 1)
        except sa.exc.IntegrityError:
            return False

    def _engine(self) -> sa.engine.Engine:
        engine = getattr(self.storage, "engine", None)
        if engine is None:
            raise TypeError("the driver lock needs an RDB storage")
        return engine

    @staticmethod
    def _dead_here(holder: dict[str, Any]) -> bool:
        """True if the holder ran on this host and its process no longer exists."""
        if holder.get("host") != socket.gethostname():
            return False
        try:
            os.kill(int(holder.get("pid", 0)), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, ValueError):
            return False
        return False

    def _read(self) -> dict[str, Any]:
        return _holder_of(self._read_raw()) or {}

    def beat(self) -> None:
        self.study.set_user_attr(st.DRIVER, {**self.holder, "heartbeat": time.time()})

    def release(self) -> None:
        if self._read().get("token") == self.token:
            self.study.set_user_attr(st.DRIVER, None)
