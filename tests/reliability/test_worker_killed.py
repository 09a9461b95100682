"""A Ray worker SIGKILLed while it trains a pack: Ray retries the pack
(pipeline.execution.MAX_RETRIES) and the study ends with every trial exactly once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .conftest import (
    Sessions,
    assert_exactly_once,
    cmdline,
    moderate_spec,
    session_pids,
    sqlite_storage,
    sqlite_tracking,
    trained,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

TASK_TITLE = "ray::_train_pack_on_worker"
"""What Ray names a worker process while it runs pipeline.execution's task."""


def training_worker(sid: int) -> int | None:
    """A worker of this driver's Ray (its session) that is training a pack right now."""
    return next((p for p in session_pids(sid) if cmdline(p).startswith(TASK_TITLE)), None)


def test_worker_killed_mid_trial_is_retried(tmp_path: Path, sessions: Sessions) -> None:
    # Each trial trains ~2 s on an idle core (longer on a loaded one): time to catch it.
    spec, planned = moderate_spec(tmp_path, "workerkill", batches=60)
    run_dir = tmp_path / "run"
    driver = sessions.start("run", str(spec), "--run-dir", str(run_dir), "--pack-size", "1")

    def victim() -> int | None:
        assert driver.running(), f"the study ended before a worker was caught\n{driver.output()}"
        return training_worker(driver.pid)

    pid = wait_for(victim, "a Ray worker training a pack")
    assert isinstance(pid, int)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: cmdline(pid) == "", "the killed worker to go")

    assert driver.wait() == 0, driver.output()
    assert "failed:" not in driver.stderr()
    assert trained(driver.stdout()) == planned
    assert_exactly_once(
        "workerkill",
        planned,
        sqlite_storage(run_dir),
        sqlite_tracking(run_dir),
        "--run-dir",
        str(run_dir),
    )
