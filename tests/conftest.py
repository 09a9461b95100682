"""Fixtures and hooks shared by the whole suite.

- :func:`smoke_study`: the 6-trial smoke study (``tests/data/smoke_tiny.yaml``, study name
  "smoke") run once per session through the real CLI (real Ray, Optuna SQLite, MLflow
  SQLite) into a session temporary folder. It is shared by every test that only reads a
  finished study (tests/test_report.py, tests/test_results.py, tests/test_ui.py,
  tests/test_security.py, ...). A test that writes to a run folder (a rerun, a sync, a
  kill) must not use the shared folder: it calls :meth:`SmokeRun.copy_to` for a private
  copy (the run folder holds everything: Optuna, MLflow and the artifacts).
- The ``slow`` marker for every test under tests/reliability/ and tests/cluster/ (they start
  studies, Ray clusters, PostgreSQL or MLflow servers) and every test that uses the smoke
  study, so ``pytest -m "not slow"`` (``make test-fast``) is the fast tier.
- :func:`in_process_executor`: the CLI's ``run`` (and anything else that builds the
  driver's default executor) trains on :class:`pipeline.execution.InProcessExecutor`
  instead of an embedded Ray, for tests of the CLI's and the driver's logic (not Ray's) run
  in-process with :func:`invoke_cli`.
- The fast tier's time limit (tests/fastguard.py): under ``pytest -m "not slow"`` a test
  not marked slow whose call takes over 2 s fails, telling to mark it slow or make it
  faster (``INITSTUDY_FAST_LIMIT=SECONDS`` on a loaded machine, ``0`` for no limit).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

pytest_plugins = ["fastguard", "pytester"]

ROOT = Path(__file__).resolve().parents[1]
SMOKE_SPEC = ROOT / "tests" / "data" / "smoke_tiny.yaml"
SLOW_DIRS = ("reliability", "cluster")
"""Folders under tests/ whose every test is slow (see :func:`pytest_collection_modifyitems`)."""
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
)
"""Where MLflow's SQL store keeps absolute artifact URIs (rewritten in a copied run folder)."""
SLOW_FIXTURES = frozenset({"smoke_study", "smoke_run"})
"""Fixtures that run a study: a test using any of them is marked ``slow``."""


@dataclass(frozen=True)
class SmokeRun:
    """A finished run of tests/data/smoke_tiny.yaml: its run folder and what the CLI printed.

    Treat ``run_dir`` as read-only; :meth:`copy_to` makes a private copy to write to.
    """

    run_dir: Path
    stdout: str
    stderr: str

    @property
    def optuna_db(self) -> Path:
        return self.run_dir / "optuna.db"

    @property
    def storage_url(self) -> str:
        """The Optuna storage URL (what ``--run-dir`` defaults ``--storage`` to)."""
        return f"sqlite:///{self.optuna_db}"

    @property
    def mlflow_db(self) -> Path:
        return self.run_dir / "mlflow.db"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI (what ``--run-dir`` defaults ``--tracking-uri`` to)."""
        return f"sqlite:///{self.mlflow_db}"

    def copy_to(self, folder: Path) -> Path:
        """Copy the run folder to ``folder`` (which must not exist yet); return it.

        MLflow stores artifact locations as absolute ``file://`` URIs; the copy's are
        rewritten to its own ``mlartifacts/``, so whatever a test logs to the copy (a rerun's
        report, a sync) stays in the copy.
        """
        shutil.copytree(self.run_dir, folder)
        old, new = self.run_dir.resolve().as_uri(), folder.resolve().as_uri()
        con = sqlite3.connect(folder / "mlflow.db")
        try:
            with con:
                for table, column in ARTIFACT_COLUMNS:
                    con.execute(
                        f"UPDATE {table} SET {column} = replace({column}, ?, ?)"
                        f" WHERE {column} LIKE ? || '%'",
                        (old + "/", new + "/", old + "/"),
                    )
        finally:
            con.close()
        return folder


def invoke_cli(argv: list[str]) -> int:
    """``pipeline.cli.main(argv)`` in this process (the console script's ``main``, without a
    second interpreter's start-up); returns the exit code. The environment is restored."""
    from pipeline import cli

    with mock.patch.dict(os.environ), pytest.raises(SystemExit) as info:
        cli.main(argv)
    code = info.value.code
    return 0 if code is None else int(code) if isinstance(code, int) else 1


@dataclass
class Done:
    """What a command run in this process returned and printed."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_here(capsys: pytest.CaptureFixture[str]) -> Callable[..., Done]:
    """``initstudy ARGS`` in this process (:func:`invoke_cli`), with what it printed."""

    def invoke(*args: str) -> Done:
        capsys.readouterr()  # drop what came before
        code = invoke_cli(list(args))
        out, err = capsys.readouterr()
        return Done(code, out, err)

    return invoke


@pytest.fixture
def in_process_executor(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Make the driver's default executor (``RayExecutor(address, workers)``) an
    :class:`~pipeline.execution.InProcessExecutor` with two slots: the same driver, stores
    and training code, the packs trained in this process. Returns the executors made, so a
    test can check the study really trained through them."""
    from pipeline import driver
    from pipeline.execution import InProcessExecutor

    made: list[Any] = []

    def make(*args: object, **kwargs: object) -> InProcessExecutor:
        executor = InProcessExecutor(slots=2)
        made.append(executor)
        return executor

    monkeypatch.setattr(driver, "RayExecutor", make)  # raises if the driver stops using it
    return made


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) with the SHA-256 of its bytes.

    SQLite's ``-wal`` and ``-shm`` files are left out: a reader of a database in
    write-ahead-log mode creates them (and a reader killed with the UI server leaves them)."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.name.endswith(("-wal", "-shm"))
    }


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmokeRun]:
    """The smoke study, run once per session: ``initstudy run tests/data/smoke_tiny.yaml``.

    At the end of the session its run folder must be byte for byte what the run left: a
    test that wrote to it (instead of to a :meth:`SmokeRun.copy_to` copy) fails here.
    """
    run_dir = tmp_path_factory.mktemp("smoke-session")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", str(SMOKE_SPEC), "--run-dir", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    before = snapshot(run_dir)
    yield SmokeRun(run_dir=run_dir, stdout=proc.stdout, stderr=proc.stderr)
    after = snapshot(run_dir)
    changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
    assert not changed, f"a test wrote to the shared smoke run folder {run_dir}: {changed}"


@pytest.fixture(scope="session")
def smoke_run(smoke_study: SmokeRun) -> Path:
    """The shared smoke study's run folder (read-only; copy it to write)."""
    return smoke_study.run_dir


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` every test under tests/reliability/ and tests/cluster/, every test
    that uses the session's smoke study (directly or through another fixture): it needs a
    real study run."""
    tests = Path(__file__).resolve().parent
    slow_roots = [tests / name for name in SLOW_DIRS]
    for item in items:
        path = Path(item.path).resolve()
        in_slow_dir = any(path.is_relative_to(root) for root in slow_roots)
        uses_study = bool(set(getattr(item, "fixturenames", ())) & SLOW_FIXTURES)
        if in_slow_dir or uses_study:
            item.add_marker(pytest.mark.slow)
