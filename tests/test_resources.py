"""Requests an embedded Ray could never place are refused before any store is touched."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Done

from pipeline.driver import RunOptions
from pipeline.resources import check_embedded, machine_cpus, machine_gpus
from pipeline.storage import StudyError

SMOKE = Path(__file__).resolve().parent / "data" / "smoke_tiny.yaml"


def _refused(done: Done, run_dir: Path, says: str) -> None:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], lines
    assert not (run_dir / "optuna.db").exists() and not (run_dir / "mlflow.db").exists()


def test_more_cpus_per_trial_than_the_machine_is_refused_before_any_store(
    tmp_path: Path, cli_here: Callable[..., Done]
) -> None:
    run_dir = tmp_path / "run"
    asked = machine_cpus() * 32
    done = cli_here("run", str(SMOKE), "--run-dir", str(run_dir), "--cpus-per-trial", str(asked))
    _refused(done, run_dir, f"--cpus-per-trial: {asked} asked for, but the embedded Ray has")


@pytest.mark.skipif(machine_gpus() > 0, reason="this machine has a GPU")
def test_a_gpu_on_a_machine_without_one_is_refused_before_any_store(
    tmp_path: Path, cli_here: Callable[..., Done]
) -> None:
    run_dir = tmp_path / "run"
    done = cli_here("run", str(SMOKE), "--run-dir", str(run_dir), "--gpus-per-trial", "1")
    _refused(done, run_dir, "--gpus-per-trial: 1 asked for, but this machine has no GPU")


def test_workers_beyond_the_machines_cpus_are_capped_with_a_warning() -> None:
    notes: list[str] = []
    have = machine_cpus()
    assert check_embedded(RunOptions(workers=10_000), notes.append) == have
    assert notes == [f"--workers 10000 is more than the {have} CPUs here; using {have}"]
    assert check_embedded(RunOptions(workers=1), notes.append) == 1 and len(notes) == 1
    assert check_embedded(RunOptions(), notes.append) is None
    with pytest.raises(StudyError, match="--workers or this machine's"):
        check_embedded(RunOptions(workers=1, cpus_per_trial=2), notes.append)


@pytest.mark.slow  # it imports Ray: seconds
def test_the_run_command_caps_workers_at_the_machines_cpus(
    tmp_path: Path,
    cli_here: Callable[..., Done],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``run --workers 1000`` on a small machine: the embedded Ray is asked for the CPUs
    there (not 1,000 worker slots), with one warning. (The study stops when it would
    start Ray: what Ray was asked for is all this test needs.)"""
    from pipeline import driver

    given: list[object] = []

    class Asked(Exception):
        pass

    def make(address: object, workers: object, *rest: object) -> None:
        given.append(workers)
        raise Asked

    monkeypatch.setattr(driver, "RayExecutor", make)
    with pytest.raises(Asked):
        cli_here("run", str(SMOKE), "--run-dir", str(tmp_path / "run"), "--workers", "1000")
    have = machine_cpus()
    assert given == [have]
    said = f"--workers 1000 is more than the {have} CPUs here; using {have}"
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count(said) == 1


def test_an_address_nothing_answers_at_is_refused_at_once_before_any_store(
    tmp_path: Path, cli_here: Callable[..., Done]
) -> None:
    import time

    from ports import free_port

    run_dir = tmp_path / "run"
    started = time.monotonic()
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done = cli_here("run", str(SMOKE), "--run-dir", str(run_dir), "--address", address)
    _refused(done, run_dir, f"--address: cannot reach a Ray cluster at {address}")
    assert time.monotonic() - started < 15
