"""The MLflow server goes away mid-study: training goes on, results stay in Optuna, and
``initstudy sync`` logs every missing trial once the server is back (on the same store)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import invoke_cli
from ports import free_port

from pipeline.tracking import TrackingError, read_trials
from pipeline.ui import UiServer, start_ui

from .conftest import (
    Sessions,
    assert_exactly_once,
    moderate_spec,
    sqlite_storage,
    trained,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

DEADLINE_SERVER = 120.0
"""Seconds the MLflow server may take to start (it migrates a fresh store first)."""


@pytest.fixture
def no_client_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's MLflow client fails fast, as the CLI's does."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


@pytest.fixture
def servers() -> Iterator[list[UiServer]]:
    started: list[UiServer] = []
    try:
        yield started
    finally:
        for server in started:
            server.stop()


def sync(capsys: pytest.CaptureFixture[str], *store_args: str) -> str:
    """``initstudy sync outage`` in this process (the console script's ``main``: the
    driver, study and MLflow client a ``sync`` process would use); its stdout."""
    capsys.readouterr()
    code = invoke_cli(["sync", "outage", *store_args])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    return out


def backfilled(stdout: str) -> int:
    found = re.search(r"(\d+) runs back-filled", stdout)
    assert found, stdout
    return int(found.group(1))


@pytest.mark.usefixtures("no_client_retries")
def test_mlflow_server_down_mid_study_then_synced(
    tmp_path: Path,
    sessions: Sessions,
    servers: list[UiServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "mlflow-server" / "mlflow.db"
    store.parent.mkdir()
    store.touch()  # an empty SQLite file: the server creates its tables
    backend = f"sqlite:///{store}"
    port = free_port()
    servers.append(start_ui(backend, port=port, timeout=DEADLINE_SERVER))
    uri = servers[-1].url

    spec, planned = moderate_spec(tmp_path, "outage", seeds=3, batches=40)
    run_dir = tmp_path / "run"
    store_args = ["--run-dir", str(run_dir), "--tracking-uri", uri]
    driver = sessions.start("run", str(spec), *store_args, "--pack-size", "1")

    def logged() -> int:
        assert driver.running(), f"the study ended before MLflow went away\n{driver.output()}"
        try:
            return len([r for r in read_trials(uri, "outage") if r["status"] == "FINISHED"])
        except TrackingError:  # the experiment is being created
            return 0

    wait_for(lambda: logged() >= 2, "two trials logged")
    servers[-1].stop()

    assert driver.wait() == 0, driver.output()
    assert "MLflow is unreachable" in driver.stderr(), driver.output()
    assert trained(driver.stdout()) == planned

    servers.append(start_ui(backend, port=port, timeout=DEADLINE_SERVER))  # same store, port
    assert servers[-1].url == uri
    finished = [r for r in read_trials(uri, "outage") if r["status"] == "FINISHED"]
    assert 2 <= len(finished) < planned
    assert backfilled(sync(capsys, *store_args)) == planned - len(finished)
    assert_exactly_once("outage", planned, sqlite_storage(run_dir), uri, *store_args)
    assert len(read_trials(uri, "outage")) == planned
    assert backfilled(sync(capsys, *store_args)) == 0
