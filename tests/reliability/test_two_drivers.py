"""A second driver on a study that a live driver runs is refused (exit 3) and runs nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pipeline import storage as st

from .conftest import (
    Sessions,
    assert_exactly_once,
    cli,
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
