"""A study you can watch and stop: epochs stream while packs train, and Ctrl-C.

The driver and its stores are real (Optuna SQLite, MLflow SQLite); packs train in this
process (``InProcessExecutor``), which hands the driver the same messages a Ray worker
streams, one per wait, so what the driver does between a pack's start and its end is seen
deterministically. The Ray path is exercised by every study the other tests run on Ray.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import Done
from mlflow.tracking import MlflowClient

from pipeline import driver as drv
from pipeline import execution, urls
from pipeline.execution import InProcessExecutor
from pipeline.live import LiveProgress
from pipeline.progress import Reporter
from pipeline.storage import StudyCounts
from pipeline.studyspec import parse_study_spec

pytestmark = pytest.mark.slow  # every test runs a study (in this process)

TRIAL = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8, "val_size": 16}
TRIAL |= {"batches_per_epoch": 2, "max_epochs": 6, "stop_on_converge": False}
GRID = {"init": ["xavier", "uniform01"], "seed": [0, 1, 2]}
DOC = {"name": "live", "sampler": "grid", "trial": TRIAL, "space": GRID}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run folder for the module (one MLflow migration); each test has its own study."""
    return tmp_path_factory.mktemp("live")


def experiment(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    assert found is not None
    return str(found.experiment_id)


class Watching(Reporter):
    """A quiet reporter that runs ``look`` at every update (what a terminal would show)."""

    def __init__(self, look: Callable[[StudyCounts, LiveProgress | None], None]) -> None:
        super().__init__(enabled=False)
        self.look = look
        self.updates: list[tuple[StudyCounts, LiveProgress | None]] = []

    def update(self, counts: StudyCounts, live: LiveProgress | None = None) -> None:
        super().update(counts, live)
        self.updates.append((counts, live))
        self.look(counts, live)


def test_progress_intermediate_values_and_mlflow_metrics_arrive_before_the_first_pack_ends(
    run_dir: Path,
) -> None:
    options = drv.RunOptions(run_dir=run_dir, pack_size=3, study_name="live")
    storage, tracking = options.storage_url, options.tracking
    seen: dict[str, Any] = {}

    def look(counts: StudyCounts, live: LiveProgress | None) -> None:
        if seen or live is None or live.epochs_done == 0:
            return
        # the first update with epochs done: no pack has ended yet
        study = optuna.load_study(study_name="live", storage=storage)
        trials = study.get_trials(deepcopy=False)
        client = MlflowClient(tracking)
        runs = client.search_runs([experiment(client, "live")], "tags.`initstudy.kind` = 'trial'")
        seen.update(
            complete=counts.complete,
            progress=live,
            intermediate={t.number: dict(t.intermediate_values) for t in trials},
            runs={r.info.run_name: r.info.status for r in runs},
            history={
                r.info.run_name: len(client.get_metric_history(r.info.run_id, "val_loss"))
                for r in runs
            },
        )

    spec = parse_study_spec(DOC, "live")
    reporter = Watching(look)
    executor = InProcessExecutor(slots=2, interval=0.0)
    outcome = drv.Driver(spec, yaml.safe_dump(DOC), options, reporter, lambda: executor).run()
    assert outcome.counts.complete == 6 and outcome.trained == 6

    assert seen, "no update showed epochs while a pack trained"
    assert seen["complete"] == 0
    progress = seen["progress"]
    assert progress.epochs_total == 6 * TRIAL["max_epochs"]
    assert 0 < progress.epochs_done < progress.epochs_total
    assert progress.training == 3  # the first pack's members
    reported = {n: v for n, v in seen["intermediate"].items() if v}
    assert len(reported) == 3 and all(set(v) == {1} for v in reported.values())
    assert len(seen["runs"]) == 3 and set(seen["runs"].values()) == {"RUNNING"}
    assert set(seen["history"].values()) == {1}

    # at the end: one FINISHED run per trial with every epoch once, and the full curve
    # (streamed epochs plus those in the results) in Optuna as it came
    client = MlflowClient(tracking)
    runs = client.search_runs([experiment(client, "live")], "tags.`initstudy.kind` = 'trial'")
    assert len(runs) == 6 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert sorted(steps) == list(range(1, TRIAL["max_epochs"] + 1))
    trials = optuna.load_study(study_name="live", storage=storage).get_trials()
    assert all(set(t.intermediate_values) <= set(range(1, 7)) for t in trials)
    assert sum(len(t.intermediate_values) for t in trials) >= 6 * 5  # every epoch streamed
    done = reporter.updates[-1][1]
    assert done is not None and done.epochs_done == done.epochs_total == 36


def test_a_retried_pack_streams_its_epochs_again_and_nothing_is_counted_twice(
    run_dir: Path,
) -> None:
    """A pack whose worker died is run again by Ray from its start: the epochs it streams
    again are skipped (by epoch), so progress and MLflow see each epoch once."""

    class Retried(InProcessExecutor):
        def _messages(self, specs: list[Any]) -> Any:
            first = super()._messages(specs)
            for _ in range(4):  # started, then three epochs of a first attempt
                yield next(first)
            yield from super()._messages(specs)  # Ray's retry: the same messages again

    options = drv.RunOptions(run_dir=run_dir, pack_size=3, study_name="retried")
    spec = parse_study_spec(DOC, "live")
    reporter = Watching(lambda c, live: None)
    executor = Retried(slots=2, interval=0.0)
    outcome = drv.Driver(spec, yaml.safe_dump(DOC), options, reporter, lambda: executor).run()
    assert outcome.counts.complete == 6
    peak = max(live.epochs_done for _, live in reporter.updates if live is not None)
    assert peak == 36
    client = MlflowClient(options.tracking)
    runs = client.search_runs([experiment(client, "retried")], "tags.`initstudy.kind` = 'trial'")
    assert len(runs) == 6
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_loss")]
        assert sorted(steps) == list(range(1, 7))


def _interrupt_at_first_epochs(
    monkeypatch: pytest.MonkeyPatch, times: int = 1
) -> list[tuple[StudyCounts, LiveProgress | None]]:
    """Send this process SIGINT ``times`` times at the first progress update that shows
    epochs (a pack is training then: packs stream every epoch here), as a user's Ctrl-C
    would."""
    monkeypatch.setattr(execution, "PROGRESS_SECONDS", 0.0)
    updates: list[tuple[StudyCounts, LiveProgress | None]] = []
    real = Reporter.update

    def update(self: Reporter, counts: StudyCounts, live: LiveProgress | None = None) -> None:
        real(self, counts, live)
        first = not any(u[1] is not None and u[1].epochs_done for u in updates)
        updates.append((counts, live))
        if first and live is not None and live.epochs_done:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Reporter, "update", update)
    return updates


def _interrupted_run(
    tmp_path: Path,
    cli_here: Callable[..., Done],
    monkeypatch: pytest.MonkeyPatch,
    args: tuple[str, ...],
    times: int,
) -> tuple[Path, Done]:
    """``initstudy run`` of the spec with ``args``, Ctrl-C'd ``times`` times as it trains."""
    spec = tmp_path / "live.yaml"
    spec.write_text(yaml.safe_dump(DOC), encoding="utf-8")
    _interrupt_at_first_epochs(monkeypatch, times)
    done = cli_here("run", str(spec), *args)
    assert done.returncode == 130, done.stderr
    return spec, done


def test_first_ctrl_c_finishes_the_running_packs_and_a_resume_trains_only_the_rest(
    tmp_path: Path,
    run_dir: Path,
    cli_here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "first-ctrl-c"
    args = ("--run-dir", str(run_dir), "--study-name", name, "--pack-size", "2")
    spec, done = _interrupted_run(tmp_path, cli_here, monkeypatch, args, times=1)
    assert "Ctrl-C: submitting no more trials; finishing" in done.stderr
    assert "Ctrl-C again to stop now" in done.stderr
    assert "interrupted (the running trials were let finish)" in done.stderr
    assert f"Resume with: initstudy run {spec} {' '.join(args[:4])}" in done.stderr
    # two slots of packs of two were running: their four trials finished and were kept
    trained = [s for pack in in_process_executor[0].submitted for s in pack]
    assert len(trained) == 4

    status = cli_here("status", name, "--run-dir", str(run_dir))
    assert status.returncode == 0
    rows = dict(line.split()[1:4:2] for line in status.stdout.splitlines() if "│" in line)
    assert rows["complete"] == "4" and rows["interrupted"] == "2" and "running" not in rows
    assert "2 trials were interrupted (no driver runs this study)" in status.stdout

    # the resume: no Ctrl-C this time (only the first update with epochs sent one)
    again = cli_here("run", str(spec), *args)
    assert again.returncode == 0, again.stderr
    assert len(in_process_executor) == 2
    retrained = [s for pack in in_process_executor[1].submitted for s in pack]
    assert len(retrained) == 2
    assert {s.key("") for s in retrained}.isdisjoint({s.key("") for s in trained})
    assert "2 trained and 2 logged by this run" in again.stdout


def test_second_ctrl_c_stops_the_running_packs_too(
    tmp_path: Path,
    run_dir: Path,
    cli_here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = "second-ctrl-c"
    args = ("--run-dir", str(run_dir), "--study-name", name, "--pack-size", "3")
    _, done = _interrupted_run(tmp_path, cli_here, monkeypatch, args, times=2)
    assert "Ctrl-C again: stopping the running trials now" in done.stderr
    assert "interrupted (the running trials were stopped): 0/6 trials complete" in done.stderr
    assert "6 left unfinished" in done.stderr
    study = optuna.load_study(study_name=name, storage=urls.default_storage_url(run_dir))
    assert {t.state for t in study.get_trials()} == {optuna.trial.TrialState.RUNNING}
    # the live runs of the stopped pack are KILLED, and the study's parent run too
    client = MlflowClient(urls.default_tracking_uri(run_dir))
    runs = client.search_runs([experiment(client, name)])
    statuses = sorted(r.info.status for r in runs)
    assert statuses == ["KILLED"] * 4, statuses  # three trials' runs and the parent
