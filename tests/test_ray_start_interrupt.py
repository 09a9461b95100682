"""A Ctrl-C while the embedded Ray starts is taken at once (issue 28, item 5).

``ray.init`` spends seconds in calls to the GCS that hold a signal until they return, so a
Ctrl-C on the main thread waited for the whole start and then for Ray's shutdown. Now Ray
starts on a host thread (:class:`pipeline.raysession.RayHost`) while the main thread waits
on an event inside :meth:`pipeline.live.Interrupts.abortable`, where the first signal
raises :class:`pipeline.live.Abandoned`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import Done

from pipeline import driver as drv
from pipeline.execution import InProcessExecutor
from pipeline.live import Abandoned, Interrupts
from pipeline.raysession import RayHost


def _signal_soon(sig: int = signal.SIGINT, after: float = 0.2) -> threading.Timer:
    """Send this process ``sig`` from another thread (as a terminal's Ctrl-C would)."""
    timer = threading.Timer(after, os.kill, args=(os.getpid(), sig))
    timer.start()
    return timer


def test_a_signal_inside_abortable_raises_once_and_outside_only_sets_the_flag() -> None:
    with Interrupts() as interrupts:
        os.kill(os.getpid(), signal.SIGINT)  # outside: a flag, nothing raised
        assert interrupts.stopping and not interrupts.stop_now
        with pytest.raises(Abandoned), interrupts.abortable():  # one that came before
            raise AssertionError("a step begun after a Ctrl-C")

    with Interrupts() as interrupts:
        with pytest.raises(Abandoned), interrupts.abortable():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)  # cut short by the handler
        assert interrupts.stopping and interrupts.how() == "finished"


def test_sigterm_inside_abortable_raises_and_counts_as_terminated() -> None:
    with Interrupts() as interrupts:
        with pytest.raises(Abandoned), interrupts.abortable():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(30)
        assert interrupts.terminated and interrupts.how() == "terminated"


def test_a_host_start_is_given_up_at_once_and_shut_down_when_its_init_returns() -> None:
    release, shut = threading.Event(), threading.Event()

    def init() -> str:
        release.wait(60)  # a start that does not return until the test says so
        return "context"

    host = RayHost()
    timer = _signal_soon()
    with Interrupts() as interrupts, pytest.raises(Abandoned), interrupts.abortable():
        host.start(init, shut.set)
    timer.join()
    assert not host.started  # the wait ended, the start did not
    host.abandon()
    assert RayHost.unwinding() and not shut.is_set()
    release.set()
    assert shut.wait(10)  # its thread shut it down once init returned
    deadline = time.monotonic() + 10
    while RayHost.unwinding() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not RayHost.unwinding()

    nxt = RayHost()  # the next host is free to start
    assert nxt.start(lambda: 42, lambda: None) == 42 and nxt.started
    nxt.close()


def test_a_failed_start_raises_in_the_caller_and_frees_the_next_host() -> None:
    host = RayHost()
    with pytest.raises(RuntimeError, match="no GCS"):
        host.start(lambda: (_ for _ in ()).throw(RuntimeError("no GCS")), lambda: None)
    host.close()
    nxt = RayHost()
    assert nxt.start(lambda: "ok", lambda: None) == "ok"
    nxt.close()


@pytest.mark.skipif(sys.platform != "linux", reason="a parent-death signal is Linux's")
def test_what_the_host_thread_starts_lives_until_the_host_closes() -> None:
    """Ray starts its processes with a parent-death signal (SIGKILL), which Linux sends
    when the *thread* that started them ends: the host thread must outlive the start."""
    import ctypes

    def die_with_parent_thread() -> None:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)

    procs: list[subprocess.Popen[bytes]] = []

    def init() -> None:
        procs.append(subprocess.Popen(["sleep", "60"], preexec_fn=die_with_parent_thread))

    host = RayHost()
    host.start(init, lambda: None)
    time.sleep(0.3)
    assert procs[0].poll() is None  # alive after start returned on the caller's thread
    host.close()  # the thread ends: the kernel kills its child
    assert procs[0].wait(10) == -signal.SIGKILL


@pytest.mark.slow  # a new run folder: MLflow's migrations
def test_a_ctrl_c_while_the_executor_starts_ends_the_run_before_any_trial(
    tmp_path: Path,
    cli_here: Callable[..., Done],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The driver's Ray start is abortable: a Ctrl-C in it ends the run with the resume
    command, having trained nothing, instead of waiting for the start to end."""
    cut: list[bool] = []

    def slow_start(*args: object, **kwargs: object) -> InProcessExecutor:
        _signal_soon(after=0.0).join()
        time.sleep(30)  # a start that takes long (a handler raising cuts it)
        cut.append(False)
        return InProcessExecutor(slots=2)

    monkeypatch.setattr(drv, "RayExecutor", slow_start)
    trial = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8, "val_size": 16}
    trial |= {"batches_per_epoch": 2, "max_epochs": 2}
    doc = {"name": "cut", "sampler": "grid", "trial": trial, "space": {"seed": [0, 1]}}
    spec = tmp_path / "cut.yaml"
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    done = cli_here("run", str(spec), "--run-dir", str(tmp_path / "run"))
    assert done.returncode == 130, done.stderr
    assert cut == []  # the start was cut short, not waited for
    assert "0 trained" in done.stdout
    assert f"Resume with: initstudy run {spec}" in done.stderr


@pytest.mark.slow
def test_ctrl_c_during_the_embedded_ray_start_leaves_nothing_running(tmp_path: Path) -> None:
    """SIGINT to ``initstudy run`` once its Ray's GCS is up and before any trial: exit 130
    with the resume command, no traceback or abort, no process left holding the session's
    folder, the folder gone; the resumed run trains every trial."""
    trial = {"task": "adding", "hidden": 4, "seq_len": 5, "batch_size": 8, "val_size": 16}
    trial |= {"batches_per_epoch": 2, "max_epochs": 2}
    doc = {"name": "start", "sampler": "grid", "trial": trial, "space": {"seed": [0, 1]}}
    spec = tmp_path / "start.yaml"
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    env = {**os.environ, "COLUMNS": "300"}
    args = [sys.executable, "-m", "pipeline.cli", "run", str(spec), "--run-dir", str(tmp_path)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    def holders(pattern: str) -> list[str]:
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        return found.stdout.split()

    folder = None  # the session folder, read off the GCS's command line (a child of the run)
    deadline = time.monotonic() + 120
    while folder is None and proc.poll() is None and time.monotonic() < deadline:
        for pid in subprocess.run(
            ["pgrep", "-P", str(proc.pid), "gcs_server"], capture_output=True, text=True
        ).stdout.split():
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            found = re.search(r"(/[^\0]*initstudy-ray-[^/]+)/", cmdline)
            folder = Path(found.group(1)) if found else None
        time.sleep(0.02)
    assert folder is not None and proc.poll() is None, "the run ended before its Ray started"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"Resume with: initstudy run" in err
    assert b"Traceback" not in err and b"terminate called" not in err
    deadline = time.monotonic() + 20  # the watchdog reaps what the driver left
    while time.monotonic() < deadline and (holders(str(folder)) or folder.exists()):
        time.sleep(0.2)
    assert holders(str(folder)) == [] and not folder.exists()

    again = subprocess.run(args, capture_output=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr.decode()
    assert b"2/2 trials complete" in again.stdout
