"""pipeline.tracking against a real MLflow SQLite store (no mocks)."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from ports import free_port

from models import EpochRecord, TrialResult, TrialSpec, train_trial
from pipeline import tracking
from pipeline.tracking import KEY_TAG, KIND_TAG, Tracker, TrackingError, read_trials, run_name

# SQLAlchemy 2.1 warns about MLflow's own ORM models when MLflow's SQL store is first imported;
# pipeline.tracking silences it, and so must the tests that build an MlflowClient themselves.
pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
)

STUDY = "tiny-study"
SPEC_TEXT = "# initstudy run studies/tiny.yaml\nname: tiny-study\n"
TINY = TrialSpec(seq_len=5, hidden=8, batch_size=8, batches_per_epoch=3, max_epochs=2, val_size=16)


@pytest.fixture(scope="module")
def results() -> list[TrialResult]:
    """Two ordinary trials and one that diverges (a huge SGD step on a ReLU cell)."""
    diverges = dataclasses.replace(TINY, optimizer="sgd", lr=1e9, scale=3.0, cell="rnn_relu")
    specs = [TINY, dataclasses.replace(TINY, seed=1), diverges]
    return [train_trial(s) for s in specs]


@pytest.fixture
def uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"


@pytest.fixture
def tracker(uri: str) -> Tracker:
    t = Tracker(uri)
    t.open_study(STUDY, SPEC_TEXT, {"n_trials": "3"}, {"initstudy.spec_hash": "abc"})
    return t


def trial_runs(client: MlflowClient, experiment_id: str, key: str) -> list[str]:
    runs = client.search_runs(
        [experiment_id], f"tags.`{KEY_TAG}` = '{key}'", run_view_type=ViewType.ACTIVE_ONLY
    )
    return [r.info.run_id for r in runs]


def test_construction_creates_only_the_database_folder(tmp_path: Path) -> None:
    Tracker(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert (tmp_path / "runs").is_dir()
    assert list((tmp_path / "runs").iterdir()) == []


def test_open_study_is_idempotent(uri: str, tmp_path: Path) -> None:
    first = Tracker(uri)
    parent = first.open_study(STUDY, SPEC_TEXT, {"n_trials": "3"}, {"initstudy.code": "v1"})
    again = Tracker(uri)  # as after a driver restart
    assert (
        again.open_study(STUDY, SPEC_TEXT, {"n_trials": "3"}, {"initstudy.code": "v1"}) == parent
    )
    assert again.experiment_id == first.experiment_id
    assert first.open_study(STUDY, SPEC_TEXT, {}, {}) == parent

    client = MlflowClient(uri)
    parents = client.search_runs([first.experiment_id], f"tags.`{KIND_TAG}` = 'study'")
    assert [r.info.run_id for r in parents] == [parent]
    run = client.get_run(parent)
    assert run.data.params == {"n_trials": "3"}
    assert run.data.tags["initstudy.code"] == "v1"
    assert [a.path for a in client.list_artifacts(parent)] == ["spec.yaml"]
    spec_file = tmp_path / "runs" / "mlartifacts" / parent / "artifacts" / "spec.yaml"
    assert spec_file.read_text() == SPEC_TEXT


def test_open_study_completes_a_half_logged_parent_and_reopens_a_closed_one(
    uri: str, tmp_path: Path
) -> None:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(STUDY, (tmp_path / "artifacts").as_uri())
    # A driver died right after creating the parent run.
    parent = client.create_run(experiment_id, tags={KIND_TAG: "study"}).info.run_id
    tracker = Tracker(uri)
    assert tracker.open_study(STUDY, SPEC_TEXT, {"n_trials": "3"}, {"a": "b"}) == parent
    assert client.get_run(parent).data.params == {"n_trials": "3"}
    assert [a.path for a in client.list_artifacts(parent)] == ["spec.yaml"]

    tracker.close_study()
    assert client.get_run(parent).info.status == "FINISHED"
    assert Tracker(uri).open_study(STUDY, SPEC_TEXT, {"n_trials": "3"}, {}) == parent
    assert client.get_run(parent).info.status == "RUNNING"


def test_log_trial_records_params_metrics_tags_artifacts(
    tracker: Tracker, uri: str, results: list[TrialResult]
) -> None:
    result = results[0]
    key = result.spec.key("C4")
    run_id = tracker.log_trial(key, 7, result, {"initstudy.claim": "C4"})
    client = MlflowClient(uri)
    run = client.get_run(run_id)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == "xavier-T5-H8-s0"
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
    local = Path(client.download_artifacts(run_id, "result.json"))
    assert TrialResult.from_json(local.read_text()).numbers() == result.numbers()
    diagnostics = json.loads(
        Path(client.download_artifacts(run_id, "diagnostics.json")).read_text()
    )
    assert diagnostics["grad_norm"] == pytest.approx(result.diagnostics.grad_norm)

    # Exactly once per key: a second call logs nothing and returns the same run.
    assert tracker.log_trial(key, 7, result, {}) == run_id
    assert trial_runs(client, tracker.experiment_id, key) == [run_id]
    assert len(client.get_metric_history(run_id, "val_loss")) == 2
    assert tracker.logged_trials() == {key: run_id}


def test_diverged_and_non_finite_values(
    tracker: Tracker, uri: str, results: list[TrialResult]
) -> None:
    diverged = results[2]
    assert diverged.diverged
    run_id = tracker.log_trial("div", 0, diverged, {})
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["initstudy.outcome"] == "diverged"
    assert run.data.metrics["diverged"] == 1
    assert run.data.metrics["diverged_epoch"] == diverged.diverged_epoch

    # 250 epochs x 5 metrics: more than one log_batch call; NaN and inf along the way.
    history = [EpochRecord(e, 1.0 / e, 1.0 / e, 1.0, 0.5, 0.0) for e in range(1, 251)]
    history[-1] = EpochRecord(250, math.nan, math.nan, math.inf, 0.5, 1.0)
    long = dataclasses.replace(results[1], history=history, diverged_epoch=250)
    run_id = tracker.log_trial("long", 1, long, {})
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
    assert again != dead
    assert trial_runs(client, tracker.experiment_id, "dead") == [again]
    assert tracker.logged_trials() == {"done": done, "dead": again}


def test_logged_trials_follows_page_tokens(
    tracker: Tracker, results: list[TrialResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    logged = {f"k{i}": tracker.log_trial(f"k{i}", i, results[i % 2], {}) for i in range(5)}
    monkeypatch.setattr(tracking, "_PAGE_SIZE", 2)
    assert tracker.logged_trials() == logged


def test_fluent_search_runs_in_another_process(
    tracker: Tracker, uri: str, results: list[TrialResult]
) -> None:
    ids = {tracker.log_trial(f"k{i}", i, r, {}) for i, r in enumerate(results)}
    script = f"""
import json, mlflow
mlflow.set_tracking_uri({uri!r})
df = mlflow.search_runs(experiment_names=[{STUDY!r}],
                        filter_string="tags.`initstudy.kind` = 'trial'")
print(json.dumps(df[["run_id", "params.hidden", "metrics.epochs_run"]].to_dict("records")))
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {r["run_id"] for r in rows} == ids
    assert all(r["params.hidden"] == "8" and r["metrics.epochs_run"] >= 1 for r in rows)

    listed = read_trials(uri, STUDY)
    assert {t["run_id"] for t in listed} == ids
    assert all(t["status"] == "FINISHED" and t["params"]["hidden"] == "8" for t in listed)
    assert read_trials(uri, "no-such-study") == []


@pytest.mark.parametrize("hostile", ["../../etc", "a/../../b", "..", "x\\..\\y", "é/ /\x00"])
def test_run_name_sanitizes_hostile_input(hostile: str) -> None:
    spec = TrialSpec(init=hostile, init_recurrent=hostile + "/passwd", seq_len=10, hidden=64)
    name = run_name(spec)
    assert "/" not in name and ".." not in name and "\\" not in name
    assert 0 < len(name) <= 100
    assert all(c.isascii() and (c.isalnum() or c in "_.+-") for c in name)
    assert run_name(dataclasses.replace(spec, init="x" * 500)).startswith("x" * 100)
    assert len(run_name(dataclasses.replace(spec, init="x" * 500))) == 100


def test_run_name_of_a_plain_spec() -> None:
    assert run_name(TrialSpec(seq_len=10, hidden=64)) == "xavier-T10-H64-s0"
    spec = TrialSpec(init="xavier", init_recurrent="orthogonal", seq_len=10, hidden=64, seed=3)
    assert run_name(spec) == "xavier+orthogonal-T10-H64-s3"


def test_batches_stay_within_mlflow_limits() -> None:
    metrics, params, tags = list(range(2500)), list(range(150)), list(range(120))
    batches = list(tracking._batches(metrics, params, tags))
    for m, p, t in batches:
        assert len(m) <= 1000 and len(p) <= 100 and len(t) <= 100
        assert len(m) + len(p) + len(t) <= 1000
    assert [x for b in batches for x in b[0]] == metrics
    assert [x for b in batches for x in b[1]] == params
    assert [x for b in batches for x in b[2]] == tags


def test_unreachable_server_raises_tracking_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens on it
    tracker = Tracker(uri, retry_delays=(0.01, 0.01))
    start = time.monotonic()
    with pytest.raises(TrackingError, match=uri.replace(".", r"\.")) as info:
        tracker.open_study(STUDY, SPEC_TEXT, {}, {})
    assert time.monotonic() - start < 10
    assert "\n" not in str(info.value)


def test_credentials_are_not_shown_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    tracker = Tracker(f"http://user:secret@127.0.0.1:{port}", retry_delays=())
    with pytest.raises(TrackingError) as info:
        tracker.open_study(STUDY, SPEC_TEXT, {}, {})
    assert "secret" not in str(info.value)
    assert f"user:***@127.0.0.1:{port}" in str(info.value)


def test_open_study_must_come_first(uri: str) -> None:
    with pytest.raises(RuntimeError, match="open_study"):
        Tracker(uri).logged_trials()


def test_parent_tags_and_artifacts(tracker: Tracker, uri: str, tmp_path: Path) -> None:
    report = tmp_path / "report.md"
    report.write_text("# verdicts\n")
    tracker.set_parent_tags({"initstudy.status": "done"})
    tracker.log_parent_artifact(str(report), "report")
    client = MlflowClient(uri)
    assert client.get_run(tracker.parent_run_id).data.tags["initstudy.status"] == "done"
    assert [a.path for a in client.list_artifacts(tracker.parent_run_id, "report")] == [
        "report/report.md"
    ]
    with pytest.raises(FileNotFoundError):
        tracker.log_parent_artifact(str(tmp_path / "missing.md"))
