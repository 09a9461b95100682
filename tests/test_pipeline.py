"""End-to-end studies through the real CLI: a real Ray runtime, Optuna SQLite storage and
MLflow SQLite store. The smoke study is the session's (tests/conftest.py), read in place
and copied where a test writes to it; the other studies run in each test's own folder.

A study run (the smoke study, its rerun) is a real ``initstudy`` process; the commands that
only read a study or refuse their input run ``pipeline.cli.main`` in this process
(tests/conftest.py's ``invoke_cli``), where nothing can train: the driver's executor is
the in-process one, and a refusal must not have made one."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import Done, SmokeRun
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from pipeline import storage as st
from pipeline.execution import InProcessExecutor
from pipeline.studyspec import load_study_spec

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "tests" / "data" / "smoke_tiny.yaml"
CLI = [sys.executable, "-m", "pipeline.cli"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, check=False
    )


def optuna_trials(run_dir: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{run_dir / 'optuna.db'}")
    return optuna.load_study(study_name=study, storage=storage).get_trials()


@pytest.fixture
def here(
    cli_here: Callable[..., Done],
    monkeypatch: pytest.MonkeyPatch,
    in_process_executor: list[InProcessExecutor],
) -> Callable[..., Done]:
    """A command in this process, in the repository root (as :func:`cli`): the same
    ``main`` as the console script, without a second interpreter's start-up."""
    monkeypatch.chdir(ROOT)
    return cli_here


def mlflow_trial_runs(run_dir: Path, study: str) -> list[dict]:
    """Child runs as MLflow's client reads them from the store (written by another
    process: the CLI's)."""
    client = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(study)
    assert experiment is not None
    found = client.search_runs(
        [experiment.experiment_id], "tags.`initstudy.kind` = 'trial'", max_results=1000
    )
    return [
        {
            "key": r.data.tags["initstudy.trial_key"],
            "status": r.info.status,
            "init": r.data.params["init"],
            "seed": r.data.params["seed"],
            "val_loss": r.data.metrics["val_loss"],
            "converged": r.data.metrics["converged"],
        }
        for r in found
    ]


def assert_exactly_once(run_dir: Path, study: str, planned: int) -> list[dict]:
    """Each planned trial complete once in Optuna, one finished MLflow run each; the runs."""
    trials = optuna_trials(run_dir, study)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == planned
    keys = [t.user_attrs[st.KEY] for t in complete]
    assert len(set(keys)) == planned
    assert all(t.user_attrs.get(st.RESULT) for t in complete)
    runs = mlflow_trial_runs(run_dir, study)
    assert len(runs) == planned
    assert sorted(r["key"] for r in runs) == sorted(keys)
    assert {r["status"] for r in runs} == {"FINISHED"}
    return runs


def test_smoke_study_end_to_end_and_rerun(
    smoke_study: SmokeRun, tmp_path: Path, here: Callable[..., Done]
) -> None:
    """The session's smoke study (tests/conftest.py), then a rerun on a copy of it."""
    spec = load_study_spec(SMOKE)
    planned = spec.n_trials_planned
    assert f"{planned}/{planned} trials complete" in smoke_study.stdout
    runs = assert_exactly_once(smoke_study.run_dir, "smoke", planned)
    assert {r["init"] for r in runs} == {"xavier", "uniform01"}
    assert all(r["val_loss"] > 0 for r in runs)
    grid = {(p["init"], str(p["seed"])) for p in spec.grid_points()}
    assert {(r["init"], r["seed"]) for r in runs} == grid

    run_dir = smoke_study.copy_to(tmp_path / "runs")  # the rerun writes: not the shared one
    again = cli("run", str(SMOKE), "--run-dir", str(run_dir))
    assert again.returncode == 0, again.stderr
    assert "0 trained and 0 logged" in again.stdout
    assert_exactly_once(run_dir, "smoke", planned)

    status = here("status", "smoke", "--run-dir", str(run_dir))
    assert status.returncode == 0
    assert "complete" in status.stdout and str(planned) in status.stdout

    # The study's own results are the pilot for the power estimate.
    validate = here("validate", str(SMOKE), "--run-dir", str(run_dir))
    assert validate.returncode == 0, validate.stderr
    assert "seeds per cell: 3" in validate.stdout
    # uniform01 is frozen at hidden 32 in this fixture: no seed count or budget helps.
    assert "power: uniform01 is frozen" in validate.stdout


def test_run_ends_with_the_verdict_table(smoke_study: SmokeRun, here: Callable[..., Done]) -> None:
    """The session's smoke study (tests/conftest.py): what its run printed and wrote; the
    queries only read its run folder."""
    out = smoke_study.stdout
    assert "6 trained" in out
    assert "Claim verdicts" in out
    # No claims: list, so the claims its data can measure: C1 (Xavier's init diagnostics)
    # and C4 (xavier vs uniform01). One hidden size, no gain sweep, 3 seeds: no C2, C3, C5, C6.
    assert "C1" in out and "C4" in out
    for claim in ("C2", "C3", "C5", "C6"):
        assert claim not in out
    run_dir = smoke_study.run_dir
    written = json.loads((run_dir / "reports" / "smoke" / "verdicts.json").read_text())
    assert [v["id"] for v in written] == ["C1", "C4"]
    c4 = written[1]
    assert c4["verdict"] == "inconclusive"  # 3 seeds per arm is below the minimum
    assert [c["classification"] for c in c4["numbers"]["cells"]] == ["n too small"]
    query = here(
        "query",
        "smoke",
        "SELECT init, count(*) AS n FROM trials GROUP BY init ORDER BY init",
        "--format",
        "csv",
        "--run-dir",
        str(run_dir),
    )
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines() == ["init,n", "uniform01,3", "xavier,3"]
    bad = here("query", "smoke", "SELEC nonsense", "--run-dir", str(run_dir))
    assert bad.returncode == 2 and "syntax error" in bad.stderr.lower()  # bad input


def test_changed_spec_is_refused_with_a_way_out(
    smoke_study: SmokeRun,
    tmp_path: Path,
    here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
) -> None:
    """The CLI's side: exit 2 and one line naming --study-name, nothing added (the
    driver's side, and a renamed study running, is in tests/test_driver.py)."""
    run_dir = smoke_study.copy_to(tmp_path / "r")
    changed = tmp_path / "smoke.yaml"
    text = (ROOT / "tests" / "data" / "smoke_tiny.yaml").read_text(encoding="utf-8")
    assert "max_epochs: 12" in text
    changed.write_text(text.replace("max_epochs: 12", "max_epochs: 11"), encoding="utf-8")
    refused = here("run", str(changed), "--run-dir", str(run_dir))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "different spec" in refused.stderr and "--study-name" in refused.stderr
    assert len(optuna_trials(run_dir, "smoke")) == 6
    assert in_process_executor == [], "nothing may start for a refused spec"


def test_validate_every_shipped_spec(here: Callable[..., Done]) -> None:
    shipped = sorted((ROOT / "studies").rglob("*.yaml"))
    assert shipped
    for path in shipped:
        proc = here("validate", str(path))
        assert proc.returncode == 0, proc.stderr
        planned = load_study_spec(path).n_trials_planned
        assert f"trials: {planned}" in proc.stdout


def test_bad_spec_creates_nothing(
    tmp_path: Path, here: Callable[..., Done], in_process_executor: list[InProcessExecutor]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nsampler: grid\nspace: {init: [xavier, bogus]}\n")
    run_dir = tmp_path / "runs"
    for command in (["validate", str(bad)], ["run", str(bad), "--run-dir", str(run_dir)]):
        proc = here(*command)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "space.init" in proc.stderr and "xavier" in proc.stderr
    assert not run_dir.exists()
    assert in_process_executor == []


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--workers", "0"], "--workers"),
        (["--pack-size", "0"], "--pack-size"),
        (["--cpus-per-trial", "0"], "--cpus-per-trial"),
        (["--storage", "mongodb://x"], "--storage"),
        (["--tracking-uri", "ftp://x"], "--tracking-uri"),
        (["--study-name", "../escape"], "--study-name"),
    ],
)
def test_bad_run_flags_exit_2_before_anything_starts(
    flags: list[str],
    expected: str,
    tmp_path: Path,
    here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
) -> None:
    run_dir = tmp_path / "runs"
    proc = here("run", str(SMOKE), "--run-dir", str(run_dir), *flags)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expected in proc.stderr
    assert not run_dir.exists()
    assert in_process_executor == []
