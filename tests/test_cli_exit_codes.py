"""Every ``initstudy`` command exits with a code of :mod:`pipeline.exitcodes`, the table in
docs/cli.md: one test per command, each on input refused before anything starts, or on a
tiny study trained once in this process (no Ray).

Before the table, a store unreachable at start was 1 on ``check``, ``sync``, ``delete``
and ``ui`` but 2 on ``status``; bad SQL was 1; ``delete`` with stdin closed was 1 where
its "n" was 2."""

from __future__ import annotations

import ast
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Done, invoke_cli
from ports import free_port

from pipeline import exitcodes
from pipeline.exitcodes import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_STORE_CORRUPT,
)

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

ROOT = Path(__file__).resolve().parents[1]
TINY = """
name: tiny
sampler: grid
trial: {task: adding, hidden: 8, batches_per_epoch: 2, max_epochs: 1, val_size: 16, batch_size: 8}
space: {init: [xavier, uniform01], seq_len: [4], seed: [0]}
"""


def in_process(argv: list[str]) -> int:
    """``initstudy ARGV`` in this process, its packs trained here too (no Ray)."""
    from pipeline import driver
    from pipeline.execution import InProcessExecutor

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(driver, "RayExecutor", lambda *a, **k: InProcessExecutor(slots=2))
        return invoke_cli(argv)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-trial study run by ``initstudy run`` in this process, trained in-process."""
    folder = tmp_path_factory.mktemp("tiny")
    spec = folder / "tiny.yaml"
    spec.write_text(TINY)
    assert in_process(["run", str(spec), "--run-dir", str(folder / "run")]) == EXIT_OK
    return folder / "run"


def dead_http() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_the_table_in_docs_cli_is_the_modules() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| (\d+) \| `(EXIT_[A-Z_]+)` \|", text, re.MULTILINE))
    assert rows == {str(code): name for code, name, _ in exitcodes.TABLE}
    for code, name, _ in exitcodes.TABLE:
        assert getattr(exitcodes, name) == code


def test_the_cli_exits_only_with_named_codes() -> None:
    """No literal exit code in pipeline/cli: ``fail(..., code=1)``, ``Exit(1)``,
    ``sys.exit(2)`` would each bypass the table."""
    literal = []
    for path in sorted((ROOT / "pipeline" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            args = list(node.args[1:] if name == "fail" else node.args)
            args += [k.value for k in node.keywords if k.arg in ("code", "exit_code")]
            if name in ("fail", "Exit", "exit") and any(
                isinstance(a, ast.Constant) and isinstance(a.value, int) for a in args
            ):
                literal.append(f"{path.name}:{node.lineno}")
    assert literal == []


# -- one per command: bad input, before anything starts ------------------------------------


RUN = "RUN_DIR"  # replaced by a fresh folder, which must still not exist afterwards


@pytest.mark.parametrize(
    "argv",
    [
        ["trial", "--hidden", "0"],
        ["schemes", "--nope"],
        ["validate", "no/such/spec.yaml", "--run-dir", RUN],
        ["run", "tests/data/smoke_tiny.yaml", "--run-dir", RUN, "--storage", "mysql://u@h/db"],
        ["status", "tiny", "--run-dir", RUN, "--storage", "mysql://u@h/db"],
        ["check", "tiny", "--run-dir", RUN, "--tracking-uri", "ftp://h"],
        ["sync", "not a name", "--run-dir", RUN],
        ["list", "--run-dir", RUN, "--storage", "nonsense"],
        ["delete", "tiny", "--run-dir", RUN, "--storage", "mysql://u@h/db"],
        ["results", "tiny", "--run-dir", RUN, "--format", "xml"],
        ["query", "tiny", "  ", "--run-dir", RUN],
        ["report", "tiny", "--run-dir", RUN, "--tracking-uri", "ftp://h"],
        ["ui", "tiny", "--run-dir", RUN, "--port", "0"],
        ["suite", "no/such/folder", "--run-dir", RUN],
    ],
    ids=lambda argv: argv[0],
)
def test_bad_input_exits_2_on_every_command(
    cli_here: Callable[..., Done], tmp_path: Path, argv: list[str]
) -> None:
    run_dir = tmp_path / "run"
    done = cli_here(*(str(run_dir) if a == RUN else a for a in argv))
    assert done.returncode == EXIT_BAD_INPUT, done.stdout + done.stderr
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, done.stderr
    assert not run_dir.exists()


# -- on a study: a store unreachable at start is bad input, on every command ---------------


@pytest.mark.slow  # it starts a study (in this process, no Ray)
@pytest.mark.parametrize("command", ["check", "sync", "delete", "ui"])
def test_an_unreachable_tracking_server_exits_2_on_every_command(
    cli_here: Callable[..., Done], tiny_run: Path, command: str
) -> None:
    extra = ["--yes"] if command == "delete" else []
    done = cli_here(
        command, "tiny", "--run-dir", str(tiny_run), "--tracking-uri", dead_http(), *extra
    )
    assert done.returncode == EXIT_BAD_INPUT, done.stdout + done.stderr
    assert "error: " in done.stderr
    assert invoke_cli(["status", "tiny", "--run-dir", str(tiny_run)]) == EXIT_OK  # kept


def test_status_and_list_on_an_unreachable_storage_exit_2(cli_here: Callable[..., Done]) -> None:
    dead = f"postgresql://u@127.0.0.1:{free_port()}/db"
    for argv in (["status", "tiny", "--storage", dead], ["list", "--storage", dead]):
        done = cli_here(*argv)
        assert done.returncode == EXIT_BAD_INPUT, (argv, done.stderr)


@pytest.mark.slow  # it starts a study (in this process, no Ray)
def test_sql_duckdb_refuses_exits_2(cli_here: Callable[..., Done], tiny_run: Path) -> None:
    done = cli_here("query", "tiny", "SELEC nonsense", "--run-dir", str(tiny_run))
    assert done.returncode == EXIT_BAD_INPUT and "syntax error" in done.stderr.lower()


@pytest.mark.slow  # it starts a study (in this process, no Ray)
def test_a_check_that_finds_problems_exits_1(
    cli_here: Callable[..., Done], tiny_run: Path, tmp_path: Path
) -> None:
    import shutil

    from mlflow.tracking import MlflowClient

    from pipeline.tracking import read_trials

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    uri = f"sqlite:///{copy / 'mlflow.db'}"
    MlflowClient(uri).delete_run(read_trials(uri, "tiny")[0]["run_id"])
    done = cli_here("check", "tiny", "--run-dir", str(copy), "--tracking-uri", uri)
    assert done.returncode == EXIT_FAILED, done.stdout + done.stderr
    assert "complete trial without an MLflow run" in done.stdout


def test_a_corrupt_store_exits_4_on_status_and_list(
    cli_here: Callable[..., Done], tmp_path: Path
) -> None:
    (tmp_path / "optuna.db").write_bytes(b"")
    for argv in (["status", "tiny"], ["list"]):
        done = cli_here(*argv, "--run-dir", str(tmp_path))
        assert done.returncode == EXIT_STORE_CORRUPT, (argv, done.stderr)


# -- delete's question: n, stdin closed, Ctrl-C ------------------------------------------


class _Interrupting(io.StringIO):
    def readline(self, *args: object) -> str:
        raise KeyboardInterrupt


@pytest.mark.slow  # it starts a study (in this process, no Ray)
@pytest.mark.parametrize(
    ("stdin", "code", "words"),
    [
        (io.StringIO("n\n"), EXIT_BAD_INPUT, "not deleted"),
        (io.StringIO(""), EXIT_BAD_INPUT, "stdin is closed"),
        (_Interrupting(), EXIT_INTERRUPTED, "interrupted"),
    ],
    ids=["n", "stdin-closed", "ctrl-c"],
)
def test_delete_not_confirmed_exits_2_and_interrupted_130(
    cli_here: Callable[..., Done],
    tiny_run: Path,
    monkeypatch: pytest.MonkeyPatch,
    stdin: io.StringIO,
    code: int,
    words: str,
) -> None:
    monkeypatch.setattr("sys.stdin", stdin)
    done = cli_here("delete", "tiny", "--run-dir", str(tiny_run))
    assert done.returncode == code, done.stdout + done.stderr
    assert words in done.stderr and "Traceback" not in done.stderr
    assert invoke_cli(["status", "tiny", "--run-dir", str(tiny_run)]) == EXIT_OK  # kept
