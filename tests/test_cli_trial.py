"""`initstudy trial`: one trial from the command line.

Trials, the help text and two refusals run as a real subprocess (exit code and stderr of a
real process); the table of bad inputs runs ``pipeline.cli.main`` in this process (the
console script's own entry point, see tests/conftest.py's ``invoke_cli``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import invoke_cli

from models.fields import FIELDS
from pipeline.cli.trial import option_name

CLI = [sys.executable, "-m", "pipeline.cli"]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd, check=False
    )


def trial_json(*args: str) -> dict:
    proc = run_cli(
        "trial", "--task", "adding", "--seq-len", "10", "--hidden", "64", *args, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow  # a real `initstudy` process
def test_xavier_converges_within_the_default_budget() -> None:
    result = trial_json("--init", "xavier")
    assert result["converged_epoch"] is not None
    assert result["converged_epoch"] <= result["spec"]["max_epochs"]
    assert result["diverged_epoch"] is None
    assert result["history"][-1]["val_loss"] <= result["target_loss"]


@pytest.mark.slow  # a real `initstudy` process
def test_uniform01_is_censored_or_diverged_not_an_error() -> None:
    result = trial_json("--init", "uniform01")
    assert result["converged_epoch"] is None
    assert result["diagnostics"]["spectral_radius"] > 20  # about H/2 = 32


@pytest.mark.slow  # a real `initstudy` process
def test_absurd_scale_is_a_result_with_exit_code_zero() -> None:
    result = trial_json("--init", "xavier", "--scale", "1e6")
    assert result["diverged_epoch"] == 1
    assert result["converged_epoch"] is None
    # tanh is saturated to +-1: no gradient reaches Wxh or Whh, so it is frozen.
    assert result["diagnostics"]["recurrent_grad_norm"] == 0.0
    assert result["frozen_at_init"] is True
    # Diverged by the "stuck above the baseline" clause, at a loss no higher than at init:
    # no explosion, so the outcome is the diagnosis.
    assert result["history"][0]["val_loss"] <= result["diagnostics"]["initial_loss"]
    assert result["outcome"] == "frozen"


@pytest.mark.slow  # a real `initstudy` process
def test_readable_summary() -> None:
    proc = run_cli("trial", "--seq-len", "5", "--hidden", "8", "--max-epochs", "2")
    assert proc.returncode == 0, proc.stderr
    assert "spectral radius" in proc.stdout
    assert "epochs run" in proc.stdout
    assert "init diagnosis" in proc.stdout and "trainable" in proc.stdout


@pytest.mark.slow  # a real `initstudy` process
def test_help_documents_every_option() -> None:
    proc = run_cli("trial", "--help")
    assert proc.returncode == 0
    for option in (
        "--task",
        "--seq-len",
        "--hidden",
        "--cell",
        "--init",
        "--init-recurrent",
        "--scale",
        "--optimizer",
        "--lr",
        "--clip",
        "--batch-size",
        "--max-epochs",
        "--target",
        "--seed",
        "--data-seed",
        "--corpus",
        "--device",
        "--json",
    ):
        assert option in proc.stdout, option
    # every TrialSpec field has its option, the ones above and the rest
    for name in FIELDS:
        assert option_name(name) in proc.stdout, name


BAD_INPUT = [
    (["--init", "bogus"], ["--init", "xavier", "uniform01"]),
    (["--init-recurrent", "bogus"], ["--init-recurrent", "orthogonal"]),
    (["--task", "bogus"], ["--task", "adding", "charlm", "copy"]),
    (["--cell", "bogus"], ["--cell", "lstm", "rnn_tanh"]),
    (["--optimizer", "bogus"], ["--optimizer", "adam", "sgd"]),
    (["--hidden", "0"], ["--hidden", ">= 1"]),
    (["--seq-len", "-2"], ["--seq-len", ">= 1"]),
    (["--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["--lr", "-1"], ["--lr", "> 0"]),
    (["--device", "tpu"], ["--device", "cpu", "cuda"]),
    (["--task", "charlm", "--corpus", "/nonexistent/corpus.txt"], ["corpus", "not"]),
]
REAL_PROCESS = [0, 10]
"""Cases of BAD_INPUT also run as a real subprocess: a choice Typer refuses (``--init``)
and a file the trial command refuses itself (the corpus)."""


@pytest.mark.parametrize(("args", "expected"), BAD_INPUT)
def test_bad_input_is_one_clear_line_and_exit_2(
    args: list[str],
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)  # anything written to the working directory shows up
    code = invoke_cli(["trial", *args])
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for word in expected:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a real `initstudy` process
@pytest.mark.parametrize(("args", "expected"), [BAD_INPUT[i] for i in REAL_PROCESS])
def test_a_real_process_refuses_bad_input_with_one_line_and_exit_2(
    args: list[str], expected: list[str], tmp_path: Path
) -> None:
    proc = run_cli("trial", *args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for word in expected:
        assert word in lines[0], (word, lines[0])
    assert proc.stdout == ""
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a real `initstudy` process
def test_a_bool_field_takes_true_or_false_as_in_a_spec() -> None:
    result = trial_json("--hidden", "2", "--max-epochs", "2", "--stop-on-converge", "false")
    assert result["spec"]["stop_on_converge"] is False
    proc = run_cli("trial", "--stop-on-converge", "yes")
    assert proc.returncode == 2
    assert "--stop-on-converge" in proc.stderr and "true or false" in proc.stderr


@pytest.mark.parametrize(
    ("content", "word"),
    [(b"", "empty"), (b"\xff\xfe\xfa\xfb" * 200, "UTF-8"), (b"ab\x00cd" * 200, "binary")],
)
def test_bad_corpus_files_are_refused(
    content: bytes, word: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    code = invoke_cli(["trial", "--task", "charlm", "--seq-len", "5", "--corpus", str(corpus)])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert word in err
    assert "Traceback" not in err
