"""``initstudy list`` and ``initstudy delete`` on a copy of the session's smoke study."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from conftest import Done, SmokeRun

from pipeline import storage as st
from pipeline.tracking import Tracker, read_trials


@pytest.fixture
def run_dir(smoke_study: SmokeRun, tmp_path: Path) -> Path:
    return smoke_study.copy_to(tmp_path / "runs")


def names(run_dir: Path) -> list[str]:
    return st.study_names(st.make_storage(f"sqlite:///{run_dir / 'optuna.db'}"))


def test_list_shows_each_study_with_its_counts(
    cli_here: Callable[..., Done], run_dir: Path
) -> None:
    done = cli_here("list", "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr
    row = next(ln for ln in done.stdout.splitlines() if "smoke" in ln)
    cells = [c.strip() for c in row.strip().strip("│").split("│")]
    assert cells == ["smoke", "", "6", "6", "0", "0"]  # study, stage, planned, complete, ...


def test_delete_with_yes_removes_the_study_and_frees_its_name(
    cli_here: Callable[..., Done], run_dir: Path
) -> None:
    uri = f"sqlite:///{run_dir / 'mlflow.db'}"
    assert len(read_trials(uri, "smoke")) == 6
    done = cli_here("delete", "smoke", "--run-dir", str(run_dir), "--yes")
    assert done.returncode == 0, done.stderr
    assert "deleted study 'smoke' (6 complete of 6 planned trials)" in done.stdout
    assert names(run_dir) == []
    assert Tracker(uri).experiment_id_of("smoke") is None
    # the name is free again: a new study of that name can open its experiment
    assert Tracker(uri).open_study("smoke", "name: smoke\n", {}, {})
    again = cli_here("delete", "smoke", "--run-dir", str(run_dir), "--yes")
    assert again.returncode == 2 and "no study named 'smoke'" in again.stderr


def test_delete_asks_and_a_no_deletes_nothing(
    cli_here: Callable[..., Done], run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    done = cli_here("delete", "smoke", "--run-dir", str(run_dir))
    assert done.returncode == 2 and "not deleted" in done.stderr
    assert "delete study 'smoke'" in done.stdout  # the question
    assert names(run_dir) == ["smoke"]
    assert len(read_trials(f"sqlite:///{run_dir / 'mlflow.db'}", "smoke")) == 6


def test_a_study_with_a_live_driver_is_not_deleted(
    cli_here: Callable[..., Done], run_dir: Path
) -> None:
    storage = st.make_storage(f"sqlite:///{run_dir / 'optuna.db'}")
    study = optuna.load_study(study_name="smoke", storage=storage)
    study.set_user_attr(st.DRIVER, {"host": "elsewhere", "pid": 1, "heartbeat": time.time()})
    done = cli_here("delete", "smoke", "--run-dir", str(run_dir), "--yes")
    assert done.returncode == 3 and "being run by a driver" in done.stderr
    assert names(run_dir) == ["smoke"]
