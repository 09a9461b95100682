"""One contract for pipeline.storage, run against every backend it supports: a SQLite file
(the embedded default) and a PostgreSQL server (the cluster's), via ``storage_url``."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, IntDistribution
from optuna.trial import TrialState

from models.spec import EpochRecord, InitDiagnostics, TrialResult, TrialSpec
from pipeline import storage as st

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
    history = [
        EpochRecord(
            epoch=e,
            train_loss=1.0 / e,
            val_loss=1.1 / e,
            grad_norm=0.5,
            hidden_var=0.9,
            hidden_sat=0.0,
        )
        for e in range(1, 40)
    ]
    history.append(EpochRecord(40, math.inf, math.nan, math.inf, math.nan, 1.0))
    return TrialResult(
        spec=TrialSpec(seq_len=5, hidden=8, seed=seed, data_seed=seed, init_recurrent=None),
        converged_epoch=None,
        diverged_epoch=40,
        target_loss=0.01,
        baseline_loss=1 / 6,
        history=history,
        diagnostics=InitDiagnostics(
            spectral_radius=1.25,
            hidden_var=[0.5 + i / steps for i in range(steps)],
            hidden_sat=[0.0] * steps,
            grad_norm=[math.exp(-i / 50) for i in range(steps)],
            initial_loss=0.2,
        ),
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
    first = st.DriverLock(study, storage)
    first.acquire()
    second = st.DriverLock(open_(storage), storage)
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
    lock = st.DriverLock(open_(storage), storage)
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
        st.DriverLock(open_(storage), storage).acquire()


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
    st.set_trial_attr(study, trial._trial_id, st.RESULT, result.to_json())
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
