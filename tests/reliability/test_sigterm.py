"""SIGTERM to a driver whose embedded Ray trains: ``ray.init`` installs its own SIGTERM
handler (a silent ``sys.exit(15)``); the driver takes it back, so the run stops the
running trials, says what Ctrl-C says (the command that resumes) and exits 143, and the
resume finishes every trial exactly once."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from .conftest import (
    Sessions,
    assert_exactly_once,
    cli,
    moderate_spec,
    session_pids,
    sqlite_storage,
    sqlite_tracking,
    wait_for,
)
from .test_worker_killed import training_worker

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]


def test_sigterm_on_ray_stops_the_run_and_prints_the_resume_command(
    tmp_path: Path, sessions: Sessions
) -> None:
    spec, planned = moderate_spec(tmp_path, "sigterm", batches=200)
    run_dir = tmp_path / "run"
    store_args = ("--run-dir", str(run_dir))
    driver = sessions.start("run", str(spec), *store_args, "--pack-size", "1")
    wait_for(lambda: training_worker(driver.pid), "a worker training a pack")
    os.kill(driver.pid, signal.SIGTERM)
    assert driver.wait() == 143, driver.output()
    err = driver.stderr()
    assert "SIGTERM: stopping the running trials now" in err, driver.output()
    assert "interrupted (SIGTERM: the running trials were stopped)" in err
    assert f"Resume with: initstudy run {spec} --run-dir {run_dir}" in err
    wait_for(lambda: not session_pids(driver.pid), "the run's Ray processes to end", 30)

    again = cli("run", str(spec), *store_args)
    assert again.returncode == 0, again.stdout + again.stderr
    tracking = sqlite_tracking(run_dir)
    assert_exactly_once("sigterm", planned, sqlite_storage(run_dir), tracking, *store_args)
