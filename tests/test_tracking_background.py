"""Background writes of pipeline.tracking (a tracking server's path): the writer pool's
order, bound and failures, and a Tracker writing on its threads against a real store.

The Tracker tests force writer threads on a SQLite store (``writers=4``), so they run
fast and need no server; tests/test_tracking.py runs the whole contract against a real
``mlflow server``, where a Tracker writes in the background by default.
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient

from models import TrialResult, TrialSpec, train_trial
from pipeline.tracking import Tracker, TrackingError, read_trials
from pipeline.tracking_retry import Skipped, Writers, writes_in_background

pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
)

SPEC_TEXT = "name: bg\n"
TINY = TrialSpec(seq_len=5, hidden=8, batch_size=8, batches_per_epoch=3, max_epochs=2, val_size=16)
TIMEOUT = 10.0


def fail(exc: BaseException) -> None:
    raise exc


# -- the writer pool --------------------------------------------------------------------


def test_a_chain_keeps_its_order_while_chains_overlap() -> None:
    writers = Writers(threads=4, backlog=64)
    done: list[str] = []
    gate = threading.Event()
    writers.submit("a", lambda: (gate.wait(TIMEOUT), done.append("a1")))
    writers.submit("a", lambda: done.append("a2"))
    writers.submit("b", lambda: done.append("b1")).result(timeout=TIMEOUT)
    assert done == ["b1"]  # b ran while a's first job waited; a's second waits behind it
    gate.set()
    writers.flush()
    assert done == ["b1", "a1", "a2"]
    writers.close()


def test_many_chains_on_few_threads_all_run_in_order() -> None:
    writers = Writers(threads=2, backlog=8)
    seen: dict[str, list[int]] = {}
    for i in range(40):
        chain = f"k{i % 5}"
        writers.submit(chain, lambda c=chain, i=i: seen.setdefault(c, []).append(i))
    writers.flush()
    assert {c: sorted(v) == v for c, v in seen.items()} == {f"k{j}": True for j in range(5)}
    assert sum(len(v) for v in seen.values()) == 40
    writers.close()


def test_submit_waits_for_room_in_the_backlog() -> None:
    writers = Writers(threads=1, backlog=2)
    gate = threading.Event()
    writers.submit("a", lambda: gate.wait(TIMEOUT))
    writers.submit("b", lambda: None)
    third = threading.Thread(target=lambda: writers.submit("c", lambda: None))
    third.start()
    third.join(timeout=0.3)
    assert third.is_alive()  # two jobs wait or run: the third is held back
    gate.set()
    third.join(timeout=TIMEOUT)
    assert not third.is_alive()
    writers.flush()
    writers.close()


def test_the_first_failure_skips_the_rest_and_is_raised_in_the_caller() -> None:
    writers = Writers(threads=2, backlog=64)
    error = TrackingError("MLflow at http://x failed to finish the trial run: boom")
    ran: list[str] = []
    gate = threading.Event()
    first = writers.submit("a", lambda: (gate.wait(TIMEOUT), fail(error)))
    after = writers.submit("a", lambda: ran.append("a2"))
    gate.set()
    with pytest.raises(TrackingError) as info:
        writers.result(first)
    assert info.value is error
    with pytest.raises(Skipped):
        after.result(timeout=TIMEOUT)
    with pytest.raises(TrackingError, match="boom"):
        writers.flush()
    with pytest.raises(TrackingError, match="boom"):
        writers.submit("b", lambda: ran.append("b"))
    assert ran == []
    writers.close()


def test_closing_with_cancel_skips_the_jobs_not_started_and_stops_the_threads() -> None:
    writers = Writers(threads=1, backlog=8)
    gate = threading.Event()
    done: list[str] = []
    writers.submit("a", lambda: (gate.wait(TIMEOUT), done.append("a1")))
    writers.submit("a", lambda: done.append("a2"))
    writers.submit("b", lambda: done.append("b1"))
    threading.Timer(0.2, gate.set).start()
    writers.close(cancel=True)  # waits for the running job only
    assert done == ["a1"]
    assert not [t for t in writers._pool._threads if t.is_alive()]


def test_only_a_tracking_server_writes_in_the_background(tmp_path: Path) -> None:
    assert writes_in_background("http://127.0.0.1:5000")
    assert writes_in_background("HTTPS://mlflow.example.org")
    assert not writes_in_background(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert Tracker("http://127.0.0.1:9").background
    assert not Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}").background
    assert not Tracker("http://127.0.0.1:9", writers=0).background


# -- a Tracker writing on its threads -----------------------------------------------------


@pytest.fixture(scope="module")
def result() -> TrialResult:
    trained = train_trial(TINY)
    return dataclasses.replace(trained, extra={**trained.extra, "started_at": time.time() - 9})


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"


def background(uri: str, study: str = "bg") -> Tracker:
    tracker = Tracker(uri, retry_delays=(), writers=4)
    tracker.open_study(study, SPEC_TEXT, {"n_trials": "8"}, {})
    assert tracker.logged_trials() == {}
    return tracker


@pytest.mark.slow  # writer threads and MLflow SQLite: about 2 s
def test_background_writes_log_every_trial_once(uri: str, result: TrialResult) -> None:
    tracker = background(uri)
    assert tracker.background
    items = [(f"k{i}", i, dataclasses.replace(TINY, seed=i)) for i in range(8)]
    assert tracker.start_trials(items, {"initstudy.claim": "C"}, start_time=time.time()) == {}
    for key, _, _ in items[:4]:
        tracker.log_epochs(key, result.history[:1])  # streamed: not sent again below
    ids = {key: tracker.log_trial(key, n, result, {}) for key, n, _ in items}
    ids["late"] = tracker.log_trial("late", 8, result, {})  # no live run: created here
    assert all(ids.values()) and len(set(ids.values())) == 9
    assert tracker.log_trial("k0", 0, result, {}) == ids["k0"]  # once per key
    tracker.close_study()  # waits for every write

    runs = {r["key"]: r for r in read_trials(uri, "bg")}
    assert {k: r["run_id"] for k, r in runs.items()} == ids
    assert {r["status"] for r in runs.values()} == {"FINISHED"}
    assert runs["k0"]["tags"]["initstudy.claim"] == "C"
    assert runs["late"]["params"]["hidden"] == "8"
    client = MlflowClient(uri)
    for key in ("k0", "k7", "late"):
        history = client.get_metric_history(ids[key], "val_loss")
        assert [m.step for m in history] == [1, 2]
        assert {a.path for a in client.list_artifacts(ids[key])} == {
            "diagnostics.json",
            "result.json",
        }
    parent = client.get_run(tracker.parent_run_id).info
    assert parent.status == "FINISHED"
    assert parent.end_time == max(client.get_run(i).info.end_time for i in ids.values())
    assert Tracker(uri).open_study("bg", SPEC_TEXT, {}, {}) == tracker.parent_run_id


def test_a_failed_background_write_surfaces_and_is_replaced_next_time(
    uri: str, result: TrialResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = background(uri)
    real = MlflowClient.set_terminated

    def down(self: MlflowClient, run_id: str, status: str = "FINISHED", *a: object) -> None:
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(MlflowClient, "set_terminated", down)
    first = tracker.log_trial("k0", 0, result, {})  # queued: returns once the run exists
    assert first
    message = f"MLflow at {uri} failed to finish the trial run: ConnectionError: connection"
    with pytest.raises(TrackingError, match=re.escape(message)):
        tracker.flush()
    with pytest.raises(TrackingError, match=re.escape(message)):  # and every later call
        tracker.log_trial("k1", 1, result, {})
    with pytest.raises(TrackingError, match=re.escape(message)):
        tracker.close_study()
    monkeypatch.setattr(MlflowClient, "set_terminated", real)

    later = Tracker(uri)  # the next run, or `initstudy sync`
    later.open_study("bg", SPEC_TEXT, {}, {})
    assert later.logged_trials() == {}  # the unfinished run is deleted
    again = later.log_trial("k0", 0, result, {})
    assert again != first
    runs = read_trials(uri, "bg")
    assert [(r["key"], r["run_id"], r["status"]) for r in runs] == [("k0", again, "FINISHED")]


@pytest.mark.slow  # writer threads and MLflow SQLite: about 2 s
def test_a_failed_write_stops_the_others_before_its_clean_up(
    uri: str, result: TrialResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure is kept before the failed run's best-effort clean-up (marking it
    FAILED), so against a server that hangs the driver's next call raises at once
    instead of queuing more requests behind it."""
    tracker = background(uri)
    cleaning, release, cleaned = threading.Event(), threading.Event(), threading.Event()

    def down(self: MlflowClient, run_id: str, status: str = "FINISHED", *a: object) -> None:
        if status == "FAILED":  # the clean-up, against a server that does not answer
            cleaning.set()
            release.wait(TIMEOUT)
            cleaned.set()
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(MlflowClient, "set_terminated", down)
    tracker.log_trial("k0", 0, result, {})
    assert cleaning.wait(TIMEOUT)
    try:
        with pytest.raises(TrackingError, match="failed to finish the trial run"):
            tracker.log_trial("k1", 1, result, {})
        assert not cleaned.is_set()  # raised while the clean-up still hung
        assert [r["key"] for r in read_trials(uri, "bg")] == ["k0"]  # k1 never created
    finally:
        release.set()


def test_a_killed_study_marks_its_queued_live_runs_killed(uri: str, result: TrialResult) -> None:
    tracker = background(uri)
    items = [(f"k{i}", i, dataclasses.replace(TINY, seed=i)) for i in range(3)]
    tracker.start_trials(items, {}, start_time=time.time())
    done = tracker.log_trial("k0", 0, result, {})
    tracker.close_study("KILLED")
    statuses = {r["key"]: r["status"] for r in read_trials(uri, "bg")}
    assert statuses == {"k0": "FINISHED", "k1": "KILLED", "k2": "KILLED"}
    assert Tracker(uri, writers=2).open_study("bg", SPEC_TEXT, {}, {}) == tracker.parent_run_id
    resumed = Tracker(uri, writers=2)
    resumed.open_study("bg", SPEC_TEXT, {}, {})
    assert resumed.logged_trials() == {"k0": done}
    assert {r["key"] for r in read_trials(uri, "bg")} == {"k0"}


def test_the_driver_counts_only_the_runs_that_finished(
    uri: str, result: TrialResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial whose run is queued counts as logged only once its run is FINISHED: after
    a background write fails, "N logged" is the number of FINISHED runs in MLflow."""
    from types import SimpleNamespace

    from pipeline.execution import Trained
    from pipeline.studylog import StudyLog

    notes: list[str] = []
    log = StudyLog("bg", uri, None, {}, notes.append)
    log.tracker = background(uri)
    done = Trained(result, result.to_json())
    for i in range(2):
        log.trial(f"k{i}", i, done)
    log.tracker.flush()

    def down(self: MlflowClient, run_id: str, status: str = "FINISHED", *a: object) -> None:
        raise requests.ConnectionError("connection refused")

    monkeypatch.setattr(MlflowClient, "set_terminated", down)
    for i in range(2, 5):  # queued; their runs never finish
        log.trial(f"k{i}", i, done)
    if log.tracker is not None:  # no log call met the failure yet: the study's end would
        with pytest.raises(TrackingError):
            log.tracker.flush()
    outcome = SimpleNamespace()
    log.report_to(outcome)
    finished = [r for r in read_trials(uri, "bg") if r["status"] == "FINISHED"]
    assert outcome.logged == len(finished) == 2


def _slow(monkeypatch: pytest.MonkeyPatch, method: str, seconds: float) -> None:
    """MlflowClient.<method> takes ``seconds`` longer (a busy server)."""
    real = getattr(MlflowClient, method)

    def slow(self: MlflowClient, *args: object, **kwargs: object) -> object:
        time.sleep(seconds)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, method, slow)


@pytest.mark.slow  # MLflow writes on threads, about 2 s
def test_a_study_closed_with_trials_left_waits_for_its_queued_writes(
    uri: str, result: TrialResult, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that ends with trials still to do (some failed; a sync of an unfinished
    study) leaves the parent run open, and yet every queued write has landed when
    ``close`` returns: "N logged" counts them, and none lands after the lock is gone."""
    from types import SimpleNamespace

    from pipeline.execution import Trained
    from pipeline.storage import StudyCounts
    from pipeline.studylog import StudyLog

    _slow(monkeypatch, "set_terminated", 0.2)
    log = StudyLog("bg", uri, None, {}, [].append)
    log.tracker = background(uri)
    done = Trained(result, result.to_json())
    for i in range(6):
        log.trial(f"k{i}", i, done)
    counts = StudyCounts(9, 6, 6, 0, 0, 0, 0, 0, 0, 3)
    assert counts.remaining == 3
    log.close(counts, interrupted=False)
    outcome = SimpleNamespace()
    log.report_to(outcome)
    runs = read_trials(uri, "bg")
    assert outcome.logged == 6 and outcome.tracking_error is None
    finished = sorted(r["key"] for r in runs if r["status"] == "FINISHED")
    assert finished == [f"k{i}" for i in range(6)]
    parent = MlflowClient(uri).get_run(log.tracker.parent_run_id).info
    assert parent.status == "RUNNING"  # reopened by the next run


@pytest.mark.slow  # writer threads and MLflow SQLite: seconds
def test_a_failed_run_stops_its_writers_before_the_lock_is_released(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error (a third Ctrl-C) inside the driver's ``log.writing()``: the writes not
    started are dropped, the running ones waited for, the writer threads stopped (nothing
    holds the process at exit), and nothing lands afterwards; the next run replaces the
    runs left unfinished."""
    from pipeline.studylog import StudyLog

    log = StudyLog("bg", uri, None, {}, [].append)
    log.tracker = tracker = background(uri)  # 4 writer threads
    _slow(monkeypatch, "create_run", 0.3)
    items = [(f"k{i}", i, dataclasses.replace(TINY, seed=i)) for i in range(12)]
    with pytest.raises(KeyboardInterrupt), log.writing():
        assert tracker.start_trials(items, {}, start_time=time.time()) == {}  # all queued
        raise KeyboardInterrupt
    assert tracker._writers is not None
    assert not [t for t in tracker._writers._pool._threads if t.is_alive()]
    seen = {r["key"]: r["status"] for r in read_trials(uri, "bg")}
    assert len(seen) <= 4 and set(seen.values()) <= {"RUNNING"}  # only the running creates
    time.sleep(1.0)
    assert {r["key"]: r["status"] for r in read_trials(uri, "bg")} == seen  # none lands later
    later = Tracker(uri)
    later.open_study("bg", SPEC_TEXT, {}, {})
    assert later.logged_trials() == {}
    assert read_trials(uri, "bg") == []  # the unfinished runs were deleted
