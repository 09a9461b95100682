"""`initstudy check` and `initstudy sync` on a real study (Optuna SQLite + MLflow SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Done
from mlflow.tracking import MlflowClient
from ports import free_port

from pipeline.execution import InProcessExecutor
from pipeline.tracking import read_trials

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]


TINY = """
name: tiny
sampler: grid
trial: {task: adding, hidden: 8, batches_per_epoch: 3, max_epochs: 2, val_size: 16, batch_size: 8}
space: {init: [xavier, uniform01], seq_len: [4], seed: [0, 1]}
"""


@pytest.fixture
def here(cli_here: Callable[..., Done]) -> Callable[..., Done]:
    """A command in this process (``run`` with :func:`in_process_executor`: no Ray)."""
    return cli_here


@pytest.fixture
def tiny(tmp_path: Path) -> tuple[Path, Path]:
    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY)
    return spec, tmp_path / "run"


def test_check_finds_missing_runs_and_sync_backfills_once(
    smoke_study, tmp_path: Path, here: Callable[..., Done]
) -> None:
    run_dir = smoke_study.copy_to(tmp_path / "run")
    ok = here("check", "smoke", "--run-dir", str(run_dir))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "6 complete trials, 6 MLflow runs, 6 grid points" in ok.stdout

    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    runs = read_trials(uri, "smoke")
    MlflowClient(uri).delete_run(runs[0]["run_id"])  # as if logging had never happened
    bad = here("check", "smoke", "--run-dir", str(run_dir))
    assert bad.returncode == 1
    assert f"complete trial without an MLflow run: {runs[0]['key']}" in bad.stdout

    synced = here("sync", "smoke", "--run-dir", str(run_dir))
    assert synced.returncode == 0, synced.stderr
    assert "1 runs back-filled" in synced.stdout
    assert here("check", "smoke", "--run-dir", str(run_dir)).returncode == 0
    assert "0 runs back-filled" in here("sync", "smoke", "--run-dir", str(run_dir)).stdout
    assert len(read_trials(uri, "smoke")) == 6


def test_mlflow_unreachable_keeps_results_and_backfills_later(
    tiny: tuple[Path, Path],
    here: Callable[..., Done],
    in_process_executor: list[InProcessExecutor],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Training goes on with MLflow down; `sync` logs every trial once it is back.

    The run is the CLI's ``run`` in this process, trained by the real driver on the
    in-process executor (what happens to results while MLflow is down is the driver's
    business, not Ray's; tests/reliability/test_mlflow_outage.py does it through Ray).
    MLflow goes away just after the run's start-up check found it (a server unreachable
    at start is refused: tests/test_run_refusals.py)."""
    from pipeline import studylog

    monkeypatch.setattr(studylog, "experiment_deleted", lambda uri, name: False)
    spec, run_dir = tiny
    dead = f"http://127.0.0.1:{free_port()}"
    down = here("run", str(spec), "--run-dir", str(run_dir), "--tracking-uri", dead)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "MLflow is unreachable" in down.stderr
    assert "4/4 trials complete" in down.stdout
    assert sum(len(pack) for e in in_process_executor for pack in e.submitted) == 4

    status = here("status", "tiny", "--run-dir", str(run_dir))
    assert "complete" in status.stdout
    # MLflow "comes back" as the run folder's store: the results wait in Optuna.
    synced = here("sync", "tiny", "--run-dir", str(run_dir))
    assert synced.returncode == 0, synced.stderr
    assert "4 runs back-filled" in synced.stdout
    assert here("check", "tiny", "--run-dir", str(run_dir)).returncode == 0


def test_check_and_sync_refuse_an_unknown_study(
    smoke_study, tmp_path: Path, here: Callable[..., Done]
) -> None:
    run_dir = smoke_study.copy_to(tmp_path / "run")
    for command in ("check", "sync", "status", "results"):
        proc = here(command, "nope", "--run-dir", str(run_dir))
        assert proc.returncode == 2, command
        assert "no study named 'nope'" in proc.stderr and "smoke" in proc.stderr
