"""The pieces the fault tests lean on, in isolation: failpoints, the storage error
classification and the study store's retry that never repeats a write that landed."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import sqlalchemy.exc
from optuna.trial import TrialState
from rich.console import Console

from pipeline import driver as drv
from pipeline import retry, studystore
from pipeline import storage as st
from pipeline.faults import ENV, failpoint
from pipeline.progress import Reporter
from pipeline.studyspec import StudySpec, load_study_spec
from pipeline.studystore import StudyStore

from .conftest import ROOT, child_env


def test_failpoint_fires_on_the_nth_hit_only_when_named() -> None:
    code = (
        "from pipeline.faults import failpoint\n"
        "failpoint('driver.before_tell')\n"
        "failpoint('driver.after_tell'); print('hit 1', flush=True)\n"
        "failpoint('driver.after_tell'); print('hit 2', flush=True)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env({ENV: "driver.after_tell:2"}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split() == ["hit", "1"]


def test_failpoint_is_inert_without_the_variable_and_refuses_a_typo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    failpoint("driver.before_tell")  # nothing happens
    monkeypatch.setenv(ENV, "driver.befor_tell")
    with pytest.raises(ValueError, match=r"driver\.before_tell"):
        failpoint("driver.before_tell")
    monkeypatch.setenv(ENV, "driver.before_tell:0")
    with pytest.raises(ValueError, match="N >= 1"):
        failpoint("driver.before_tell")


def _operational(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("UPDATE trials", {}, sqlite3.OperationalError(message))


def test_storage_errors_worth_a_retry() -> None:
    locked, full = _operational("database is locked"), _operational("database or disk is full")
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = locked
    assert retry.is_transient(locked) and retry.is_transient(wrapped)
    assert not retry.is_transient(full) and retry.database_error(full) is full
    assert not retry.is_transient(ValueError("a bug"))
    assert retry.database_error(ValueError()) is None


def tiny_spec() -> StudySpec:
    return load_study_spec(ROOT / "tests" / "data" / "smoke_tiny.yaml")


def open_store(tmp_path: Path, spec: StudySpec, notes: Console | None = None) -> StudyStore:
    """The study store of ``spec`` in an empty SQLite file, as the driver opens it."""
    return StudyStore.open(
        drv.RunOptions(run_dir=tmp_path).storage_url,
        spec.name,
        spec_hash=spec.spec_hash(),
        spec_text="",
        planned=spec.n_trials_planned,
        claim=spec.claim,
        note=Reporter(notes, enabled=False).note,
    )


def test_a_tell_that_landed_before_the_connection_dropped_is_not_told_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notes = Console(record=True, width=200)
    store = open_store(tmp_path, tiny_spec(), notes)
    study = store.study
    trial = study.ask()
    real_tell, dropped = study.tell, []

    def tell_then_drop(*args: object, **kwargs: object) -> object:
        told = real_tell(*args, **kwargs)  # type: ignore[arg-type]  # commits...
        if not dropped:  # ...but the first time the reply is lost
            dropped.append(True)
            raise optuna.exceptions.StorageInternalError("lost") from _operational(
                "database is locked"
            )
        return told

    monkeypatch.setattr(study, "tell", tell_then_drop)
    store.tell(trial.number, trial._trial_id, 1.0)
    assert dropped and study.trials[0].state == TrialState.COMPLETE
    text = notes.export_text()
    assert "retrying" in text and "reachable again" in text


def test_a_storage_that_stays_down_ends_the_run_with_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(studystore, "STORAGE_RETRY_SECONDS", 1.0)
    store = open_store(tmp_path, tiny_spec())

    def locked() -> None:
        raise _operational("database is locked")

    def full() -> None:
        raise _operational("database or disk is full")

    with pytest.raises(st.StorageUnavailable, match="run the same command again"):
        store.call("count the trials", locked)
    with pytest.raises(st.StorageUnavailable, match="disk is full"):
        store.call("store a result", full)  # not transient: no retry


def test_a_trial_whose_ask_was_cut_short_is_rerun_with_its_grid_point(tmp_path: Path) -> None:
    """An ask interrupted after it popped the enqueued trial, before it set the params."""
    spec = tiny_spec()
    driver = drv.Driver(spec, "", drv.RunOptions(run_dir=tmp_path), Reporter(enabled=False))
    store = open_store(tmp_path, spec)
    point = spec.grid_points()[3]
    key = spec.trial_spec(point).key(spec.claim or "")
    store.study.enqueue_trial(point, user_attrs={st.KEY: key})
    waiting = store.study.get_trials(states=(TrialState.WAITING,))[0]
    assert store.storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING)  # the pop

    [pending] = driver._recover(store)
    assert pending.spec == spec.trial_spec(point) and pending.key == key
    trial = store.study.trials[0]
    assert {**trial.params, "seed": trial.user_attrs[st.SEED]} == point  # the seed: an attribute


def test_an_ask_whose_reply_was_lost_is_not_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = tiny_spec()
    driver = drv.Driver(spec, "", drv.RunOptions(run_dir=tmp_path), Reporter(enabled=False))
    store = open_store(tmp_path, spec)
    study = store.study
    for point in spec.grid_points()[:2]:
        study.enqueue_trial(point, user_attrs={st.KEY: spec.trial_spec(point).key(spec.claim)})
    real_ask, lost = study.ask, []

    def ask_then_drop(*args: object, **kwargs: object) -> optuna.trial.Trial:
        trial = real_ask(*args, **kwargs)  # type: ignore[arg-type]
        if not lost:
            lost.append(trial.number)
            raise _operational("database is locked")
        return trial

    monkeypatch.setattr(study, "ask", ask_then_drop)
    [pending] = driver._ask(store)
    assert lost == [pending.number]
    states = sorted(t.state.name for t in study.get_trials())
    assert states == ["RUNNING", "WAITING"]  # one asked, the other grid point still waits
