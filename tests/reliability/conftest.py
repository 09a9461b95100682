"""Helpers for the reliability tests: studies run through the real CLI in the background,
their processes (the driver and its embedded Ray) found and killed by session, and the one
check every test ends with: each planned trial complete exactly once in Optuna, with
exactly one finished MLflow run, and ``initstudy check`` passing.

Every driver is started in its own session; Ray's processes stay in it, so killing the
session ends the driver and its Ray and nothing else on the machine (other studies, other
tests' Ray instances). Waits poll with generous deadlines: the machine may be slow.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from pipeline import storage as st
from pipeline import urls
from pipeline.faults import ENV as FAILPOINT_ENV
from pipeline.tracking import read_trials

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pipeline.cli"]
IN_CI = os.environ.get("CI", "").lower() == "true"

DEADLINE = 240.0
"""Seconds any one wait may take before the test fails (a loaded 2-core machine is slow)."""

MODERATE = """
name: {name}
sampler: grid
trial: {{task: adding, hidden: 32, batches_per_epoch: {batches}, max_epochs: 2,
        target_loss: 1.0e-9, val_size: 32, batch_size: 16}}
space: {{init: [xavier, uniform01], seq_len: [20], seed: {seeds}}}
"""
"""A grid of 2 x len(seeds) trials that never converge (target 1e-9), so each trains its
full budget: about 0.03 s per batch on one core of an idle machine."""


def moderate_spec(folder: Path, name: str, seeds: int = 2, batches: int = 30) -> tuple[Path, int]:
    """Write a study spec of ``2 * seeds`` trials; return its path and trial count."""
    path = folder / f"{name}.yaml"
    path.write_text(MODERATE.format(name=name, batches=batches, seeds=list(range(seeds))))
    return path, 2 * seeds


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = DEADLINE
) -> subprocess.CompletedProcess[str]:
    """Run ``initstudy ARGS`` to completion in the repository root."""
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=child_env(env),
        check=False,
    )


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without a failpoint, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k != FAILPOINT_ENV}
    env.update(extra or {})
    return env


@dataclass
class Background:
    """A CLI command running in its own session, its output going to files."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float = DEADLINE) -> int:
        return self.proc.wait(timeout=timeout)

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def output(self) -> str:
        """Both streams, for assertion messages."""
        return f"--- stdout\n{self.stdout()[-4000:]}\n--- stderr\n{self.stderr()[-4000:]}"


class Sessions:
    """Starts background commands and, at teardown, kills whatever is left of them."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[Background] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> Background:
        n = len(self.started)
        out, err = self.folder / f"bg{n}.out", self.folder / f"bg{n}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                [*CLI, *args],
                cwd=ROOT,
                env=child_env(env),
                stdin=subprocess.DEVNULL,
                stdout=o,
                stderr=e,
                start_new_session=True,
            )
        bg = Background(proc, out, err)
        self.started.append(bg)
        return bg

    def kill_all(self) -> None:
        for bg in self.started:
            kill_session(bg.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                bg.proc.wait(timeout=30)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[Sessions]:
    started = Sessions(tmp_path)
    try:
        yield started
    finally:
        started.kill_all()


# -- processes ------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, session id) of a process, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[3])


def session_pids(sid: int) -> list[int]:
    """Live (non-zombie) processes of session ``sid``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == sid and stat[0] != "Z":
                pids.append(int(entry.name))
    return pids


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid`` (a driver and its embedded Ray)."""
    for _ in range(3):  # processes forked while we kill are caught on the next pass
        pids = session_pids(sid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not session_pids(sid), f"session {sid} to exit", 30)


def wait_for(check: Callable[[], object], what: str, timeout: float = DEADLINE) -> object:
    """Poll ``check`` until it returns something truthy; return that, or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


# -- the stores -----------------------------------------------------------------------------


def sqlite_storage(run_dir: Path) -> str:
    return urls.default_storage_url(run_dir)


def sqlite_tracking(run_dir: Path) -> str:
    return f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"


def trials_of(storage_url: str, study: str) -> list[FrozenTrial]:
    """Every trial of the study (empty if the study does not exist yet)."""
    storage = optuna.storages.RDBStorage(storage_url)
    try:
        names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
        if study not in names:
            return []
        return optuna.load_study(study_name=study, storage=storage).get_trials()
    finally:
        storage.remove_session()
        storage.engine.dispose()


def count_complete(storage_url: str, study: str) -> int:
    """Complete trials, 0 while the storage is not readable yet (being created)."""
    try:
        return sum(t.state == TrialState.COMPLETE for t in trials_of(storage_url, study))
    except Exception:  # the driver is still creating the storage's tables
        return 0


def trained(stdout: str) -> int:
    """N from the run's summary line '... N trained and M logged by this run'."""
    found = re.search(r"(\d+) trained and (\d+) logged by this run", stdout)
    assert found, f"no summary line in:\n{stdout[-3000:]}"
    return int(found.group(1))


def check_cli(study: str, *store_args: str) -> None:
    proc = cli("check", study, *store_args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "consistent" in proc.stdout


def assert_exactly_once(
    study: str, planned: int, storage_url: str, tracking_uri: str, *store_args: str
) -> list[FrozenTrial]:
    """Every planned trial COMPLETE once in Optuna with its result, no other trials; one
    FINISHED MLflow run per trial key; ``initstudy check`` (with ``store_args``) passes."""
    trials = trials_of(storage_url, study)
    states = [t.state.name for t in trials]
    assert len(trials) == planned, states
    assert all(t.state == TrialState.COMPLETE for t in trials), states
    keys = [t.user_attrs[st.KEY] for t in trials]
    assert len(set(keys)) == planned
    assert all(t.user_attrs.get(st.RESULT) for t in trials)
    runs = read_trials(tracking_uri, study)
    assert sorted(r["key"] for r in runs) == sorted(keys)
    assert {r["status"] for r in runs} == {"FINISHED"}
    check_cli(study, *store_args)
    return trials
