"""pipeline.tracking's contract, against a real MLflow store (no mocks) of both kinds.

The tests taking ``store`` run twice: on a SQLite store in the test's own folder (the
embedded default; fast) and on a real ``mlflow server`` over HTTP (the cluster's path;
marked slow), started once for this module on 127.0.0.1 with its own SQLite backend and
artifact folder. On the shared server every test works on a study of its own. The other
tests need no store: run names, batching, the retry policy and errors.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
import sqlalchemy.exc
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, TEMPORARILY_UNAVAILABLE
from mlflow.tracking import MlflowClient
from ports import free_port

from models import EpochRecord, TrialResult, TrialSpec, train_trial
from pipeline import mlflowio, tracking_base
from pipeline.tracking import (
    KEY_TAG,
    KIND_TAG,
    RETRY_DELAYS,
    Tracker,
    TrackingError,
    read_trials,
    run_name,
)
from pipeline.ui import start_ui

# SQLAlchemy 2.1 warns about MLflow's own ORM models when MLflow's SQL store is first imported;
# pipeline.tracking silences it, and so must the tests that build an MlflowClient themselves.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
)

SPEC_TEXT = "# initstudy run studies/tiny.yaml\nname: tiny-study\n"
TINY = TrialSpec(seq_len=5, hidden=8, batch_size=8, batches_per_epoch=3, max_epochs=2, val_size=16)
DEADLINE_SERVER = 120.0
"""Seconds the MLflow server may take to start (it migrates a fresh store first)."""


@dataclasses.dataclass(frozen=True)
class Store:
    """A tracking store under test: its URI and the local folder its artifacts land in."""

    kind: str
    """``sqlite`` (the embedded store) or ``server`` (an MLflow tracking server)."""
    uri: str
    artifacts: Path

    def artifact_file(self, experiment_id: str, run_id: str, path: str) -> Path:
        """Where a run's artifact is stored on disk."""
        if self.kind == "sqlite":  # the Tracker's artifact location: mlartifacts/<run>
            return self.artifacts / run_id / "artifacts" / path
        return self.artifacts / experiment_id / run_id / "artifacts" / path


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store opened without an artifact location puts its artifacts under ./mlruns: keep
    that in the test's folder, not the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def results() -> list[TrialResult]:
    """Two ordinary trials and one that diverges (a huge SGD step on a ReLU cell)."""
    diverges = dataclasses.replace(TINY, optimizer="sgd", lr=1e9, scale=3.0, cell="rnn_relu")
    specs = [TINY, dataclasses.replace(TINY, seed=1), diverges]
    return [train_trial(s) for s in specs]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    """An ``mlflow server`` on 127.0.0.1 (one worker), its SQLite store and artifacts in a
    fresh folder; started once for the module's server tests."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    database = folder / "mlflow.db"
    database.touch()  # an empty SQLite file: the server creates its tables
    artifacts = folder / "mlartifacts"
    backend = f"sqlite:///{database}"
    with start_ui(
        backend, port=free_port(), artifacts_dir=artifacts, timeout=DEADLINE_SERVER
    ) as server:
        yield Store("server", server.url, artifacts)


@pytest.fixture(params=["sqlite", pytest.param("server", marks=pytest.mark.slow)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "server":
        server: Store = request.getfixturevalue("mlflow_server")
        return server
    runs = tmp_path / "runs"
    return Store("sqlite", f"sqlite:///{runs / 'mlflow.db'}", runs / "mlartifacts")


@pytest.fixture
def uri(store: Store) -> str:
    return store.uri


@pytest.fixture
def study() -> str:
    """A study name of this test's own (the server's store is shared by the module)."""
    return f"tiny-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def tracker(uri: str, study: str) -> Tracker:
    t = Tracker(uri)
    t.open_study(study, SPEC_TEXT, {"n_trials": "3"}, {"initstudy.spec_hash": "abc"})
    return t


def trial_runs(client: MlflowClient, experiment_id: str, key: str) -> list[str]:
    runs = client.search_runs(
        [experiment_id], f"tags.`{KEY_TAG}` = '{key}'", run_view_type=ViewType.ACTIVE_ONLY
    )
    return [r.info.run_id for r in runs]


def artifact_text(client: MlflowClient, run_id: str, path: str, folder: Path) -> str:
    """An artifact's text as a client reads it back (through the server, if any)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(client.download_artifacts(run_id, path, str(folder))).read_text()


# -- the contract, on both stores -----------------------------------------------------------


@pytest.mark.slow  # it opens MLflow stores again and again: about 2 s
def test_open_study_is_idempotent(store: Store, study: str, tmp_path: Path) -> None:
    first = Tracker(store.uri)
    parent = first.open_study(study, SPEC_TEXT, {"n_trials": "3"}, {"initstudy.code": "v1"})
    again = Tracker(store.uri)  # as after a driver restart
    assert (
        again.open_study(study, SPEC_TEXT, {"n_trials": "3"}, {"initstudy.code": "v1"}) == parent
    )
    assert again.experiment_id == first.experiment_id
    assert again.experiment_id_of(study) == first.experiment_id
    assert first.open_study(study, SPEC_TEXT, {}, {}) == parent

    client = MlflowClient(store.uri)
    parents = client.search_runs([first.experiment_id], f"tags.`{KIND_TAG}` = 'study'")
    assert [r.info.run_id for r in parents] == [parent]
    run = client.get_run(parent)
    assert run.data.params == {"n_trials": "3"}
    assert run.data.tags["initstudy.code"] == "v1"
    assert [a.path for a in client.list_artifacts(parent)] == ["spec.yaml"]
    assert artifact_text(client, parent, "spec.yaml", tmp_path / "download") == SPEC_TEXT
    spec_file = store.artifact_file(first.experiment_id, parent, "spec.yaml")
    assert spec_file.read_text() == SPEC_TEXT


@pytest.mark.slow  # it opens MLflow stores again and again: seconds
def test_open_study_completes_a_half_logged_parent_and_reopens_a_closed_one(
    uri: str, study: str
) -> None:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(study)
    # A driver died right after creating the parent run.
    parent = client.create_run(experiment_id, tags={KIND_TAG: "study"}).info.run_id
    tracker = Tracker(uri)
    assert tracker.open_study(study, SPEC_TEXT, {"n_trials": "3"}, {"a": "b"}) == parent
    assert client.get_run(parent).data.params == {"n_trials": "3"}
    assert [a.path for a in client.list_artifacts(parent)] == ["spec.yaml"]

    tracker.close_study()
    assert client.get_run(parent).info.status == "FINISHED"
    assert Tracker(uri).open_study(study, SPEC_TEXT, {"n_trials": "3"}, {}) == parent
    assert client.get_run(parent).info.status == "RUNNING"
    tracker.close_study("FAILED")
    assert client.get_run(parent).info.status == "FAILED"


def test_a_deleted_experiment_is_refused(uri: str, study: str) -> None:
    tracker = Tracker(uri)
    tracker.open_study(study, SPEC_TEXT, {}, {})
    MlflowClient(uri).delete_experiment(tracker.experiment_id)

    assert Tracker(uri).experiment_id_of(study) is None
    assert read_trials(uri, study) == []
    message = f"MLflow at {uri}: experiment '{study}' is deleted"
    with pytest.raises(TrackingError, match=re.escape(message)):
        Tracker(uri).open_study(study, SPEC_TEXT, {}, {})


def test_log_trial_records_params_metrics_tags_artifacts(
    tracker: Tracker, store: Store, results: list[TrialResult], tmp_path: Path
) -> None:
    result = results[0]
    key = result.spec.key("C4")
    run_id = tracker.log_trial(key, 7, result, {"initstudy.claim": "C4"})
    tracker.flush()  # a tracking server's writes land on the tracker's threads
    client = MlflowClient(store.uri)
    run = client.get_run(run_id)

    assert run.info.status == "FINISHED"
    assert (
        run.info.run_name == run_name(result.spec, 7) == f"7-xavier-T5-H8-lr{result.spec.lr:g}-s0"
    )
    assert run.data.params == {k: str(v) for k, v in result.spec.to_dict().items()}
    assert run.data.params["init_recurrent"] == "None"
    tags = run.data.tags
    assert tags[KEY_TAG] == key
    assert tags[KIND_TAG] == "trial"
    assert tags["initstudy.trial_number"] == "7"
    assert tags["mlflow.parentRunId"] == tracker.parent_run_id
    assert tags["initstudy.claim"] == "C4"
    assert tags["initstudy.device"] == result.device
    assert tags["initstudy.outcome"] == result.outcome == "stalled"  # 2 epochs: no progress

    metrics = run.data.metrics
    assert metrics["epochs_run"] == 2
    assert metrics["converged"] == 0 and "converged_epoch" not in metrics
    assert metrics["diverged"] == 0 and "diverged_epoch" not in metrics
    assert metrics["best_val_loss"] == pytest.approx(result.best_val_loss)
    assert metrics["final_val_loss"] == pytest.approx(result.history[-1].val_loss)
    assert metrics["grad_norm_last"] == pytest.approx(result.diagnostics.grad_norm[-1])
    for name in ("train_loss", "val_loss", "grad_norm", "hidden_var", "hidden_sat"):
        history = client.get_metric_history(run_id, name)
        assert [m.step for m in history] == [1, 2]
        assert [m.value for m in history] == pytest.approx(
            [getattr(r, name) for r in result.history]
        )

    assert sorted(a.path for a in client.list_artifacts(run_id)) == [
        "diagnostics.json",
        "result.json",
    ]
    text = artifact_text(client, run_id, "result.json", tmp_path / "download")
    assert text == result.to_json()
    assert TrialResult.from_json(text).numbers() == result.numbers()
    diagnostics = json.loads(artifact_text(client, run_id, "diagnostics.json", tmp_path / "d"))
    assert diagnostics["grad_norm"] == pytest.approx(result.diagnostics.grad_norm)
    on_disk = store.artifact_file(tracker.experiment_id, run_id, "result.json")
    assert on_disk.read_text() == text

    # Exactly once per key: a second call logs nothing and returns the same run.
    assert tracker.log_trial(key, 7, result, {}) == run_id
    assert trial_runs(client, tracker.experiment_id, key) == [run_id]
    assert len(client.get_metric_history(run_id, "val_loss")) == 2
    assert tracker.logged_trials() == {key: run_id}


def test_log_trial_writes_the_given_json_as_is(
    tracker: Tracker,
    uri: str,
    results: list[TrialResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``result_json`` (the worker's text) the result is not serialised again."""
    result = results[1]
    plain = tracker.log_trial("plain", 0, result, {})
    text = result.to_json()

    def no_second_serialisation(self: object) -> None:
        raise AssertionError("the result was serialised again")

    monkeypatch.setattr(TrialResult, "to_json", no_second_serialisation)
    monkeypatch.setattr(TrialResult, "to_dict", no_second_serialisation)
    monkeypatch.setattr(TrialSpec, "to_dict", no_second_serialisation)
    given = tracker.log_trial("given", 1, result, {}, result_json=text)
    tracker.flush()
    monkeypatch.undo()

    client = MlflowClient(uri)
    a, b = client.get_run(plain), client.get_run(given)
    assert a.data.params == b.data.params
    assert a.data.metrics == b.data.metrics
    assert a.data.tags[KIND_TAG] == b.data.tags[KIND_TAG] == "trial"
    for path in ("result.json", "diagnostics.json"):
        assert artifact_text(client, given, path, tmp_path / "given") == artifact_text(
            client, plain, path, tmp_path / "plain"
        )
    assert artifact_text(client, given, "result.json", tmp_path / "again") == text
    assert tracker.log_trial("given", 1, result, {}, result_json=text) == given


def test_diverged_and_non_finite_values(
    tracker: Tracker, uri: str, results: list[TrialResult]
) -> None:
    diverged = results[2]
    assert diverged.diverged
    run_id = tracker.log_trial("div", 0, diverged, {})
    tracker.flush()
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["initstudy.outcome"] == "diverged"
    assert run.data.metrics["diverged"] == 1
    assert run.data.metrics["diverged_epoch"] == diverged.diverged_epoch

    # 250 epochs x 5 metrics: more than one log_batch call; NaN and inf along the way.
    history = [EpochRecord(e, 1.0 / e, 1.0 / e, 1.0, 0.5, 0.0) for e in range(1, 251)]
    history[-1] = EpochRecord(250, math.nan, math.nan, math.inf, 0.5, 1.0)
    long = dataclasses.replace(results[1], history=history, diverged_epoch=250)
    run_id = tracker.log_trial("long", 1, long, {})
    tracker.flush()
    client = MlflowClient(uri)
    val = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in val] == list(range(1, 251))
    assert math.isnan(val[-1].value)
    assert math.isnan(client.get_run(run_id).data.metrics["final_val_loss"])
    # SQL stores keep NaN but clip infinity to the largest double.
    assert client.get_metric_history(run_id, "grad_norm")[-1].value > 1e300
    assert client.get_run(run_id).data.metrics["best_val_loss"] == pytest.approx(1 / 249)


def test_unfinished_run_is_deleted_and_logged_again(
    tracker: Tracker, uri: str, results: list[TrialResult]
) -> None:
    client = MlflowClient(uri)
    done = tracker.log_trial("done", 0, results[0], {})
    dead = client.create_run(
        tracker.experiment_id,
        tags={KIND_TAG: "trial", KEY_TAG: "dead", "mlflow.parentRunId": tracker.parent_run_id},
    ).info.run_id  # a driver died here, before set_terminated

    assert tracker.logged_trials() == {"done": done}
    assert client.get_run(dead).info.lifecycle_stage == "deleted"

    again = tracker.log_trial("dead", 1, results[1], {})
    tracker.flush()
    assert again != dead
    assert trial_runs(client, tracker.experiment_id, "dead") == [again]
    assert tracker.logged_trials() == {"done": done, "dead": again}


def test_a_new_tracker_backfills_only_what_is_missing(
    tracker: Tracker, uri: str, study: str, results: list[TrialResult]
) -> None:
    """As ``initstudy sync`` does after an outage: a later process finds what is logged."""
    first = tracker.log_trial("k0", 0, results[0], {})
    tracker.flush()
    later = Tracker(uri)
    later.open_study(study, SPEC_TEXT, {}, {})
    assert later.logged_trials() == {"k0": first}
    assert later.log_trial("k0", 0, results[0], {}) == first
    second = later.log_trial("k1", 1, results[1], {})
    later.flush()
    assert Tracker(uri).open_study(study, SPEC_TEXT, {}, {}) == tracker.parent_run_id
    assert {t["key"]: t["run_id"] for t in read_trials(uri, study)} == {"k0": first, "k1": second}


def test_logged_trials_follows_page_tokens(
    tracker: Tracker, results: list[TrialResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = {f"k{i}": tracker.log_trial(f"k{i}", i, results[i % 2], {}) for i in range(5)}
    monkeypatch.setattr(tracking_base, "_PAGE_SIZE", 2)
    assert tracker.logged_trials() == logged


@pytest.mark.slow  # a second interpreter imports MLflow
def test_fluent_search_runs_in_another_process(
    tracker: Tracker, uri: str, study: str, results: list[TrialResult]
) -> None:
    ids = {tracker.log_trial(f"k{i}", i, r, {}) for i, r in enumerate(results)}
    tracker.flush()
    script = f"""
import json, mlflow
mlflow.set_tracking_uri({uri!r})
df = mlflow.search_runs(experiment_names=[{study!r}],
                        filter_string="tags.`initstudy.kind` = 'trial'")
print(json.dumps(df[["run_id", "params.hidden", "metrics.epochs_run"]].to_dict("records")))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {r["run_id"] for r in rows} == ids
    assert all(r["params.hidden"] == "8" and r["metrics.epochs_run"] >= 1 for r in rows)

    listed = read_trials(uri, study)
    assert {t["run_id"] for t in listed} == ids
    assert all(t["status"] == "FINISHED" and t["params"]["hidden"] == "8" for t in listed)
    assert read_trials(uri, "no-such-study") == []


def test_parent_tags_and_artifacts(tracker: Tracker, uri: str, tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text("# verdicts\n")
    tracker.set_parent_tags({"initstudy.status": "done"})
    tracker.log_parent_artifact(str(report), "report")
    folder = tmp_path / "figures"
    folder.mkdir()
    (folder / "curve.svg").write_text("<svg/>")
    tracker.log_parent_artifact(str(folder), "figures")
    client = MlflowClient(uri)
    assert client.get_run(tracker.parent_run_id).data.tags["initstudy.status"] == "done"
    assert [a.path for a in client.list_artifacts(tracker.parent_run_id, "report")] == [
        "report/report.md"
    ]
    assert [a.path for a in client.list_artifacts(tracker.parent_run_id, "figures")] == [
        "figures/curve.svg"
    ]
    with pytest.raises(FileNotFoundError):
        tracker.log_parent_artifact(str(tmp_path / "missing.md"))


def test_open_study_must_come_first(uri: str) -> None:
    with pytest.raises(RuntimeError, match="open_study"):
        Tracker(uri).logged_trials()


# -- without a store ------------------------------------------------------------------------


def test_construction_creates_only_the_database_folder(tmp_path: Path) -> None:
    Tracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert (tmp_path / "runs").is_dir()
    assert list((tmp_path / "runs").iterdir()) == []


def test_an_unusable_database_folder_raises_tracking_error(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file, not a folder")
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    with pytest.raises(TrackingError, match=r"failed to create the database folder: \w+Error"):
        Tracker(uri)


@pytest.mark.parametrize("hostile", ["../../etc", "a/../../b", "..", "x\\..\\y", "é/ /\x00"])
def test_run_name_sanitizes_hostile_input(hostile: str) -> None:
    spec = TrialSpec(init=hostile, init_recurrent=hostile + "/passwd", seq_len=10, hidden=64)
    name = run_name(spec)
    assert "/" not in name and ".." not in name and "\\" not in name
    assert 0 < len(name) <= 100
    assert all(c.isascii() and (c.isalnum() or c in "_.+-") for c in name)
    assert run_name(dataclasses.replace(spec, init="x" * 500)).startswith("x" * 100)
    assert run_name(dataclasses.replace(spec, init="x" * 500), 7).startswith("7-" + "x" * 98)
    assert len(run_name(dataclasses.replace(spec, init="x" * 500))) == 100


def test_run_name_of_a_plain_spec() -> None:
    assert run_name(TrialSpec(seq_len=10, hidden=64)) == "xavier-T10-H64-lr0.001-s0"
    spec = TrialSpec(init="xavier", init_recurrent="orthogonal", seq_len=10, hidden=64, seed=3)
    assert run_name(spec, 12) == "12-xavier+orthogonal-T10-H64-lr0.001-s3"
    other = TrialSpec(cell="lstm", scale=2.0, recurrent_scale=1.5, lr=3e-3)
    assert run_name(other, 0) == "0-lstm-xavier-T30-H64-lr0.003-x2-g1.5-s0"


def test_run_names_differ_where_only_the_lr_or_the_cell_does() -> None:
    # a tuned protocol's stage 1 has every arm at several lrs on the same seeds
    specs = [TrialSpec(lr=lr, cell=c) for lr in (1e-3, 3e-3) for c in ("rnn_tanh", "gru")]
    assert len({run_name(s) for s in specs}) == len(specs)
    assert len({run_name(specs[0], n) for n in range(3)}) == 3


def test_batches_stay_within_mlflow_limits() -> None:
    metrics, params, tags = list(range(2500)), list(range(150)), list(range(120))
    batches = list(mlflowio.batches(metrics, params, tags))
    for m, p, t in batches:
        assert len(m) <= 1000 and len(p) <= 100 and len(t) <= 100
        assert len(m) + len(p) + len(t) <= 1000
    assert [x for b in batches for x in b[0]] == metrics
    assert [x for b in batches for x in b[1]] == params
    assert [x for b in batches for x in b[2]] == tags


def test_trial_params_are_every_spec_field_as_text() -> None:
    spec = dataclasses.replace(TINY, clip=0.5, corpus=None)
    params = {p.key: p.value for p in mlflowio.trial_params(spec)}
    assert params == {k: "None" if v is None else str(v) for k, v in spec.to_dict().items()}
    assert params["clip"] == "0.5" and params["corpus"] == "None"


class Flaky:
    """A call that fails with ``error`` the first ``failures`` times, then returns 'ok'."""

    def __init__(self, error: Callable[[], BaseException], failures: int = 100) -> None:
        self.error, self.failures, self.calls = error, failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return "ok"


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The seconds tenacity waits between tries (recorded, not slept)."""
    slept: list[float] = []
    monkeypatch.setattr("tenacity.nap.time", SimpleNamespace(sleep=slept.append))
    return slept


def _locked_store(message: str = "database is locked") -> MlflowException:
    """An MLflow SQL store's failure on SQLite, wrapped the way MLflow wraps it."""
    cause = sqlalchemy.exc.OperationalError("INSERT", {}, sqlite3.OperationalError(message))
    error = MlflowException(f"(sqlite3.OperationalError) {message}", TEMPORARILY_UNAVAILABLE)
    error.__cause__ = cause
    return error


UNREACHABLE = "http://127.0.0.1:9"
"""A tracking URI for calls that never reach it: _call runs the function it is given."""


@pytest.mark.parametrize(
    "error",
    [
        lambda: requests.ConnectionError("connection refused"),
        lambda: requests.Timeout("read timed out"),
        lambda: MlflowException("busy", TEMPORARILY_UNAVAILABLE),
        _locked_store,
        lambda: OSError("network is unreachable"),
    ],
    ids=["connection", "timeout", "5xx", "sqlite-locked", "oserror"],
)
def test_transient_failures_are_retried_after_each_delay(
    error: Callable[[], BaseException], waits: list[float]
) -> None:
    tracker = Tracker(UNREACHABLE)
    recovers = Flaky(error, failures=2)
    assert tracker._call("search runs", recovers) == "ok"
    assert recovers.calls == 3 and waits == list(RETRY_DELAYS[:2])

    waits.clear()
    down = Flaky(error)
    with pytest.raises(TrackingError) as info:
        tracker._call("search runs", down)
    assert down.calls == 1 + len(RETRY_DELAYS) and waits == list(RETRY_DELAYS)
    message = str(info.value)
    assert message.startswith(f"MLflow at {UNREACHABLE} failed to search runs: ")
    assert type(down.error()).__name__ in message


@pytest.mark.parametrize(
    "error",
    [
        lambda: MlflowException("bad value", INVALID_PARAMETER_VALUE),
        lambda: _locked_store("database or disk is full"),
        lambda: sqlalchemy.exc.OperationalError(
            "INSERT", {}, sqlite3.OperationalError("attempt to write a readonly database")
        ),
        lambda: requests.HTTPError("400 Client Error"),
    ],
    ids=["4xx", "sqlite-full", "sqlite-readonly", "http-4xx"],
)
def test_other_tracking_failures_are_not_retried(
    error: Callable[[], BaseException], waits: list[float]
) -> None:
    down = Flaky(error)
    with pytest.raises(TrackingError, match=r"^MLflow at \S+ failed to log a batch: "):
        Tracker(UNREACHABLE)._call("log a batch", down)
    assert down.calls == 1 and waits == []


def test_a_bug_is_raised_as_it_is(waits: list[float]) -> None:
    bug = Flaky(lambda: KeyError("params"))
    with pytest.raises(KeyError, match="params"):
        Tracker(UNREACHABLE)._call("log a batch", bug)
    assert bug.calls == 1 and waits == []


@pytest.mark.parametrize("delays", [(), (0.01,), (0.3, 0.3, 0.3, 0.3)])
def test_retry_delays_set_the_tries(delays: tuple[float, ...], waits: list[float]) -> None:
    tracker = Tracker(UNREACHABLE, retry_delays=delays)
    down = Flaky(lambda: requests.ConnectionError("refused"))
    with pytest.raises(TrackingError):
        tracker._call("connect", down)
    assert down.calls == 1 + len(delays) and waits == list(delays)

    tracker._retry_delays = (0.05,)  # the hook tests use on a built tracker
    down = Flaky(lambda: requests.ConnectionError("refused"))
    waits.clear()
    with pytest.raises(TrackingError):
        tracker._call("connect", down)
    assert down.calls == 2 and waits == [0.05]


def test_unreachable_server_raises_tracking_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens on it
    tracker = Tracker(uri, retry_delays=(0.01, 0.01))
    start = time.monotonic()
    with pytest.raises(TrackingError, match=uri.replace(".", r"\.")) as info:
        tracker.open_study("tiny-study", SPEC_TEXT, {}, {})
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value)
    assert str(info.value).startswith(f"MLflow at {uri} failed to look up the experiment: ")


def test_credentials_are_not_shown_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    tracker = Tracker(f"http://user:secret@127.0.0.1:{port}", retry_delays=())
    with pytest.raises(TrackingError) as info:
        tracker.open_study("tiny-study", SPEC_TEXT, {}, {})
    assert "secret" not in str(info.value)
    assert f"user:***@127.0.0.1:{port}" in str(info.value)


def test_long_causes_are_cut_and_keep_no_password(waits: list[float]) -> None:
    cause = "connect to postgresql://mlflow:hunter2@db:5432/mlflow refused " + "x" * 400
    down = Flaky(lambda: requests.ConnectionError(cause))
    with pytest.raises(TrackingError) as info:
        Tracker(UNREACHABLE, retry_delays=())._call("connect", down)
    message = str(info.value)
    assert "hunter2" not in message and "mlflow:***@db" in message
    assert message.endswith("...") and len(message) < 400
