"""The study stores at the edges: two drivers creating the same storage, study and lock at
once (exactly one wins, the other is told who), empty or corrupt store files (refused,
untouched), and FAIL trials a rerun retries. Real SQLite Optuna storages throughout."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from pipeline import storage as st
from pipeline.studystore import DriverLock, StudyStore

ROOT = Path(__file__).resolve().parents[1]
SMOKE_SPEC = ROOT / "tests" / "data" / "smoke_tiny.yaml"
DISTRIBUTIONS = {"init": CategoricalDistribution(["xavier", "uniform01", "orthogonal"])}


def url_of(path: Path) -> str:
    return f"sqlite:///{path}"


def open_store(url: str, name: str = "s", sampler: Any = None) -> StudyStore:
    return StudyStore.open(
        url, name, spec_hash="h1", spec_text="text", planned=3, claim=None, sampler=sampler
    )


def at_once(n: int, fn: Callable[[int], object]) -> list[object]:
    """Run ``fn(i)`` on ``n`` threads released together; each one's value or exception."""
    barrier = threading.Barrier(n)
    out: list[object] = [None] * n

    def body(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except BaseException as exc:
            out[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out


# -- two drivers at once -------------------------------------------------------------------


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_open_of_a_new_storage_and_study_then_one_lock(
    tmp_path: Path, round_: int
) -> None:
    url = url_of(tmp_path / f"r{round_}" / "optuna.db")
    stores = at_once(4, lambda _: open_store(url))
    assert all(isinstance(s, StudyStore) for s in stores), stores
    opened: list[StudyStore] = stores  # type: ignore[assignment]
    assert len({s.study._study_id for s in opened}) == 1  # one study, created once
    assert opened[0].study.user_attrs[st.SPEC_HASH] == "h1"

    locks = [DriverLock(s.study, s.storage) for s in opened]
    results = at_once(4, lambda i: locks[i].acquire())
    winners = [i for i, r in enumerate(results) if r is None]
    assert len(winners) == 1, results
    for i, r in enumerate(results):
        if i != winners[0]:
            assert isinstance(r, st.StudyBusy), r
            assert f"pid {os.getpid()}" in str(r) and "another driver" in str(r)
    holder = DriverLock.live_holder(opened[0].study)
    assert holder is not None and holder["token"] == locks[winners[0]].token
    for s in opened:
        s.close()


def test_concurrent_table_creation_without_the_file_lock_is_retried(tmp_path: Path) -> None:
    """What a server (PostgreSQL) gets: no creation lock, Optuna's CREATE TABLEs racing."""
    url = url_of(tmp_path / "optuna.db")
    made = at_once(4, lambda _: st.storage_unlocked(url))
    assert all(isinstance(m, optuna.storages.RDBStorage) for m in made), made
    assert st.study_names(made[0]) == []  # type: ignore[arg-type]


def test_concurrent_study_creation_without_the_file_lock_loads_the_winner(tmp_path: Path) -> None:
    url = url_of(tmp_path / "optuna.db")
    storage = st.make_storage(url)
    sampler = optuna.samplers.RandomSampler(seed=0)
    kwargs: dict[str, Any] = dict(spec_hash="h1", spec_text="t", planned=2, claim=None)
    made = at_once(4, lambda _: st.open_study(storage, "s", sampler=sampler, **kwargs))
    assert all(isinstance(m, optuna.Study) for m in made), made
    assert st.study_names(storage) == ["s"]
    assert {m._study_id for m in made} == {made[0]._study_id}  # type: ignore[union-attr]
    with pytest.raises(st.StudyError, match="different spec"):
        st.open_study(storage, "s", sampler=sampler, **{**kwargs, "spec_hash": "h2"})


def test_a_study_left_without_its_spec_is_finished_by_the_next_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(st, "CREATION_WAIT_SECONDS", 0.2)
    url = url_of(tmp_path / "optuna.db")
    optuna.create_study(study_name="s", storage=url)  # a creator died before the spec
    store = open_store(url)
    assert store.study.user_attrs[st.SPEC_HASH] == "h1"
    assert store.study.user_attrs[st.PLANNED] == 3


def test_a_released_or_stale_lock_is_taken_and_a_live_one_refused(tmp_path: Path) -> None:
    store = open_store(url_of(tmp_path / "optuna.db"))
    first = DriverLock(store.study, store.storage)
    first.acquire()
    with pytest.raises(st.StudyBusy, match=f"pid {os.getpid()}"):
        DriverLock(store.study, store.storage).acquire()
    first.release()
    second = DriverLock(store.study, store.storage)
    second.acquire()  # released: free
    store.study.set_user_attr(st.DRIVER, {**second.holder, "heartbeat": 0.0})  # stale
    third = DriverLock(store.study, store.storage)
    third.acquire()
    assert DriverLock.live_holder(store.study)["token"] == third.token  # type: ignore[index]


# -- empty or corrupt stores ---------------------------------------------------------------


def corrupt(kind: str, path: Path) -> bytes:
    """Make ``path`` an empty file, random bytes, or a SQLite header over garbage (one
    whose format bytes say WAL: SQLite then opens -wal and -shm files beside it)."""
    data = {
        "empty": b"",
        "random": os.urandom(8192),
        "garbage": st.SQLITE_HEADER + b"\x10\x00\x01\x01" + os.urandom(8188),
        "wal-garbage": st.SQLITE_HEADER + b"\x10\x00\x02\x02" + os.urandom(8188),
    }[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("kind", ["empty", "random", "garbage", "wal-garbage"])
def test_a_corrupt_optuna_db_is_refused_and_left_as_it_is(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "optuna.db"
    data = corrupt(kind, db)
    for attempt in (lambda: open_store(url_of(db)), lambda: st.make_storage(url_of(db))):
        with pytest.raises(st.StoreCorrupt) as refused:
            attempt()
        message = str(refused.value)
        assert str(db) in message and "\n" not in message
        assert "restore it" in message and "remove it" in message
    assert db.read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["optuna.db"]  # no -wal, no -shm
    assert isinstance(refused.value, st.StudyError)
    assert refused.value.exit_code == st.EXIT_STORE_CORRUPT == 4


def test_only_a_damaged_file_is_called_corrupt() -> None:
    """A sound store read while another process checkpoints it can fail with "disk I/O
    error" (its -wal file removed under the reader); that is not corruption, and calling
    it so would tell the user to delete a good store (the reproduction suite met it)."""
    import sqlite3

    assert st.is_corruption(sqlite3.DatabaseError("database disk image is malformed"))
    assert st.is_corruption(sqlite3.DatabaseError("file is not a database"))
    for passing in ("disk I/O error", "database is locked", "unable to open database file"):
        assert not st.is_corruption(sqlite3.OperationalError(passing))


@pytest.mark.parametrize("kind", ["empty", "random", "garbage", "wal-garbage"])
def test_a_corrupt_mlflow_db_is_refused(tmp_path: Path, kind: str) -> None:
    db = tmp_path / "mlflow.db"
    data = corrupt(kind, db)
    with pytest.raises(st.StoreCorrupt, match=r"MLflow store .*mlflow\.db"):
        st.check_store_file(db, "MLflow store")
    assert db.read_bytes() == data


def test_a_sound_or_missing_store_file_passes_the_check(tmp_path: Path) -> None:
    st.check_store_file(tmp_path / "missing.db", "Optuna storage")
    assert not (tmp_path / "missing.db").exists()
    store = open_store(url_of(tmp_path / "optuna.db"))
    store.close()
    st.check_store_file(tmp_path / "optuna.db", "Optuna storage")


def test_the_cli_refuses_an_empty_optuna_db_in_one_line(tmp_path: Path, cli_here: Any) -> None:
    db = corrupt("empty", tmp_path / "optuna.db")
    done = cli_here("run", str(SMOKE_SPEC), "--run-dir", str(tmp_path))
    assert done.returncode != 0
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "optuna.db" in done.stderr and "remove it" in done.stderr
    assert (tmp_path / "optuna.db").read_bytes() == db
    status = cli_here("status", "smoke", "--run-dir", str(tmp_path))
    assert status.returncode != 0 and "is empty" in status.stderr


def test_the_cli_exit_code_of_a_corrupt_store_is_its_own(tmp_path: Path, cli_here: Any) -> None:
    corrupt("random", tmp_path / "optuna.db")
    done = cli_here("run", str(SMOKE_SPEC), "--run-dir", str(tmp_path))
    assert done.returncode == st.EXIT_STORE_CORRUPT, done.stderr


# -- FAIL trials on a rerun ----------------------------------------------------------------


def test_a_grid_point_whose_only_trials_failed_is_missing_until_recreated(
    tmp_path: Path,
) -> None:
    store = open_store(url_of(tmp_path / "optuna.db"))
    for init in ("xavier", "uniform01"):
        store.create_running({"init": init}, DISTRIBUTIONS, f"k-{init}")
    bad, good = store.running()
    store.fail(bad.number, bad.trial_id)
    store.tell(good.number, good.trial_id, 1.0, direct=True)

    assert store.live_keys() == {"k-uniform01"}  # the failed point is missing
    assert [t.key for t in store.failed()] == ["k-xavier"]
    assert store.counts().failed == 1

    store.create_running({"init": "xavier"}, DISTRIBUTIONS, "k-xavier")  # the rerun
    assert store.failed() == [] and store.counts().failed == 0
    assert "k-xavier" in store.live_keys()
    again = store.running()
    assert [t.params for t in again] == [{"init": "xavier"}]
    store.fail(again[0].number, again[0].trial_id)  # failed again: retried again
    assert [t.number for t in store.failed()] == [again[0].number]
    assert store.counts().failed == 1


def test_a_sampled_studys_failed_trial_is_enqueued_once_with_its_params(
    tmp_path: Path,
) -> None:
    store = open_store(url_of(tmp_path / "optuna.db"), sampler=optuna.samplers.RandomSampler(0))
    asked = store.ask(DISTRIBUTIONS, claimed=())
    assert asked is not None
    store.fail(asked.number, asked.trial_id)
    (failed,) = store.failed()
    assert failed.number == asked.number

    store.retry(failed)
    assert store.failed() == [] and store.counts().failed == 0
    assert store.n_waiting() == 1
    again = store.ask(DISTRIBUTIONS, claimed={asked.number})
    assert again is not None and again.params == asked.params
    trial = store.study._storage.get_trial(again.trial_id)
    assert trial.user_attrs[st.RETRY_OF] == asked.number
    assert trial.state == TrialState.RUNNING


# -- the spec hash -----------------------------------------------------------------------


def test_a_study_stored_under_another_spec_hash_is_refused(tmp_path: Path) -> None:
    url = url_of(tmp_path / "optuna.db")
    open_store(url).close()  # stored under "h1"
    kwargs: dict[str, Any] = {"spec_text": "text", "planned": 3, "claim": None}
    with pytest.raises(st.StudyError, match="different spec"):
        StudyStore.open(url, "s", spec_hash="h2", **kwargs)
    StudyStore.open(url, "s", spec_hash="h1", **kwargs).close()


def test_the_ui_refuses_a_corrupt_mlflow_db_with_the_corrupt_store_code(
    tmp_path: Path, cli_here: Any
) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"\x00" * 4096)
    done = cli_here("ui", "smoke", "--run-dir", str(tmp_path))
    assert done.returncode == st.EXIT_STORE_CORRUPT, done.stderr
    assert done.stderr.count("\n") == 1 and "is not a SQLite database" in done.stderr
    assert db.read_bytes() == b"\x00" * 4096
