"""How a study reads in MLflow: live trial runs, training times, the parent run's span and
summary, and the experiment's description. Against a real MLflow SQLite store (no mocks);
the browser's view of it is tests/test_ui.py.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from models import TrialResult, TrialSpec, train_trial
from pipeline.tracking import KEY_TAG, KIND_TAG, Tracker, TrackingError, run_name
from pipeline.tracking_runs import NOTE_TAG, training_span

pytestmark = [
    pytest.mark.slow,  # every test opens a fresh MLflow SQLite store: its migrations take seconds
    pytest.mark.filterwarnings(
        "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning"
    ),
]

SPEC_TEXT = (
    "name: live\ndescription: A tiny study of the live runs.\n"
    "claim: xavier converges faster\nsampler: grid\n"
)
PARAMS = {
    "study": "live",
    "sampler": "grid",
    "n_trials": "3",
    "objective": "epochs_to_converge",
    "claim": "xavier converges faster",
}
TINY = TrialSpec(seq_len=5, hidden=8, batch_size=8, batches_per_epoch=3, max_epochs=3, val_size=16)
WALL = 4.0
"""Training seconds the results below claim (a real tiny trial trains in milliseconds)."""
EPOCH_METRICS = ("train_loss", "val_loss", "grad_norm", "hidden_var", "hidden_sat")


@pytest.fixture(scope="module")
def result() -> TrialResult:
    """A trained trial that says it started 30 s ago and trained for WALL seconds."""
    trained = train_trial(TINY)
    assert len(trained.history) == 3
    extra = {**trained.extra, "started_at": time.time() - 30}
    return dataclasses.replace(trained, wall_seconds=WALL, extra=extra)


@pytest.fixture
def uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"


@pytest.fixture
def tracker(uri: str) -> Tracker:
    t = Tracker(uri, retry_delays=())
    t.open_study("live", SPEC_TEXT, PARAMS, {"initstudy.spec_hash": "abc"})
    assert t.logged_trials() == {}  # the driver's order: once, before any live run
    return t


def duration_s(client: MlflowClient, run_id: str) -> float:
    info = client.get_run(run_id).info
    assert info.end_time is not None
    return (info.end_time - info.start_time) / 1000


def trial_runs(client: MlflowClient, experiment_id: str, key: str) -> list[str]:
    runs = client.search_runs(
        [experiment_id], f"tags.`{KEY_TAG}` = '{key}'", run_view_type=ViewType.ACTIVE_ONLY
    )
    return [r.info.run_id for r in runs]


def test_a_logged_trial_lasts_its_training(
    tracker: Tracker, uri: str, result: TrialResult
) -> None:
    client = MlflowClient(uri)
    run_id = tracker.log_trial("k0", 0, result, {})
    info = client.get_run(run_id).info
    assert abs(duration_s(client, run_id) - WALL) <= 0.2 * WALL
    assert info.start_time == round(result.extra["started_at"] * 1000)

    # An older result, without started_at: it ends now, and lasts its training all the same.
    old = dataclasses.replace(result, extra={"pack_size": 1})
    before = time.time()
    old_id = tracker.log_trial("k1", 1, old, {})
    assert abs(duration_s(client, old_id) - WALL) <= 0.2 * WALL
    assert client.get_run(old_id).info.end_time >= before * 1000 - 1


def test_training_span_reads_started_at_or_ends_now(result: TrialResult) -> None:
    started = result.extra["started_at"]
    assert training_span(result, now=1e9) == (started, started + WALL)
    for missing in ({}, {"started_at": None}, {"started_at": "soon"}, {"started_at": -1.0}):
        assert training_span(dataclasses.replace(result, extra=missing), 100.0) == (96.0, 100.0)


def test_a_live_run_is_streamed_then_finished_once(
    tracker: Tracker, uri: str, result: TrialResult
) -> None:
    client = MlflowClient(uri)
    key = "live-key"
    started = tracker.start_trials(
        [(key, 4, result.spec)], {"initstudy.claim": "C4"}, start_time=result.extra["started_at"]
    )
    run_id = started[key]
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.info.run_name == run_name(result.spec, 4)
    assert run.info.start_time == round(result.extra["started_at"] * 1000)
    assert run.data.tags[KIND_TAG] == "trial" and run.data.tags[KEY_TAG] == key
    assert run.data.tags["initstudy.trial_number"] == "4"
    assert run.data.tags["mlflow.parentRunId"] == tracker.parent_run_id
    assert run.data.tags["initstudy.claim"] == "C4"
    assert run.data.params == {}  # they ride with the first metrics: no call of their own

    tracker.log_epochs(key, result.history[:1])
    assert client.get_run(run_id).data.params["hidden"] == "8"
    tracker.log_epochs(key, result.history[:2])  # epoch 1 again: not sent twice
    assert [m.step for m in client.get_metric_history(run_id, "val_loss")] == [1, 2]
    assert client.get_run(run_id).info.status == "RUNNING"
    # A later logged_trials (the driver's end-of-run back-fill) leaves a live run alone.
    assert tracker.logged_trials() == {}
    assert client.get_run(run_id).info.lifecycle_stage == "active"

    assert tracker.log_trial(key, 4, result, {"initstudy.claim": "C4"}) == run_id
    assert trial_runs(client, tracker.experiment_id, key) == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["initstudy.outcome"] == result.outcome
    assert run.data.metrics["epochs_run"] == 3
    for name in EPOCH_METRICS:
        history = client.get_metric_history(run_id, name)
        assert [m.step for m in history] == [1, 2, 3], name
        assert [m.value for m in history] == pytest.approx(
            [getattr(r, name) for r in result.history]
        )
    assert {a.path for a in client.list_artifacts(run_id)} == {"diagnostics.json", "result.json"}
    assert abs(duration_s(client, run_id) - WALL) <= 0.2 * WALL

    # Exactly once: a key logged already is neither started nor logged again.
    assert tracker.start_trials([(key, 4, result.spec)], {}, start_time=time.time()) == {}
    tracker.log_epochs(key, result.history)  # no live run: nothing
    assert tracker.log_trial(key, 4, result, {}) == run_id
    assert len(client.get_metric_history(run_id, "val_loss")) == 3
    assert Tracker(uri).open_study("live", SPEC_TEXT, PARAMS, {}) == tracker.parent_run_id


def test_a_long_stream_is_batched_and_epochs_come_in_any_order(
    tracker: Tracker, uri: str, result: TrialResult
) -> None:
    client = MlflowClient(uri)
    run_id = tracker.start_trials([("long", 0, result.spec)], {}, start_time=time.time())["long"]
    records = [dataclasses.replace(result.history[0], epoch=e) for e in range(1, 451)]
    tracker.log_epochs("long", records[200:])
    tracker.log_epochs("long", records)  # 5 x 450 metrics: more than one call
    history = client.get_metric_history(run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, 451))


def test_failed_and_killed_live_runs_are_replaced_next_time(
    tracker: Tracker, uri: str, result: TrialResult
) -> None:
    client = MlflowClient(uri)
    items = [("a", 0, result.spec), ("b", 1, result.spec), ("c", 2, result.spec)]
    runs = tracker.start_trials(items, {}, start_time=time.time())
    tracker.fail_trials(["a", "not-live"])
    assert client.get_run(runs["a"]).info.status == "FAILED"
    tracker.kill_live()
    assert client.get_run(runs["b"]).info.status == "KILLED"
    assert client.get_run(runs["c"]).info.status == "KILLED"

    # A live run whose logging fails is left FAILED, not FINISHED.
    again = tracker.start_trials([("d", 3, result.spec)], {}, start_time=time.time())["d"]

    def down(artifact_uri: str) -> object:
        raise OSError("artifact store unreachable")

    tracker._artifact_repo = down  # type: ignore[method-assign]
    with pytest.raises(TrackingError, match="log the trial's artifacts"):
        tracker.log_trial("d", 3, result, {})
    assert client.get_run(again).info.status == "FAILED"

    later = Tracker(uri)  # the next run or `initstudy sync`
    later.open_study("live", SPEC_TEXT, PARAMS, {})
    assert later.logged_trials() == {}
    for run_id in [*runs.values(), again]:
        assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    new = later.log_trial("d", 3, result, {})
    assert trial_runs(client, later.experiment_id, "d") == [new]
    assert client.get_run(new).info.status == "FINISHED"


def test_the_parent_run_spans_the_study(tracker: Tracker, uri: str, result: TrialResult) -> None:
    client = MlflowClient(uri)
    started = time.time()  # the trials train after the study opened
    early = dataclasses.replace(result, extra={"started_at": started})
    tracker.log_trial("early", 0, early, {})
    late = dataclasses.replace(result, extra={"started_at": started + 5})
    tracker.log_trial("late", 1, late, {})
    tracker.close_study()
    parent = client.get_run(tracker.parent_run_id).info
    assert parent.status == "FINISHED"
    assert parent.end_time == round((started + 5 + WALL) * 1000)

    # A later process (the next run) finds the latest end among the logged runs.
    again = Tracker(uri)
    again.open_study("live", SPEC_TEXT, PARAMS, {})
    assert client.get_run(tracker.parent_run_id).info.status == "RUNNING"
    again.logged_trials()
    again.close_study()
    assert client.get_run(tracker.parent_run_id).info.end_time == parent.end_time


def test_attaching_to_the_parent_keeps_its_status_and_end(
    tracker: Tracker, uri: str, result: TrialResult, tmp_path: Path
) -> None:
    client = MlflowClient(uri)
    tracker.log_trial("k", 0, result, {})
    tracker.close_study()
    before = client.get_run(tracker.parent_run_id).info

    other = Tracker(uri)  # `initstudy report`, in another process
    assert other.attach_study("live") == tracker.parent_run_id
    (tmp_path / "report.md").write_text("# report\n")
    other.log_parent_artifact(str(tmp_path / "report.md"), "report")
    other.set_parent_tags({"initstudy.verdict.C4": "supported"})
    other.log_parent_metrics({"trials_converged": 2.0, "best_value": 7.0})

    after = client.get_run(tracker.parent_run_id)
    assert (after.info.status, after.info.end_time) == (before.status, before.end_time)
    assert after.data.tags["initstudy.verdict.C4"] == "supported"
    assert after.data.metrics == {"trials_converged": 2.0, "best_value": 7.0}
    assert [a.path for a in client.list_artifacts(tracker.parent_run_id, "report")] == [
        "report/report.md"
    ]
    assert Tracker(uri).attach_study("no-such-study") is None


def test_the_experiment_describes_the_study(tracker: Tracker, uri: str) -> None:
    client = MlflowClient(uri)
    note = client.get_experiment(tracker.experiment_id).tags[NOTE_TAG]
    for text in (
        "`live`",
        "xavier converges faster",
        "| grid | 3 | epochs_to_converge",
        "A tiny study of the live runs.",
        "initstudy.trial_key",
        "metrics.converged_epoch",
    ):
        assert text in note, text

    # Opened again with other params, the description follows; a user's own one stays.
    Tracker(uri).open_study("live", SPEC_TEXT, {**PARAMS, "n_trials": "5"}, {})
    assert "| grid | 5 |" in client.get_experiment(tracker.experiment_id).tags[NOTE_TAG]
    client.set_experiment_tag(tracker.experiment_id, NOTE_TAG, "my notes")
    Tracker(uri).open_study("live", SPEC_TEXT, PARAMS, {})
    assert client.get_experiment(tracker.experiment_id).tags[NOTE_TAG] == "my notes"


def test_report_keeps_the_parent_run_and_adds_the_summary(
    smoke_study, tmp_path: Path, cli_here
) -> None:
    """``initstudy report`` on a finished study: verdicts, summary and report land on the
    parent run, whose status and end time stay the study's."""
    run_dir = smoke_study.copy_to(tmp_path / "run")
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("smoke")
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`{KIND_TAG}` = 'study'")
    trials = client.search_runs([experiment.experiment_id], f"tags.`{KIND_TAG}` = 'trial'")
    assert parent.info.status == "FINISHED"
    assert parent.info.end_time == max(t.info.end_time for t in trials)

    done = cli_here("report", "smoke", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "not logged to MLflow" not in done.stderr
    after = client.get_run(parent.info.run_id)
    assert (after.info.status, after.info.end_time) == ("FINISHED", parent.info.end_time)
    metrics = after.data.metrics
    assert metrics["trials_complete"] == 6
    outcomes = [t.data.tags["initstudy.outcome"] for t in trials]
    assert metrics["trials_converged"] == outcomes.count("converged")
    assert sum(metrics[f"trials_{o}"] for o in set(outcomes)) == 6
    best = min(trials, key=lambda t: t.data.metrics.get("converged_epoch", 13))
    if "converged_epoch" in best.data.metrics:
        assert metrics["best_value"] == best.data.metrics["converged_epoch"]
        assert after.data.tags["initstudy.best_trial"] == str(int(metrics["best_trial"]))
    assert any(k.startswith("initstudy.verdict.") for k in after.data.tags)
    names = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/report.md", "report/report.html"} <= names


def test_the_study_summary_counts_outcomes_and_names_the_best(
    result: TrialResult, tmp_path: Path
) -> None:
    from pipeline.analysis.tables import tables_from_results
    from pipeline.cli.outputs import _to_parent_run
    from pipeline.publish import parent_summary as _summary

    spec = result.spec
    lower = [dataclasses.replace(h, val_loss=h.val_loss / 10) for h in result.history]
    rows = [
        (0, "a", result),
        (1, "b", dataclasses.replace(result, converged_epoch=3)),
        (2, "c", dataclasses.replace(result, converged_epoch=2, history=lower)),
    ]
    rows[2] = (2, "c", dataclasses.replace(rows[2][2], spec=dataclasses.replace(spec, seed=2)))
    assert [r.outcome for _, _, r in rows].count("converged") == 2
    metrics, tags = _summary(tables_from_results("s", rows))
    assert metrics["trials_complete"] == 3 and metrics["trials_converged"] == 2
    assert sum(v for k, v in metrics.items() if k.startswith("trials_")) == 3 + 3
    assert (metrics["best_value"], metrics["best_trial"]) == (2.0, 2.0)
    assert tags["initstudy.best_trial"] == "2"
    assert tags["initstudy.outcomes"].startswith("2 converged, ")

    by_loss = tables_from_results("s", rows, spec_text="objective:\n  metric: best_val_loss\n")
    metrics, _ = _summary(by_loss)
    assert metrics["best_trial"] == 2
    assert metrics["best_value"] == pytest.approx(rows[2][2].best_val_loss)
    assert rows[2][2].best_val_loss < result.best_val_loss

    # No MLflow store at all: a warning, and no empty database made.
    missing = tmp_path / "none" / "mlflow.db"
    _to_parent_run(by_loss, f"sqlite:///{missing}", tmp_path, [], "report")
    assert not missing.exists()
