"""A second driver on a study that a live driver runs is refused (exit 3) and runs nothing,
also when both start at the same instant on a new run folder (one creates the storage, the
study and the lock; the other is refused, naming it)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import storage as st

from .conftest import (
    DEADLINE,
    ROOT,
    Sessions,
    assert_exactly_once,
    child_env,
    cli,
    kill_session,
    moderate_spec,
    sqlite_storage,
    sqlite_tracking,
    trained,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

EXIT_BUSY = 3
SMOKE_SPEC = ROOT / "tests" / "data" / "smoke_tiny.yaml"


def lock_holder(db: Path) -> dict[str, object] | None:
    """The driver lock in the study's user attributes, read straight from SQLite."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(db, timeout=5) as con:
            row = con.execute(
                "SELECT value_json FROM study_user_attributes WHERE key = ?", (st.DRIVER,)
            ).fetchone()
    except sqlite3.OperationalError:  # tables not created yet
        return None
    holder = json.loads(row[0]) if row else None
    return holder if isinstance(holder, dict) else None


def test_second_driver_is_refused_and_runs_nothing(tmp_path: Path, sessions: Sessions) -> None:
    spec, planned = moderate_spec(tmp_path, "busy", seeds=3)
    run_dir = tmp_path / "run"
    args = ["run", str(spec), "--run-dir", str(run_dir), "--pack-size", "1"]
    first = sessions.start(*args)
    holder = wait_for(lambda: lock_holder(run_dir / "optuna.db"), "the first driver's lock")
    assert isinstance(holder, dict) and holder["pid"] == first.pid

    second = cli(*args)
    assert first.running(), "the first driver ended before the second one tried the lock"
    assert second.returncode == EXIT_BUSY, second.stdout + second.stderr
    assert "is being run by another driver" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    assert "trained" not in second.stdout

    assert first.wait() == 0, first.output()
    assert trained(first.stdout()) == planned
    assert_exactly_once(
        "busy", planned, sqlite_storage(run_dir), sqlite_tracking(run_dir), *args[2:4]
    )


RACER = """
import pathlib, sys, time
import pipeline.cli, pipeline.driver  # imported before the start line: both start at once
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.001)
pipeline.cli.main(sys.argv[3:])
"""
"""A driver that waits at a barrier (``go`` appears) before ``initstudy ARGS``' main."""


def test_two_drivers_started_at_the_same_instant_one_wins(tmp_path: Path) -> None:
    """Two real `initstudy run` on one new run folder, released together: no raw SQL, no
    traceback; one exits 0 having run the study, the other exits 3 naming the holder. (A
    2-trial study: the race is the same, the winner's run short; the store-level race is
    repeated with threads in tests/test_stores.py.)"""
    name = "tiny"
    spec, planned = moderate_spec(tmp_path, name, seeds=1, batches=3)
    run_dir = tmp_path / "run"
    go = tmp_path / "go"
    args = ["run", str(spec), "--run-dir", str(run_dir)]
    procs: list[subprocess.Popen[str]] = []
    try:
        for i in range(2):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", RACER, str(tmp_path / f"ready{i}"), str(go), *args],
                    cwd=ROOT,
                    env=child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    start_new_session=True,
                )
            )
        wait_for(
            lambda: all((tmp_path / f"ready{i}").exists() for i in range(2)), "both ready", 120
        )
        go.touch()
        done = [p.communicate(timeout=DEADLINE) for p in procs]
    finally:
        for p in procs:
            kill_session(p.pid)
    codes = sorted((p.returncode, i) for i, p in enumerate(procs))
    report = "\n".join(
        f"--- {i}: rc {p.returncode}\n{done[i][1][-3000:]}" for i, p in enumerate(procs)
    )
    assert [c for c, _ in codes] == [0, EXIT_BUSY], report
    winner, loser = procs[codes[0][1]], codes[1][1]
    err = done[loser][1]
    errors = [line for line in err.splitlines() if line.strip()]
    assert len(errors) == 1, report
    assert errors[0].startswith(f"error: study {name!r} is being run by another driver"), report
    assert f"pid {winner.pid}" in errors[0], report
    assert "Traceback" not in err and "already exists" not in err
    assert trained(done[codes[0][1]][0]) == planned
    stores = sqlite_storage(run_dir), sqlite_tracking(run_dir)
    assert_exactly_once(name, planned, *stores, *args[2:])
