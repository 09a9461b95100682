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


@pytest.mark.slow  # runs a study per case
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


class FirstPack(InProcessExecutor):
    """Counts the study's trials when the first pack is submitted, then Ctrl-Cs the driver
    (the running packs finish, nothing more is created)."""

    def __init__(self, study: Study, slots: int) -> None:
        super().__init__(slots)
        self.study = study
        self.driver: drv.Driver | None = None
        self.created_at_first: int | None = None

    def submit(self, pack_id: int, specs: list[object], resources: object) -> None:  # type: ignore[override]
        if self.created_at_first is None:
            self.created_at_first = len(self.study.trials())
            assert self.driver is not None
            self.driver.interrupts.stopping = True
        super().submit(pack_id, specs, resources)  # type: ignore[arg-type]


def test_a_100000_cell_grid_trains_its_first_pack_before_creating_its_trials(
    run_dir: Path,
) -> None:
    space = {"init": ["xavier", "uniform01"], "seed": {"low": 0, "high": 49_999}}
    study = Study(run_dir, *spec_of(sampler="grid", space=space))
    assert study.spec.n_trials_planned == 100_000
    executor = FirstPack(study, slots=2)
    driver = drv.Driver(
        study.spec, study.text, study.options, Reporter(enabled=False), lambda: executor
    )
    executor.driver = driver
    outcome = driver.run()
    # the first pack (16 trials, MAX_AUTO_PACK) was submitted after its own creation only
    assert executor.created_at_first is not None and executor.created_at_first <= 16
    window = drv.plan.grid_window(2, 16)
    trials = study.trials()
    assert len(trials) <= window, "a Ctrl-C stops the creation; the window bounds it"
    assert outcome.interrupted == "finished" and outcome.trained == len(executor.submitted[0])
    assert all("seed" not in t.distributions for t in trials)  # type: ignore[attr-defined]


KILLED_DRIVER = """
import sys
from pathlib import Path
import yaml
from pipeline import driver as drv
from pipeline.execution import InProcessExecutor
from pipeline.progress import Reporter
from pipeline.studyspec import parse_study_spec

doc = yaml.safe_load(Path(sys.argv[1]).read_text())
spec = parse_study_spec(doc, "grid")
options = drv.RunOptions(run_dir=Path(sys.argv[2]), study_name=sys.argv[3], pack_size=4)
make = lambda: InProcessExecutor(2)  # noqa: E731
outcome = drv.Driver(spec, yaml.safe_dump(doc), options, Reporter(enabled=False), make).run()
print("trained", outcome.trained)
"""


@pytest.mark.slow
def test_a_grid_killed_mid_creation_resumes_exactly_once(tmp_path: Path) -> None:
    """SIGKILL after the 10th tell of a 120-cell grid (packs of 4, 2 slots: a window of
    16): part complete, part created RUNNING, the rest not created; a resume completes
    every point exactly once, in Optuna and in MLflow."""
    import os
    import signal
    import subprocess
    import sys

    from pipeline.faults import ENV
    from pipeline.tracking import read_trials

    doc = {"name": "killed", "sampler": "grid", "trial": TINY}
    doc["space"] = {"init": ["xavier", "uniform01"], "seed": {"low": 0, "high": 59}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(doc))
    (tmp_path / "driver.py").write_text(KILLED_DRIVER)
    run_dir = tmp_path / "run"
    args = [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "grid.yaml")]
    env = {**os.environ, ENV: "driver.after_tell:10"}
    killed = subprocess.run([*args, str(run_dir), "killed"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]

    spec = parse_study_spec(doc, "grid")
    study = Study(run_dir, spec, yaml.safe_dump(doc))
    study.name = "killed"
    study.options = drv.RunOptions(run_dir=run_dir, study_name="killed", pack_size=4)
    before = study.trials()
    states = [t.state for t in before]  # type: ignore[attr-defined]
    assert states.count(TrialState.COMPLETE) == 10
    assert states.count(TrialState.RUNNING) > 0 and len(before) <= 10 + 16 < 120

    outcome = study.driver().run()
    assert outcome.trained == 120 - 10 and outcome.failed == []
    after = study.trials()
    assert len(after) == 120 and {t.state for t in after} == {TrialState.COMPLETE}  # type: ignore[attr-defined]
    keys = sorted(t.user_attrs[st.KEY] for t in after)  # type: ignore[attr-defined]
    assert keys == sorted(spec.trial_spec(p).key("") for p in spec.grid_points())
    runs = read_trials(study.options.tracking, "killed")
    assert sorted(str(r["key"]) for r in runs) == keys
    assert {r["status"] for r in runs} == {"FINISHED"}


@pytest.mark.slow
def test_ctrl_c_while_a_big_grid_is_created_ends_the_run_at_once(tmp_path: Path) -> None:
    """SIGINT once the first trials of a 100,000-cell grid exist (a fresh run folder, so
    MLflow's store is still being made): the resume command is printed within a second or
    two (not after creating every trial, as before) and the exit code is 130."""
    import os
    import signal
    import sqlite3
    import subprocess
    import sys
    import threading
    import time

    doc = {"name": "big", "sampler": "grid", "trial": TINY}
    doc["space"] = {"init": ["xavier", "uniform01"], "seed": {"low": 0, "high": 49_999}}
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(doc))
    run_dir = tmp_path / "run"
    args = ["run", str(spec), "--run-dir", str(run_dir), "--yes", "--pack-size", "64"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "400"},
    )
    lines: list[tuple[float, str]] = []

    def read(stream: object) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append((time.monotonic(), line))

    for stream in (proc.stdout, proc.stderr):
        threading.Thread(target=read, args=(stream,), daemon=True).start()

    def created() -> int:
        try:
            with sqlite3.connect(run_dir / "optuna.db", timeout=0.1) as db:
                return int(db.execute("SELECT count(*) FROM trials").fetchone()[0])
        except sqlite3.Error:
            return 0

    deadline = time.monotonic() + 120
    while created() == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None and created() > 0, "".join(line for _, line in lines)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130
    said = [at - sent for at, line in lines if "Resume with: initstudy run" in line]
    assert said and said[0] < 3.0, (said, "".join(line for _, line in lines))
    assert created() < 200  # the creation stopped at the Ctrl-C (64 + 64 at most)
