"""Fixtures for the cluster tests: PostgreSQL, the MLflow server and a two-node Ray cluster
as real local processes, started by the very deploy/ scripts that docker-compose.yml runs
as its services' commands (``SERVICE_SCRIPTS``), on loopback ports.

PostgreSQL is the machine's (Debian's ``postgresql`` package; ``.ci/install-postgres``
installs it). Outside CI a missing server skips these tests with the reason; with CI=true
it fails them. Every process is started in its own session and stopped by its id, never by
name, so other Ray instances on the machine are left alone.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import quote

import pytest
from ports import free_port

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
IN_CI = os.environ.get("CI", "").lower() == "true"

SERVICE_SCRIPTS = {
    "mlflow": "mlflow-server.sh",
    "ray-head": "ray-head.sh",
    "ray-worker": "ray-worker.sh",
    "study": "study.sh",
}
"""The compose service -> deploy/ script that both docker-compose.yml and these tests run."""
POSTGRES_INIT = "postgres-init.sh"
HEALTHCHECK = "healthcheck.sh"

START_TIMEOUT = 120.0
"""Seconds a service may take to come up (MLflow migrates a fresh database first)."""


def unavailable(reason: str) -> NoReturn:
    """Skip with the reason, or fail under CI=true, where a missing server is a bug."""
    if IN_CI:
        pytest.fail(f"{reason}; CI=true requires it (see .ci/install-postgres)", pytrace=False)
    pytest.skip(reason)


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin folder (and the driver to reach it), or skip."""
    found = glob.glob("/usr/lib/postgresql/*/bin/postgres")
    if not found:
        unavailable("PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres)")
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's postgresql:// driver)
    except ImportError:
        unavailable("the PostgreSQL driver is not installed (pip install 'psycopg[binary]')")

    def major(path: str) -> int:  # /usr/lib/postgresql/15/bin/postgres -> 15
        version = Path(path).parts[-3]
        return int(version) if version.isdigit() else 0

    return Path(max(found, key=major)).parent


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (a temp folder only ours use)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (
                (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            )
        except OSError:
            continue
        if text in cmdline:
            pids.append(int(entry.name))
    return pids


def alive(pid: int) -> bool:
    """True while a process exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(
    check: Callable[[], bool], what: str, timeout: float, log: Path | None = None
) -> None:
    """Poll ``check`` until it holds; on timeout fail with the end of the service's log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not ready after {timeout:.0f} s\n{tail}")


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp folder, listening on a loopback port.

    Run as the ``postgres`` OS user when the tests run as root (initdb refuses root). Local
    socket connections are trusted (the socket lives in a 0700 folder); TCP needs the
    password, as in docker-compose.yml.
    """

    user = "initstudy"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # In /tmp, whatever TMPDIR says: the postgres user must be able to reach it.
        self.root = Path(tempfile.mkdtemp(prefix="isq-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = free_port()
        self.password = secrets.token_urlsafe(12) + "/@:"  # must survive URL quoting
        self._as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def _pg(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_owner, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        if result.returncode != 0:
            log = self.root / "server.log"
            server_log = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed: {result.stdout}{result.stderr}{server_log}")

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        if self._as_owner:
            for path in (self.root, pwfile):
                shutil.chown(path, "postgres", "postgres")
        self._pg(
            "initdb",
            f"--pgdata={self.data}",
            f"--username={self.user}",
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--no-sync",
            "--no-instructions",
        )
        pwfile.unlink()
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        log = str(self.root / "server.log")
        self._pg(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", log, "-o", options
        )

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.pid() is not None:
            self._pg("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        """A SQLAlchemy URL with the password in it (as a user would pass to --storage)."""
        password = quote(self.password, safe="")
        return f"postgresql://{self.user}:{password}@127.0.0.1:{self.port}/{database}"

    def env(self) -> dict[str, str]:
        """What the deploy/ scripts read to reach this server (the compose file's names)."""
        return {
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_HOST": "127.0.0.1",
            "POSTGRES_PORT": str(self.port),
            "PGHOST": str(self.root),  # psql in postgres-init.sh: the socket folder
            "PGPORT": str(self.port),
        }

    def create_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer(postgres_bin_dir())
    try:
        server.start()
        yield server
    finally:
        server.stop()


class LocalCluster:
    """PostgreSQL, the MLflow server and a Ray head plus one Ray worker node, as processes.

    Each Ray node gets one CPU, its own temp folder and its own ports, so a study with
    two packs in flight uses both nodes. Everything lives under one temp folder whose path
    is on every process's command line; :meth:`stop` ends them by process group, then any
    straggler that names that folder, and :meth:`leftovers` says what is still there.
    """

    def __init__(self, postgres: PostgresServer) -> None:
        self.postgres = postgres
        # A short path, whatever TMPDIR says: Ray's socket paths must stay < 108 bytes.
        self.root = Path(tempfile.mkdtemp(prefix="isc-", dir="/tmp"))
        self.token = secrets.token_hex(32)
        self.ports = {
            name: free_port()
            for name in (
                "mlflow",
                "gcs",
                "dashboard",
                "client",
                "head_agent",
                "head_metrics",
                "worker_agent",
                "worker_metrics",
            )
        }
        self._procs: dict[str, tuple[subprocess.Popen[bytes], IO[bytes]]] = {}
        self.stopped = False

    # -- addresses -----------------------------------------------------------------------

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['mlflow']}"

    @property
    def ray_address(self) -> str:
        return f"127.0.0.1:{self.ports['gcs']}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['dashboard']}"

    def storage_url(self) -> str:
        return self.postgres.url("optuna")

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of every service and client: Ray's token, loopback ports."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RAY_", "MLFLOW_", "PG", "POSTGRES_"))
        }
        env.update(
            PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=self.token,
            RAY_USAGE_STATS_ENABLED="0",
            RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # tests stop nodes at once
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    # -- processes -----------------------------------------------------------------------

    def spawn(self, name: str, script: str, env: dict[str, str]) -> Path:
        """Start deploy/SCRIPT in its own session; its output goes to ROOT/NAME.log."""
        log_path = self.root / f"{name}.log"
        log = log_path.open("wb")
        proc = subprocess.Popen(
            [str(DEPLOY / script)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._procs[name] = (proc, log)
        return log_path

    def healthy(self, service: str, env: dict[str, str]) -> bool:
        """deploy/healthcheck.sh SERVICE, the compose file's health check."""
        result = subprocess.run(
            [str(DEPLOY / HEALTHCHECK), service], env=env, capture_output=True, timeout=60
        )
        return result.returncode == 0

    def _running(self, name: str) -> bool:
        """True while NAME runs; fails with its log when it has exited."""
        proc, log = self._procs[name]
        if proc.poll() is not None:
            text = Path(log.name).read_text(errors="replace")[-3000:]
            raise AssertionError(f"{name} exited with {proc.returncode}\n{text}")
        return True

    def dashboard(self, path: str, token: str | None = "") -> tuple[int, Any]:
        """GET a dashboard path: HTTP status and JSON body.

        ``token``: "" sends the cluster's token, None sends none, anything else is sent.
        """
        request = urllib.request.Request(self.dashboard_url + path)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token or self.token}")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, None

    def alive_nodes(self) -> list[str]:
        """Node ids of the live Ray nodes, from the dashboard's state API."""
        status, body = self.dashboard("/api/v0/nodes?limit=100")
        if status != 200 or not body:
            return []
        rows = body["data"]["result"]["result"]
        return [r["node_id"] for r in rows if r.get("state") == "ALIVE"]

    def start(self) -> None:
        pg = self.postgres
        subprocess.run(
            [str(DEPLOY / POSTGRES_INIT)], env=self.env(**pg.env()), check=True, timeout=60
        )
        mlflow_env = self.env(
            **pg.env(),
            MLFLOW_PORT=str(self.ports["mlflow"]),
            MLFLOW_HOST="127.0.0.1",
            MLFLOW_WORKERS="1",
            MLFLOW_ARTIFACTS_DESTINATION=str(self.root / "mlartifacts"),
        )
        mlflow_log = self.spawn("mlflow", SERVICE_SCRIPTS["mlflow"], mlflow_env)
        node = {
            "RAY_NODE_IP": "127.0.0.1",
            "RAY_NUM_CPUS": "1",  # one CPU per node: two packs in flight use both nodes
            "RAY_OBJECT_STORE_MEMORY": str(100 * 2**20),
        }
        head_env = self.env(
            **node,
            RAY_PORT=str(self.ports["gcs"]),
            RAY_DASHBOARD_PORT=str(self.ports["dashboard"]),
            RAY_CLIENT_PORT=str(self.ports["client"]),
            RAY_DASHBOARD_AGENT_PORT=str(self.ports["head_agent"]),
            RAY_METRICS_PORT=str(self.ports["head_metrics"]),
            RAY_TEMP_DIR=str(self.root / "head"),
        )
        head_log = self.spawn("ray-head", SERVICE_SCRIPTS["ray-head"], head_env)
        wait_for(
            lambda: self._running("ray-head") and self.healthy("ray-head", head_env),
            "the Ray head",
            START_TIMEOUT,
            head_log,
        )
        worker_env = self.env(
            **node,
            RAY_HEAD_ADDRESS=self.ray_address,
            RAY_DASHBOARD_AGENT_PORT=str(self.ports["worker_agent"]),
            RAY_METRICS_PORT=str(self.ports["worker_metrics"]),
            RAY_TEMP_DIR=str(self.root / "worker"),
        )
        worker_log = self.spawn("ray-worker", SERVICE_SCRIPTS["ray-worker"], worker_env)
        wait_for(
            lambda: self._running("mlflow") and self.healthy("mlflow", mlflow_env),
            "the MLflow server",
            START_TIMEOUT,
            mlflow_log,
        )
        wait_for(
            lambda: self._running("ray-worker") and len(self.alive_nodes()) == 2,
            "the Ray worker node",
            START_TIMEOUT,
            worker_log,
        )

    def processes(self) -> list[int]:
        """Our processes still alive: those started here, and any naming our folder."""
        started = [proc.pid for proc, _ in self._procs.values() if proc.poll() is None]
        return sorted({*started, *(p for p in pids_mentioning(str(self.root)) if alive(p))})

    def leftovers(self) -> list[str]:
        """What is still running or listening after :meth:`stop` (empty when all is gone)."""
        found = [f"pid {pid}" for pid in self.processes()]
        found += [f"port {name}={p}" for name, p in self.ports.items() if port_open(p)]
        if self.postgres.pid() is not None or port_open(self.postgres.port):
            found.append(f"postgres on port {self.postgres.port}")
        return found

    def stop(self) -> None:
        """Stop every process this cluster started (idempotent): SIGTERM to each process
        group, SIGKILL to what is left of it, then to any straggler naming our folder."""
        if self.stopped:
            return
        self.stopped = True
        try:
            for proc, _ in reversed(self._procs.values()):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 20
            for proc, _ in self._procs.values():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            for proc, log in self._procs.values():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                log.close()
            for pid in pids_mentioning(str(self.root)):  # left their process group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_for(lambda: not self.processes(), "the cluster's processes to exit", 20)
        finally:
            self.postgres.stop()
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A running local cluster, shared by the tests of a module, stopped afterwards."""
    server = PostgresServer(postgres_bin_dir())
    local = LocalCluster(server)
    try:
        server.start()
        local.start()
        yield local
    finally:
        local.stop()
    left = local.leftovers()
    assert not left, f"still running after the cluster was stopped: {left}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the storage contract tests."""
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty Optuna storage URL on each backend: a SQLite file, a fresh PostgreSQL db."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'optuna.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres")
    name = f"contract_{secrets.token_hex(6)}"
    server.create_database(name)
    try:
        yield server.url(name)
    finally:
        server.drop_database(name)
