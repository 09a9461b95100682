"""One contract for pipeline.storage and the driver's study store (pipeline.studystore),
run against every backend they support: a SQLite file (the embedded default) and a
PostgreSQL server (the cluster's), via ``storage_url``. The store's part covers every call
the driver makes, and the retried writes whose first try landed: none is repeated."""

from __future__ import annotations

import math
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator

import optuna
import pytest
import sqlalchemy.exc
from factories import diagnostics, history, trial_result
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from models.spec import EpochRecord, TrialResult, TrialSpec
from pipeline import storage as st
from pipeline.studystore import DriverLock, StudyStore

SAMPLER_SEED = 0
DISTRIBUTIONS = {
    "init": CategoricalDistribution(["xavier", "uniform01"]),
    "seed": IntDistribution(0, 9),
}


@pytest.fixture
def storage(storage_url: str) -> Iterator[optuna.storages.RDBStorage]:
    made = st.make_storage(storage_url)
    yield made
    made.remove_session()
    made.engine.dispose()


def open_(
    storage: optuna.storages.BaseStorage, name: str = "contract", spec_hash: str = "h1"
) -> optuna.Study:
    return st.open_study(
        storage,
        name,
        spec_hash=spec_hash,
        spec_text=f"name: {name}\n",
        planned=4,
        claim="xavier converges faster",
        sampler=optuna.samplers.RandomSampler(seed=SAMPLER_SEED),
    )


def a_result(seed: int = 0, steps: int = 500) -> TrialResult:
    """A result with every kind of value a real one holds: None, NaN, infinity, long lists."""
    epochs = range(1, 40)
    records = history(
        [1.1 / e for e in epochs],
        train_losses=[1.0 / e for e in epochs],
        grad_norm=0.5,
        hidden_var=0.9,
    )
    records.append(EpochRecord(40, math.inf, math.nan, math.inf, math.nan, 1.0))
    return trial_result(
        TrialSpec(seq_len=5, hidden=8, seed=seed, data_seed=seed, init_recurrent=None),
        records,
        diagnostics=diagnostics(
            radius=1.25,
            hidden_var=[0.5 + i / steps for i in range(steps)],
            hidden_sat=[0.0] * steps,
            grad_norm=[math.exp(-i / 50) for i in range(steps)],
            initial_loss=0.2,
        ),
        diverged=40,
        target=0.01,
        baseline=1 / 6,
        wall_seconds=1.5,
        device="cpu",
        node="host/0123456789ab",
    )


def test_open_study_creates_then_loads(storage: optuna.storages.RDBStorage) -> None:
    created = open_(storage)
    assert created.user_attrs[st.SPEC_HASH] == "h1"
    assert created.user_attrs[st.PLANNED] == 4
    assert created.user_attrs[st.CLAIM] == "xavier converges faster"
    loaded = open_(storage)
    assert loaded._study_id == created._study_id
    assert st.load_existing_study(storage, "contract")._study_id == created._study_id


def test_a_changed_spec_is_refused(storage: optuna.storages.RDBStorage) -> None:
    open_(storage)
    with pytest.raises(st.StudyError, match="different spec"):
        open_(storage, spec_hash="h2")
    with pytest.raises(st.StudyError, match=r"no study named 'other'.*contract"):
        st.load_existing_study(storage, "other")


def test_driver_lock_refuses_a_second_live_driver(storage: optuna.storages.RDBStorage) -> None:
    study = open_(storage)
    first = DriverLock(study, storage)
    first.acquire()
    second = DriverLock(open_(storage), storage)
    with pytest.raises(st.StudyBusy, match="another driver"):
        second.acquire()
    first.release()
    second.acquire()  # free once released
    second.release()


def dead_pid() -> int:
    """The pid of a process of this host that has exited."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


@pytest.mark.parametrize("how", ["process-gone-here", "heartbeat-stale-elsewhere"])
def test_driver_lock_takes_over_a_dead_driver(
    storage: optuna.storages.RDBStorage, how: str
) -> None:
    study = open_(storage)
    if how == "process-gone-here":  # taken over at once, however fresh its heartbeat
        holder = {"host": socket.gethostname(), "pid": dead_pid(), "heartbeat": time.time()}
    else:
        stale = time.time() - st.LOCK_STALE_SECONDS - 1
        holder = {"host": "elsewhere", "pid": 1, "heartbeat": stale}
    study.set_user_attr(st.DRIVER, {**holder, "token": "dead"})
    lock = DriverLock(open_(storage), storage)
    lock.acquire()
    assert open_(storage).user_attrs[st.DRIVER]["token"] == lock.token
    lock.release()
    assert open_(storage).user_attrs[st.DRIVER] is None


def test_driver_lock_respects_a_fresh_heartbeat_elsewhere(
    storage: optuna.storages.RDBStorage,
) -> None:
    study = open_(storage)
    other = {"host": "elsewhere", "pid": os.getpid(), "token": "live", "heartbeat": time.time()}
    study.set_user_attr(st.DRIVER, other)
    with pytest.raises(st.StudyBusy):
        DriverLock(open_(storage), storage).acquire()


def test_enqueue_ask_tell_keeps_the_key(storage: optuna.storages.RDBStorage) -> None:
    study = open_(storage)
    study.enqueue_trial({"init": "uniform01", "seed": 3}, user_attrs={st.KEY: "key-1"})
    trial = study.ask(DISTRIBUTIONS)
    assert trial.params == {"init": "uniform01", "seed": 3}
    assert trial.user_attrs[st.KEY] == "key-1"
    study.tell(trial.number, 7.0)
    frozen = open_(storage).get_trials()[0]
    assert frozen.state == TrialState.COMPLETE
    assert frozen.value == 7.0
    assert frozen.user_attrs[st.KEY] == "key-1"
    assert frozen.params == {"init": "uniform01", "seed": 3}


def test_stored_result_round_trip(storage: optuna.storages.RDBStorage) -> None:
    study = open_(storage)
    trial = study.ask(DISTRIBUTIONS)
    result = a_result()
    trial.set_user_attr(st.RESULT, result.to_json())
    study.tell(trial.number, 13.0)
    back = st.stored_result(open_(storage).get_trials()[0])
    assert back is not None
    assert back.to_json() == result.to_json()
    assert back.history[-1].val_loss != back.history[-1].val_loss  # NaN survived
    assert back.history[-1].train_loss == math.inf


def test_study_counts(storage: optuna.storages.RDBStorage) -> None:
    study = open_(storage)
    for outcome in ("converged", "converged", "diverged"):
        trial = study.ask(DISTRIBUTIONS)
        trial.set_user_attr(st.OUTCOME, outcome)
        study.tell(trial, 1.0)
    failed = study.ask(DISTRIBUTIONS)
    study.tell(failed, state=TrialState.FAIL)
    study.ask(DISTRIBUTIONS)  # left running
    study.enqueue_trial({"init": "xavier", "seed": 0})
    counts = st.study_counts(open_(storage))
    assert counts == st.StudyCounts(
        planned=4,
        complete=3,
        converged=2,
        diverged=1,
        censored=0,
        stalled=0,
        frozen=0,
        running=1,
        waiting=1,
        failed=1,
    )
    assert counts.remaining == 1


# -- the study store: every call the driver makes --------------------------------------


@pytest.fixture
def store(storage_url: str) -> Iterator[StudyStore]:
    opened = open_store(storage_url)
    yield opened
    opened.close()


def open_store(url: str, spec_hash: str = "h1", notes: list[str] | None = None) -> StudyStore:
    return StudyStore.open(
        url,
        "contract",
        spec_hash=spec_hash,
        spec_text="name: contract\n",
        planned=4,
        claim="xavier converges faster",
        sampler=optuna.samplers.RandomSampler(seed=SAMPLER_SEED),
        note=(notes if notes is not None else []).append,
    )


def dropped() -> sqlalchemy.exc.DBAPIError:
    """What a call whose connection dropped raises (after the server may have committed)."""
    return sqlalchemy.exc.OperationalError(
        "COMMIT", {}, ConnectionError("server closed the connection"), connection_invalidated=True
    )


def test_store_opens_the_study_once_per_spec(storage_url: str, store: StudyStore) -> None:
    again = open_store(storage_url)
    assert again.study._study_id == store.study._study_id and again.name == "contract"
    again.close()
    with pytest.raises(st.StudyError, match="different spec"):
        open_store(storage_url, spec_hash="h2")


def test_store_creates_grid_trials_keyed_and_running(store: StudyStore) -> None:
    store.create_running({"init": "xavier", "seed": 1}, DISTRIBUTIONS, "k-1")
    store.create_running({"init": "uniform01", "seed": 2}, DISTRIBUTIONS, "k-2")
    assert store.live_keys() == {"k-1", "k-2"}
    [first, second] = store.running()
    assert (first.params, first.key, first.result_json) == (
        {"init": "xavier", "seed": 1},
        "k-1",
        None,
    )
    assert second.key == "k-2" and first.trial_id != second.trial_id
    assert store.counts().running == 2 and store.n_waiting() == 0


def test_store_stores_and_tells_a_result(store: StudyStore) -> None:
    store.create_running({"init": "xavier", "seed": 1}, DISTRIBUTIONS, "k-1")
    store.create_running({"init": "xavier", "seed": 2}, DISTRIBUTIONS, "k-2")
    [grid, sampled] = store.running()
    text = a_result().to_json()
    store.store_result(grid.trial_id, text, "diverged")
    assert store.running()[0].result_json == text  # stored before the tell
    store.tell(grid.number, grid.trial_id, 41.0, direct=True)  # the grid's state write
    store.store_result(sampled.trial_id, text, "diverged")
    store.tell(sampled.number, sampled.trial_id, 41.0)  # study.tell
    [a, b] = store.complete()
    assert a.result_json == b.result_json == text
    assert a.result is not None and a.result.to_json() == text
    assert [t.value for t in store.study.get_trials()] == [41.0, 41.0]
    counts = store.counts()
    assert (counts.complete, counts.diverged, counts.running) == (2, 2, 0)


def test_store_fails_a_trial_with_its_error(store: StudyStore) -> None:
    store.create_running({"init": "xavier", "seed": 1}, DISTRIBUTIONS, "k-1")
    [t] = store.running()
    store.store_error(t.trial_id, "PackFailed: worker died")
    store.fail(t.number, t.trial_id)
    [frozen] = store.study.get_trials()
    assert frozen.state == TrialState.FAIL
    assert frozen.user_attrs[st.ERROR] == "PackFailed: worker died"
    assert store.live_keys() == set() and store.counts().failed == 1


def test_store_asks_enqueued_trials_first_and_keys_them(store: StudyStore) -> None:
    store.study.enqueue_trial({"init": "uniform01", "seed": 3})
    assert store.n_waiting() == 1
    asked = store.ask(DISTRIBUTIONS, claimed=())
    assert asked is not None and asked.params == {"init": "uniform01", "seed": 3}
    assert asked.key is None
    store.set_key(asked.trial_id, "k-3")
    assert store.running()[0].key == "k-3" and store.n_waiting() == 0


def test_store_finishes_an_interrupted_ask(store: StudyStore) -> None:
    """An ask cut short after it popped the enqueued trial, before it set the params."""
    store.study.enqueue_trial({"init": "uniform01", "seed": 3})
    [waiting] = store.study.get_trials(states=(TrialState.WAITING,))
    assert store.storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)
    [cut] = store.running()
    assert cut.params == {}
    assert store.finish_ask(cut, DISTRIBUTIONS) == {"init": "uniform01", "seed": 3}
    assert store.running()[0].params == {"init": "uniform01", "seed": 3}


def test_store_lock_refuses_a_second_driver_until_released(
    storage_url: str, store: StudyStore
) -> None:
    other = open_store(storage_url)
    with store.locked():
        assert store.study.user_attrs[st.DRIVER]["pid"] == os.getpid()
        with pytest.raises(st.StudyBusy, match="another driver"), other.locked():
            pass
    assert open_(other.storage).user_attrs[st.DRIVER] is None
    with other.locked():  # free once released
        pass
    other.close()


def test_store_gives_up_at_once_on_a_refused_write(store: StudyStore) -> None:
    def full() -> None:
        raise sqlalchemy.exc.OperationalError(
            "INSERT", {}, sqlite3.OperationalError("database or disk is full")
        )

    started = time.monotonic()
    refused = r"^the Optuna storage [^(]+ failed to store a result: database or disk is full$"
    with pytest.raises(st.StorageUnavailable, match=refused):
        store.call("store a result", full)
    assert time.monotonic() - started < 5  # no retry
    with pytest.raises(ZeroDivisionError):  # not the database's failure: raised as it is
        store.call("count the trials", lambda: 1 / 0)


@pytest.mark.parametrize("write", ["create", "ask", "tell-direct", "tell", "fail"])
def test_store_never_repeats_a_retried_write_that_landed(
    storage_url: str, write: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each guarded write commits, then its reply is lost once (a dropped connection): the
    retry finds it landed and writes nothing more, with a note when it fails and when the
    storage is back."""
    notes: list[str] = []
    store = open_store(storage_url, notes=notes)
    if write != "create":
        store.create_running({"init": "xavier", "seed": 1}, DISTRIBUTIONS, "k-1")
    inner = store.study._storage
    target, name = {
        "create": (getattr(inner, "_backend", inner), "_create_new_trial"),  # what it calls
        "ask": (store.study, "ask"),
        "tell-direct": (inner, "set_trial_state_values"),
        "tell": (store.study, "tell"),
        "fail": (store.study, "tell"),
    }[write]
    real, calls = getattr(target, name), []

    def commit_then_drop(*args: object, **kwargs: object) -> object:
        calls.append(name)
        value = real(*args, **kwargs)
        if len(calls) == 1:
            raise dropped()
        return value

    monkeypatch.setattr(target, name, commit_then_drop)
    if write == "create":
        store.create_running({"init": "xavier", "seed": 1}, DISTRIBUTIONS, "k-1")
    elif write == "ask":
        assert store.ask(DISTRIBUTIONS, claimed={0}) is None  # trial 0 is the grid trial's
    else:
        [t] = store.running()
        if write == "fail":
            store.fail(t.number, t.trial_id)
        else:
            store.tell(t.number, t.trial_id, 3.0, direct=write == "tell-direct")
    monkeypatch.undo()

    assert calls == [name]  # written once, not again on the retry
    trials = store.study.get_trials()
    assert len(trials) == (1 if write == "create" else 2 if write == "ask" else 1)
    expected = {"fail": TrialState.FAIL, "create": TrialState.RUNNING, "ask": TrialState.RUNNING}
    assert trials[-1].state == expected.get(write, TrialState.COMPLETE)
    assert notes[0].startswith("the Optuna storage failed to ") and "retrying" in notes[0]
    assert notes[1:] == ["the Optuna storage is reachable again"]
    store.close()
