"""The driver SIGKILLed at exact points of a trial's life (pipeline/faults.py failpoints):
rerunning ``initstudy run`` resumes with nothing lost and nothing done twice."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from optuna.trial import TrialState

from pipeline import storage as st
from pipeline.faults import ENV, FAILPOINTS
from pipeline.tracking import read_trials

from .conftest import (
    Sessions,
    assert_exactly_once,
    cli,
    kill_session,
    moderate_spec,
    sqlite_storage,
    sqlite_tracking,
    trained,
    trials_of,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]


@pytest.mark.parametrize("point", FAILPOINTS)
def test_driver_killed_at_a_failpoint_resumes_exactly_once(
    point: str, tmp_path: Path, sessions: Sessions
) -> None:
    spec, planned = moderate_spec(tmp_path, "killed")
    run_dir = tmp_path / "run"
    storage, tracking = sqlite_storage(run_dir), sqlite_tracking(run_dir)
    args = ["run", str(spec), "--run-dir", str(run_dir), "--pack-size", "1"]

    driver = sessions.start(*args, env={ENV: point})
    assert driver.wait() == -signal.SIGKILL, f"the failpoint did not fire\n{driver.output()}"
    kill_session(driver.pid)  # the embedded Ray the driver left behind

    before = trials_of(storage, "killed")
    complete = [t for t in before if t.state == TrialState.COMPLETE]
    stored = [t for t in before if t.state == TrialState.RUNNING and st.RESULT in t.user_attrs]
    runs = read_trials(tracking, "killed")
    finished = {r["key"] for r in runs if r["status"] == "FINISHED"}
    if point == "driver.before_tell":  # the result is on the trial, the trial not told
        assert len(stored) == 1 and not complete
    elif point == "driver.after_tell":  # told, not logged
        assert len(complete) == 1 and not stored
        assert complete[0].user_attrs[st.KEY] not in finished
    else:  # tracking.before_finish: the MLflow run exists but is not FINISHED
        assert len(complete) == 1 and not finished
        # its run, and the live runs of the packs still training then, are RUNNING
        assert runs and all(r["status"] == "RUNNING" for r in runs)

    resumed = cli(*args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    # A result stored before the kill is told without retraining; nothing else is lost.
    assert trained(resumed.stdout) == planned - len(complete) - len(stored)
    after = {
        t.number: t for t in assert_exactly_once("killed", planned, storage, tracking, *args[2:4])
    }
    for t in stored + complete:
        assert after[t.number].user_attrs[st.RESULT] == t.user_attrs[st.RESULT]
