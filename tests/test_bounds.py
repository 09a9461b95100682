"""Bounds on what a user passes (issue 16): a charlm corpus must be a regular file of at
most 64 MiB, a study's largest pack must fit in memory, and ``ui --port`` must be a port.
Each is refused with one ``error:`` line, exit 2, before any store is created."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from pipeline import frontend
from pipeline.specerrors import SpecError
from pipeline.studyspec import StudySpec

SPEC = """\
name: bounds
sampler: grid
space:
  init: [xavier]
  seed: [0, 1]
trial:
  max_epochs: 1
  batches_per_epoch: 1
{extra}"""


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail a test that blocks (a FIFO opened for reading blocks until a writer comes)."""

    def stop(signum: int, frame: object) -> None:
        raise TimeoutError("blocked for 20 s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _one_error_line(done: Any, *words: str) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for word in words:
        assert word in lines[0], lines[0]
    return str(lines[0])


def _spec(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.format(extra=extra), encoding="utf-8")
    return path


# -- the corpus --------------------------------------------------------------------------


def _fifo(tmp_path: Path) -> Path:
    fifo = tmp_path / "pipe.txt"
    os.mkfifo(fifo)
    return fifo


@pytest.mark.parametrize("kind", ["device", "fifo", "too-large"])
def test_trial_corpus_must_be_a_small_regular_file(
    kind: str, tmp_path: Path, cli_here: Callable[..., Any], alarm: None
) -> None:
    if kind == "device":
        corpus, words = "/dev/zero", ("--corpus", "is a device, not a regular file")
    elif kind == "fifo":
        corpus, words = str(_fifo(tmp_path)), ("--corpus", "is a FIFO (named pipe)")
    else:
        big = tmp_path / "big.txt"
        with big.open("wb") as f:
            f.truncate(65 * 2**20)  # sparse: nothing is written or read
        corpus, words = str(big), ("--corpus", "too large", "at most 67,108,864 bytes (64 MiB)")
    done = cli_here("trial", "--task", "charlm", "--seq-len", "5", "--corpus", corpus)
    _one_error_line(done, *words)


@pytest.mark.parametrize("command", ["validate", "run"])
def test_spec_corpus_fifo_refused_before_any_store(
    command: str,
    tmp_path: Path,
    cli_here: Callable[..., Any],
    alarm: None,
    in_process_executor: list[Any],
) -> None:
    fifo = _fifo(tmp_path)
    spec = _spec(tmp_path, f"  task: charlm\n  seq_len: 5\n  corpus: '{fifo}'\n")
    run_dir = tmp_path / "runs"
    done = cli_here(command, str(spec), "--run-dir", str(run_dir))
    _one_error_line(done, "trial.corpus", "is a FIFO (named pipe), not a regular file")
    assert not run_dir.exists() and in_process_executor == []


# -- the memory gate ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run"])
def test_study_too_large_for_memory_refused_before_any_store(
    command: str,
    tmp_path: Path,
    cli_here: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
    in_process_executor: list[Any],
) -> None:
    monkeypatch.setattr(frontend, "machine_memory_bytes", lambda: 2 * 2**30)
    spec = _spec(tmp_path, "  seq_len: 200\n  hidden: 128\n  val_size: 16000\n")
    run_dir = tmp_path / "runs"
    done = cli_here(command, str(spec), "--run-dir", str(run_dir))
    line = _one_error_line(done, "memory: one adding rnn_tanh trial", "val_size=16,000")
    assert "more than the 1.6 GiB allowed (80% of this machine's 2.0 GiB)" in line
    assert "lower val_size or batch_size or seq_len or hidden" in line
    assert not run_dir.exists() and in_process_executor == []


def test_small_study_passes_the_memory_gate(
    tmp_path: Path, cli_here: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontend, "machine_memory_bytes", lambda: 2 * 2**30)
    done = cli_here("validate", str(_spec(tmp_path, "  seq_len: 20\n")))
    assert done.returncode == 0, done.stderr
    assert "ok - study 'bounds'" in done.stdout


class _Loose:
    """A study spec as if the field bounds allowed anything (duck-typed for check_memory)."""

    def __init__(self, **values: Any) -> None:
        self._values = {"task": "adding", "cell": "rnn_tanh", "corpus": None, "seq_len": 30,
                        "hidden": 64, "batch_size": 32, "val_size": 1024, **values}  # fmt: skip
        self.n_trials_planned = 16

    def values(self, name: str) -> list[Any]:
        return [self._values[name]]


def test_val_size_of_a_hundred_million_is_refused_by_the_gate_alone() -> None:
    # even with no field bound on val_size, the gate refuses it on any real machine
    with pytest.raises(SpecError) as info:
        frontend.check_memory(
            cast(StudySpec, _Loose(val_size=100_000_000)), "s.yaml", one_trial=True
        )
    message = str(info.value)
    assert message.startswith("s.yaml: memory: one adding rnn_tanh trial at val_size=100,000,000")
    assert "TiB" not in message and "\n" not in message
    need = float(message.split("needs about ")[1].split(" GiB")[0].replace(",", ""))
    assert need > 1000  # terabytes: the whole validation set is held at once


def test_memory_per_task_and_pack_size() -> None:
    spec = cast(StudySpec, _Loose(seq_len=100, hidden=128, val_size=4096))
    # 4 members need about 2.6 GiB, 5 about 3.2: 4 GiB a task holds a pack of 4, not the
    # automatic 16 (on a GPU; on a CPU the work budget already makes it 2)
    frontend.check_memory(spec, "s.yaml", pack_size=4, memory_per_task=4.0)
    with pytest.raises(SpecError) as info:
        frontend.check_memory(spec, "s.yaml", memory_per_task=4.0, gpu=True)
    message = str(info.value)
    assert "a pack of 16 adding rnn_tanh trials" in message
    assert (
        "(80% of --memory-per-task's 4.0 GiB); give --pack-size 4 or more --memory-per-task"
        in message
    )
    with pytest.raises(SpecError, match="lower val_size or batch_size"):
        frontend.check_memory(spec, "s.yaml", pack_size=2, memory_per_task=1.0)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"^memory_per_task: a positive number of GiB"):
            frontend.check_memory(spec, "s.yaml", memory_per_task=bad, label=frontend.api_option)


def test_machine_memory_is_known() -> None:
    total = frontend.machine_memory_bytes()
    assert total is not None and total > 2**28


# -- ui --port ---------------------------------------------------------------------------


@pytest.mark.parametrize("port", ["70000", "0", "-1", "65536"])
def test_ui_port_out_of_range(port: str, tmp_path: Path, cli_here: Callable[..., Any]) -> None:
    done = cli_here("ui", "smoke", "--run-dir", str(tmp_path / "runs"), "--port", port)
    _one_error_line(done, f"--port: a port from 1 to 65535, got {port}")
    assert not (tmp_path / "runs").exists()


def test_run_and_the_api_refuse_the_same_pack_that_would_not_fit(
    tmp_path: Path, cli_here: Callable[..., Any], in_process_executor: list[Any]
) -> None:
    """One run path: ``run`` and ``api.run_study`` make the same checks before a study
    starts (``frontend.before_run``), so a pack of 16 that needs more memory than a task
    may use is refused by both, with the same words, nothing created."""
    import yaml

    from pipeline import api

    trial = {"task": "adding", "seq_len": 100, "hidden": 128, "val_size": 4096}
    doc = {"name": "big", "sampler": "grid", "trial": trial, "space": {"seed": list(range(16))}}
    spec = tmp_path / "big.yaml"
    spec.write_text(yaml.safe_dump(doc), encoding="utf-8")
    run_dir = tmp_path / "run"
    args = ("run", str(spec), "--run-dir", str(run_dir), "--pack-size", "16")
    done = cli_here(*args, "--memory-per-task", "4")
    assert done.returncode == 2
    assert "a pack of 16 adding rnn_tanh trials" in done.stderr
    with pytest.raises(SpecError, match="a pack of 16 adding rnn_tanh trials") as info:
        api.run_study(spec, run_dir=run_dir, pack_size=16, memory_per_task=4.0)
    assert "memory_per_task's 4.0 GiB" in str(info.value)
    assert not run_dir.exists() and not in_process_executor
