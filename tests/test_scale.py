"""Studies at scale, on the in-process executor with real SQLite stores: seeds stored as
integers (never a distribution), trials created as they are needed (a bounded window), a
resume of a grid left half-created, and Ctrl-C during creation."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from pipeline import driver as drv
from pipeline import storage as st
from pipeline.execution import InProcessExecutor
from pipeline.progress import Reporter
from pipeline.results import load_tables
from pipeline.studyspec import StudySpec, parse_study_spec

TINY = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8}
TINY |= {"batches_per_epoch": 1, "max_epochs": 1, "val_size": 8}
_names = itertools.count()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("run")


def spec_of(**doc: object) -> tuple[StudySpec, str]:
    data = {"name": "scale", "trial": TINY, **doc}
    return parse_study_spec(data, "scale"), yaml.safe_dump(data)


class Study:
    """One study of ``spec`` in ``run_dir``, run by drivers on in-process executors."""

    def __init__(self, run_dir: Path, spec: StudySpec, text: str, slots: int = 2) -> None:
        self.spec, self.text, self.slots = spec, text, slots
        self.name = f"{spec.name}-{next(_names)}"
        self.options = drv.RunOptions(run_dir=run_dir, study_name=self.name)
        self.executors: list[InProcessExecutor] = []

    def driver(self) -> drv.Driver:
        def make() -> InProcessExecutor:
            self.executors.append(InProcessExecutor(self.slots))
            return self.executors[-1]

        return drv.Driver(self.spec, self.text, self.options, Reporter(enabled=False), make)

    def trials(self) -> list[object]:
        storage = st.make_storage(self.options.storage_url)
        return list(st.load_existing_study(storage, self.name).get_trials())


@pytest.mark.parametrize(
    ("sampler", "seeds"),
    [
        ("grid", {"low": 0, "high": 2}),
        ("grid", [5, 6]),
        ("random", {"low": 0, "high": 49_999}),
        ("tpe", [10, 11, 12]),
    ],
)
def test_no_trial_stores_a_seed_distribution(run_dir: Path, sampler: str, seeds: object) -> None:
    doc: dict[str, object] = {"sampler": sampler}
    doc["space"] = {"init": ["xavier", "uniform01"], "seed": seeds}
    if sampler != "grid":
        doc["n_trials"] = 6
    study = Study(run_dir, *spec_of(**doc))
    outcome = study.driver().run()
    planned = study.spec.n_trials_planned
    assert outcome.counts.complete == planned and outcome.failed == []
    trials = study.trials()
    allowed = (
        set(range(seeds["low"], seeds["high"] + 1)) if isinstance(seeds, dict) else set(seeds)
    )
    stored = []
    for t in trials:
        assert "seed" not in t.distributions and "seed" not in t.params  # type: ignore[attr-defined]
        seed = t.user_attrs[st.SEED]  # type: ignore[attr-defined]
        assert type(seed) is int and seed in allowed
        stored.append(seed)
    # the results table's seed column is each trial's stored seed
    table = load_tables(study.name, study.options.storage_url).trials
    assert sorted(table["seed"].astype(int)) == sorted(stored)
    assert (table["data_seed"] == table["seed"]).all()
    if sampler != "grid":  # in turn by trial number: the sampler never drew them
        numbers = {t.number: t.user_attrs[st.SEED] for t in trials}  # type: ignore[attr-defined]
        order = list(range(seeds["low"], seeds["high"] + 1)) if isinstance(seeds, dict) else seeds
        assert numbers == {n: order[n % len(order)] for n in numbers}
    assert study.driver().run().trained == 0


def test_a_grid_stored_with_seed_params_resumes_without_rerunning(run_dir: Path) -> None:
    """A study created before seeds were attributes (each trial's seed a categorical param)
    resumes: its trials keep their keys, nothing is trained twice."""
    spec, text = spec_of(sampler="grid", space={"init": ["xavier", "uniform01"], "seed": [0, 1]})
    study = Study(run_dir, spec, text)
    driver = study.driver()
    store = driver._open()
    old_style = spec.distributions()  # with the seed's CategoricalDistribution
    assert "seed" in old_style
    for params in spec.grid_points()[:3]:
        store.create_running(params, old_style, driver._key(spec.trial_spec(params), 0))
    store.close()
    outcome = study.driver().run()
    assert (outcome.trained, outcome.counts.complete) == (4, 4)
    trials = study.trials()
    assert len(trials) == 4 and {t.state for t in trials} == {TrialState.COMPLETE}  # type: ignore[attr-defined]
    keys = sorted(t.user_attrs[st.KEY] for t in trials)  # type: ignore[attr-defined]
    assert keys == sorted(spec.trial_spec(p).key("") for p in spec.grid_points())
    table = load_tables(study.name, study.options.storage_url).trials
    assert sorted(table["seed"].astype(int)) == [0, 0, 1, 1]
