"""The driver's logic on the in-process executor: recover, ask, execute, tell and log, with
a real SQLite Optuna storage and a real SQLite MLflow store but no Ray (tiny trials,
trained in this process; each test runs a study, so the module is slow)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from models.spec import TrialResult, TrialSpec
from models.train import train_pack
from pipeline import driver as drv
from pipeline import storage as st
from pipeline import studylog
from pipeline.execution import Finished, InProcessExecutor, TrainPack
from pipeline.progress import Reporter
from pipeline.studyspec import StudySpec, parse_study_spec
from pipeline.tracking import TrackingError, read_trials

pytestmark = pytest.mark.slow  # every test runs a study (in this process)

TINY = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8}
TINY |= {"batches_per_epoch": 2, "max_epochs": 2, "val_size": 16}
GRID = {"init": ["xavier", "uniform01"], "seed": [0, 1, 2]}
_names = itertools.count()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run folder for the module (one MLflow migration); every test has its own study."""
    return tmp_path_factory.mktemp("run")


def grid_spec(**extra: object) -> tuple[StudySpec, str]:
    doc = {"name": "tiny", "sampler": "grid", "trial": TINY, "space": GRID, **extra}
    return parse_study_spec(doc, "tiny"), yaml.safe_dump(doc)


class Recording(InProcessExecutor):
    """An in-process executor that keeps the text of every result it hands back."""

    def __init__(self, slots: int = 1, train: TrainPack | None = None) -> None:
        super().__init__(slots, train)
        self.texts: list[str] = []

    def wait(self, timeout: float) -> Finished:
        done = super().wait(timeout)
        self.texts += [t.text for _, out in done if isinstance(out, list) for t in out]
        return done


class Harness:
    """Drivers of one study, each run on a fresh in-process executor that is kept."""

    def __init__(self, run_dir: Path, spec: StudySpec, text: str, **options: object) -> None:
        self.spec, self.text = spec, text
        name = f"{spec.name}-{next(_names)}"
        self.options = drv.RunOptions(run_dir=run_dir, study_name=name, **options)  # type: ignore[arg-type]
        self.executors: list[Recording] = []
        self.train: TrainPack | None = None

    def driver(self) -> drv.Driver:
        def make() -> Recording:
            self.executors.append(Recording(slots=2, train=self.train))
            return self.executors[-1]

        return drv.Driver(self.spec, self.text, self.options, Reporter(enabled=False), make)

    def run(self) -> drv.StudyOutcome:
        return self.driver().run()

    def trials(self) -> list[FrozenTrial]:
        storage = st.make_storage(self.options.storage_url)
        return st.load_existing_study(storage, self.name).get_trials()

    @property
    def name(self) -> str:
        assert self.options.study_name is not None
        return self.options.study_name

    def runs(self) -> list[dict[str, object]]:
        return read_trials(self.options.tracking, self.name)

    def trained_specs(self) -> list[TrialSpec]:
        return [s for e in self.executors for pack in e.submitted for s in pack]


@pytest.fixture
def grid(run_dir: Path) -> Iterator[Harness]:
    yield Harness(run_dir, *grid_spec())


def assert_complete_once(h: Harness) -> None:
    """Every grid point complete exactly once in Optuna and logged exactly once in MLflow."""
    done = [t for t in h.trials() if t.state == TrialState.COMPLETE]
    keys = sorted(t.user_attrs[st.KEY] for t in done)
    expected = sorted(h.spec.trial_spec(p).key(h.spec.claim or "") for p in h.spec.grid_points())
    assert keys == expected
    runs = [r for r in h.runs() if r["status"] == "FINISHED"]
    assert sorted(str(r["key"]) for r in runs) == expected


def test_a_grid_runs_every_point_once_and_a_rerun_trains_nothing(grid: Harness) -> None:
    outcome = grid.run()
    assert (outcome.trained, outcome.logged, outcome.failed) == (6, 6, [])
    assert outcome.counts.complete == outcome.counts.planned == 6
    assert sorted(map(repr, grid.trained_specs())) == sorted(
        repr(grid.spec.trial_spec(p)) for p in grid.spec.grid_points()
    )
    assert_complete_once(grid)
    # each result is stored as its executor's text, serialised once
    assert sorted(t.user_attrs[st.RESULT] for t in grid.trials()) == sorted(
        grid.executors[0].texts
    )

    again = grid.run()
    assert (again.trained, again.logged, again.counts.complete) == (0, 0, 6)
    assert len(grid.executors) == 1, "a rerun with nothing to do starts no executor"
    assert_complete_once(grid)


def test_running_trials_with_a_stored_result_are_told_without_retraining(grid: Harness) -> None:
    driver = grid.driver()
    store = driver._open()
    for params in grid.spec.grid_points():
        key = driver._key(grid.spec.trial_spec(params), 0)
        store.create_running(params, grid.spec.distributions(), key)
    # a driver that died after storing two results, before telling them
    running = store.running()[:2]
    results = train_pack([grid.spec.trial_spec(t.params) for t in running])
    texts = [r.to_json() for r in results]
    for t, result, text in zip(running, results, texts, strict=True):
        store.store_result(t.trial_id, text, result.outcome)

    outcome = grid.run()
    assert (outcome.trained, outcome.logged) == (4, 6)
    told = {t.number: t for t in grid.trials()}
    for t, text in zip(running, texts, strict=True):
        assert told[t.number].state == TrialState.COMPLETE
        assert told[t.number].user_attrs[st.RESULT] == text  # not retrained
    assert {repr(grid.spec.trial_spec(t.params)) for t in running}.isdisjoint(
        map(repr, grid.trained_specs())
    )
    assert_complete_once(grid)


def test_a_sampled_study_stops_at_n_trials(run_dir: Path) -> None:
    doc = {"name": "sampled", "sampler": "random", "n_trials": 5, "trial": TINY}
    doc["space"] = {"init": ["xavier", "uniform01"], "seed": {"low": 0, "high": 1000}}
    h = Harness(run_dir, parse_study_spec(doc, "sampled"), yaml.safe_dump(doc))
    outcome = h.run()
    assert (outcome.trained, outcome.logged, outcome.counts.complete) == (5, 5, 5)
    trials = h.trials()
    assert len(trials) == 5 and {t.state for t in trials} == {TrialState.COMPLETE}
    assert len({t.user_attrs[st.KEY] for t in trials}) == 5
    assert h.run().trained == 0


def test_a_failed_pack_fails_its_trials_with_the_error_and_a_rerun_redoes_them(
    run_dir: Path,
) -> None:
    h = Harness(run_dir, *grid_spec(), pack_size=1)

    def uniform_breaks(specs: Sequence[TrialSpec], device: str) -> list[TrialResult]:
        if specs[0].init == "uniform01":
            raise RuntimeError("boom\nand a second line")
        return train_pack(specs, device)

    h.train = uniform_breaks
    outcome = h.run()
    assert outcome.trained == 3 and len(outcome.failed) == 3
    assert all(line.endswith("RuntimeError: boom") for line in outcome.failed)
    failed = [t for t in h.trials() if t.state == TrialState.FAIL]
    assert sorted(t.params["init"] for t in failed) == ["uniform01"] * 3
    assert {t.user_attrs[st.ERROR] for t in failed} == {"RuntimeError: boom"}
    assert outcome.counts.failed == 3 and outcome.counts.remaining == 3

    h.train = None
    again = h.run()
    assert (again.trained, again.failed, again.counts.remaining) == (3, [], 0)
    assert_complete_once(h)


def test_backfill_logs_each_complete_trial_exactly_once(
    grid: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = studylog.Tracker

    class Down(real):  # type: ignore[misc, valid-type]
        def open_study(self, *args: object, **kwargs: object) -> None:
            raise TrackingError("MLflow is down for this test")

    monkeypatch.setattr(studylog, "Tracker", Down)
    outcome = grid.run()
    assert (outcome.trained, outcome.logged) == (6, 0)
    assert outcome.tracking_error is not None
    monkeypatch.setattr(studylog, "Tracker", real)

    resumed = grid.run()  # MLflow is back: the next run back-fills, trains nothing
    assert (resumed.trained, resumed.logged) == (0, 6)
    assert grid.driver().sync().logged == 0
    assert grid.run().logged == 0
    assert_complete_once(grid)


def test_a_study_where_every_trial_diverges_completes(run_dir: Path) -> None:
    trial = TINY | {"cell": "rnn_relu", "optimizer": "sgd", "lr": 1.0e9, "scale": 3.0}
    spec, text = grid_spec(trial=trial)
    h = Harness(run_dir, spec, text)
    outcome = h.run()
    assert (outcome.trained, outcome.counts.diverged, outcome.counts.complete) == (6, 6, 6)
    assert {t.value for t in h.trials()} == {TINY["max_epochs"] + 1}  # scored, not failed
    assert_complete_once(h)


def test_a_changed_spec_is_refused_before_anything_runs_and_a_new_name_runs_it(
    grid: Harness, run_dir: Path
) -> None:
    grid.run()
    changed, text = grid_spec(trial={**TINY, "max_epochs": 3})
    same_name = Harness(run_dir, changed, text)
    same_name.options = drv.RunOptions(run_dir=run_dir, study_name=grid.name)
    with pytest.raises(st.StudyError, match=r"different spec.*--study-name NEW"):
        same_name.run()
    assert same_name.executors == [], "nothing may start for a refused spec"
    assert len(grid.trials()) == 6

    renamed = Harness(run_dir, changed, text)
    outcome = renamed.run()
    assert outcome.trained == outcome.counts.complete == 6
    assert {t.user_attrs[st.SEED] for t in renamed.trials()} == {0, 1, 2}
    assert all(s.max_epochs == 3 for s in renamed.trained_specs())
