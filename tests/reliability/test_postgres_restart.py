"""PostgreSQL (the Optuna storage) stopped and started again mid-study: the driver retries
its storage calls, reconnects and finishes with every trial exactly once.

Uses the cluster tests' throwaway PostgreSQL server (tests/cluster/conftest.py): skipped
with the reason when PostgreSQL is not installed, failed under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cluster.conftest import PostgresServer, postgres_bin_dir

from .conftest import (
    Sessions,
    assert_exactly_once,
    count_complete,
    moderate_spec,
    sqlite_tracking,
    trained,
    wait_for,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

_OPTIONS = "-c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"


def pg_stop(server: PostgresServer) -> None:
    """Stop the server as an admin would for a restart: open connections are cut."""
    server._pg("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(server.data))


def pg_start(server: PostgresServer) -> None:
    """Start it again on the same port and data folder."""
    options = f"-p {server.port} -k {server.root} {_OPTIONS}"
    log = str(server.root / "server.log")
    server._pg(
        "pg_ctl", "start", "-w", "-t", "60", "-D", str(server.data), "-l", log, "-o", options
    )


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own (it gets restarted)."""
    server = PostgresServer(postgres_bin_dir())
    try:
        server.start()
        server.create_database("optuna")
        yield server
    finally:
        server.stop()


def test_postgres_restarted_mid_study(
    tmp_path: Path, sessions: Sessions, postgres: PostgresServer
) -> None:
    spec, planned = moderate_spec(tmp_path, "pgrestart", seeds=4)
    run_dir = tmp_path / "run"
    url = postgres.url("optuna")
    args = ["--run-dir", str(run_dir), "--storage", url]
    driver = sessions.start("run", str(spec), *args, "--pack-size", "1")

    def started() -> bool:
        assert driver.running(), f"the study ended before the restart\n{driver.output()}"
        return count_complete(url, "pgrestart") >= 1

    wait_for(started, "a first complete trial")
    pg_stop(postgres)
    wait_for(
        lambda: "the Optuna storage failed to" in driver.stderr() or not driver.running(),
        "the driver to notice the outage",
    )
    pg_start(postgres)

    assert driver.wait() == 0, driver.output()
    err = driver.stderr()
    assert "retrying for up to" in err and "the Optuna storage is reachable again" in err, err
    assert trained(driver.stdout()) == planned
    assert_exactly_once("pgrestart", planned, url, sqlite_tracking(run_dir), *args)
