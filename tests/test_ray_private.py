"""The embedded Ray is private (issue 16): loopback only, behind a per-run token, in a
folder of its own that goes when the run ends, and dead with its driver however it dies.

The slow tests start Ray as ``initstudy run`` does (``RayExecutor(num_cpus=1)`` in a
driver subprocess, a worker up), and look at the driver's whole process tree through
``/proc``: its listening sockets, who answers without the token, what survives a SIGKILL.
The fast ones check :mod:`pipeline.raysession` alone (the environment, the token file,
the watchdog) with no Ray.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline import raysession
from pipeline.raysession import AUTH_VARS, LOCAL_ONLY_VAR, PrivateSession

ROOT = Path(__file__).resolve().parents[1]
LINUX = Path("/proc/net/tcp").exists()
needs_proc = pytest.mark.skipif(not LINUX, reason="reads /proc (Linux)")

_DRIVER = """
import json, os, sys, time
import ray
from pipeline.execution import RayExecutor

executor = RayExecutor(os.environ.get("TEST_RAY_ADDRESS"), num_cpus=1)

@ray.remote(num_cpus=1)
def worker_pid():
    return os.getpid()

node = next(n for n in ray.nodes() if n["Alive"])
print(json.dumps({
    "pid": os.getpid(),
    "worker": ray.get(worker_pid.remote()),
    "folder": str(executor.session_folder),
    "token_file": str(executor.token_file),
    "gcs": ray.get_runtime_context().gcs_address,
    "raylet": f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}",
}), flush=True)
sys.stdin.readline()
executor.shutdown()
print(json.dumps({"env": {k: os.environ.get(k) for k in sys.argv[1:]}}), flush=True)
"""


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (*AUTH_VARS, LOCAL_ONLY_VAR)}
    return {**env, "RAY_USAGE_STATS_ENABLED": "0", **extra}


class Driver:
    """A driver subprocess with an embedded Ray up and one worker started."""

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.started = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _DRIVER, *AUTH_VARS, LOCAL_ONLY_VAR],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env or _clean_env(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.kill()
            raise AssertionError(self.proc.communicate(timeout=30)[1][-3000:])
        self.info: dict[str, Any] = json.loads(line)
        self.folder = Path(self.info["folder"])
        self.tree = descendants(self.proc.pid)

    def stop(self) -> tuple[dict[str, Any], str]:
        """Let it shut down as a run does; its last message and its stderr."""
        out, err = self.proc.communicate("stop\n", timeout=60)
        assert self.proc.returncode == 0, err[-3000:]
        return json.loads(out.strip().splitlines()[-1]), err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate(timeout=30)


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def descendants(root: int) -> set[int]:
    """``root`` and every process below it (by parent pid, as it is now)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, grown = {root}, True
    while grown:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        grown = bool(new)
    return tree


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def _addr(hex_addr: str) -> str:
    """/proc/net/tcp{,6}'s address (little-endian words) as text."""
    ip = bytes.fromhex(hex_addr)
    words = b"".join(ip[i : i + 4][::-1] for i in range(0, len(ip), 4))
    if len(words) == 4:
        return ".".join(str(b) for b in words)
    if words[:12] == b"\0" * 10 + b"\xff\xff":  # IPv4-mapped
        return ".".join(str(b) for b in words[12:])
    return ":".join(words[i : i + 2].hex() for i in range(0, 16, 2))


def listening(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """Listening TCP sockets (and unconnected bound UDP ones) of ``pids``: (pid,
    process name, address, port)."""
    by_inode: dict[str, tuple[str, int]] = {}
    for table, wanted in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state == wanted:
                host, port = local.split(":")
                by_inode[inode] = (_addr(host), int(port, 16))
    found = []
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in by_inode:
                found.append((pid, name, *by_inode[target[8:-1]]))
    return found


@pytest.fixture(scope="module")
def embedded() -> Iterator[Driver]:
    driver = Driver()
    try:
        yield driver
    finally:
        driver.kill()


@pytest.mark.slow
@needs_proc
def test_every_listening_socket_of_the_embedded_ray_is_on_loopback(embedded: Driver) -> None:
    tree = descendants(embedded.proc.pid)
    sockets = listening(tree)
    names = {name for _, name, _, _ in sockets}
    # What the issue saw open to the network is all there, and listening:
    assert {"gcs_server", "raylet"} <= names, sockets
    assert any(n.startswith("ray::Dashboard") for n in names), sockets
    assert any(n.startswith("ray::RuntimeEnv") for n in names), sockets
    assert embedded.info["worker"] in {pid for pid, *_ in sockets}, sockets
    assert embedded.proc.pid in {pid for pid, *_ in sockets}, sockets  # the driver's
    gcs_port = int(embedded.info["gcs"].rsplit(":", 1)[1])
    assert ("127.0.0.1", gcs_port) in {(a, p) for _, _, a, p in sockets}
    exposed = [s for s in sockets if s[2] != "127.0.0.1"]
    assert not exposed, f"listening beyond loopback: {exposed}"


def _grpc_status(address: str, service: str, token: str | None) -> Any:
    import grpc
    from ray.core.generated import (
        gcs_service_pb2,
        gcs_service_pb2_grpc,
        node_manager_pb2,
        node_manager_pb2_grpc,
    )

    metadata = [("authorization", f"Bearer {token}")] if token is not None else []
    with grpc.insecure_channel(address) as channel:
        try:
            if service == "gcs":
                gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel).GetAllNodeInfo(
                    gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=10
                )
            else:
                node_manager_pb2_grpc.NodeManagerServiceStub(channel).GetNodeStats(
                    node_manager_pb2.GetNodeStatsRequest(), metadata=metadata, timeout=10
                )
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


@pytest.mark.slow
@pytest.mark.parametrize("service", ["gcs", "raylet"])
def test_a_caller_without_this_runs_token_is_refused(embedded: Driver, service: str) -> None:
    import grpc

    address = embedded.info[service]
    token = Path(embedded.info["token_file"]).read_text()
    assert _grpc_status(address, service, None) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_status(address, service, "0" * 64) == grpc.StatusCode.UNAUTHENTICATED
    home = Path.home() / ".ray" / "auth_token"  # the user's usual token is not this run's
    if home.is_file():
        wrong = home.read_text().strip()
        assert _grpc_status(address, service, wrong) == grpc.StatusCode.UNAUTHENTICATED
    assert _grpc_status(address, service, token) == grpc.StatusCode.OK


@pytest.mark.slow
def test_the_runs_token_and_folder_are_the_users_alone(embedded: Driver) -> None:
    token_file, folder = Path(embedded.info["token_file"]), embedded.folder
    assert token_file.parent == folder and folder.parent == Path(raysession.session_base())
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert len(token_file.read_text()) == 64
    sessions = list(folder.glob("r/session_2*"))  # Ray's session, in the run's folder
    assert len(sessions) == 1 and (sessions[0] / "sockets" / "raylet").exists()


@pytest.mark.slow
@needs_proc
def test_a_second_embedded_ray_at_once_has_a_whole_dashboard_agent_and_leaves_nothing(
    embedded: Driver, tmp_path: Path
) -> None:
    """A second run on the machine while the first one runs: its dashboard agent has all
    of its servers (Ray's fixed agent port 52365 would be the first one's), and when it
    ends no process, folder or token of it is left."""
    home = tmp_path / "home"
    home.mkdir()
    # address "local" (Ray's word for a new local Ray) is the embedded, private Ray too
    driver = Driver(_clean_env(HOME=str(home), TEST_RAY_ADDRESS="local"))
    try:
        agents = [
            sorted(port for _, name, _, port in listening(d.tree) if name == "ray::DashboardA")
            for d in (embedded, driver)
        ]
    finally:
        tree = driver.tree - {driver.proc.pid}
        last, err = driver.stop()
    assert len(agents[0]) == len(agents[1]) >= 3, agents  # gRPC, HTTP, metrics export
    assert 52365 not in agents[0] + agents[1], agents
    assert not driver.folder.exists()
    # Nothing in Ray's shared places: no session of this driver in the system temp's
    # ray/ (Ray names a session after its driver's pid; one made before this driver
    # started is another run's whose pid was the same), no token in ~/.ray.
    shared = Path(tempfile.gettempdir()) / "ray"
    ours = [
        path
        for path in shared.glob(f"session_*_{driver.proc.pid}")
        if path.lstat().st_mtime >= driver.started - 1
    ]
    assert not ours
    assert not (home / ".ray" / "auth_token").exists()
    assert not [pid for pid in tree if alive(pid)]
    # The driver's environment is as before: the next embedded Ray gets a new token.
    assert last["env"] == {name: None for name in (*AUTH_VARS, LOCAL_ONLY_VAR)}
    assert not Path(driver.info["token_file"]).exists()
    assert "Token authentication is disabled" not in err


@pytest.mark.slow
@needs_proc
def test_a_sigkilled_driver_takes_its_whole_ray_with_it(embedded: Driver) -> None:
    """SIGKILL the driver mid-run (the module's, so this runs after the tests that use
    it): within 15 s no process of its tree (gcs_server, raylet, DashboardAgent,
    RuntimeEnvAgent, workers) is alive, and its Ray folder is gone."""
    driver = embedded
    tree = driver.tree
    names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in tree}
    assert {"gcs_server", "raylet", "ray::DashboardA", "ray::RuntimeEnv"} <= names, names
    assert driver.info["worker"] in tree and all(alive(pid) for pid in tree)
    os.kill(driver.proc.pid, signal.SIGKILL)
    driver.kill()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (
        any(alive(pid) for pid in tree) or driver.folder.exists()
    ):
        time.sleep(0.25)
    left = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in tree if alive(pid)}
    assert not left, f"alive after the driver's SIGKILL: {left}"
    assert not driver.folder.exists()


# -- pipeline.raysession alone (no Ray) -------------------------------------------------


@pytest.fixture
def no_ray_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*AUTH_VARS, LOCAL_ONLY_VAR):
        monkeypatch.delenv(name, raising=False)


def test_a_session_gives_ray_a_fresh_token_through_this_process_only(no_ray_auth: None) -> None:
    first = PrivateSession.open()
    try:
        token = os.environ["RAY_AUTH_TOKEN"]
        assert first.auth == "per-run" and os.environ["RAY_AUTH_MODE"] == "token"
        assert os.environ[LOCAL_ONLY_VAR] == "0"
        assert len(token) == 64 and int(token, 16) >= 0
        assert first.token_file is not None and first.token_file.read_text() == token
        assert stat.S_IMODE(first.token_file.stat().st_mode) == 0o600
        watchdog = first._watchdog
        assert watchdog is not None and watchdog.poll() is None
        if LINUX:  # the watchdog needs no token, so it has none
            assert token.encode() not in Path(f"/proc/{watchdog.pid}/environ").read_bytes()
    finally:
        first.close()
    assert not first.folder.exists()
    assert not any(name in os.environ for name in (*AUTH_VARS, LOCAL_ONLY_VAR))
    assert watchdog.poll() == 0
    second = PrivateSession.open()
    try:
        assert os.environ["RAY_AUTH_TOKEN"] != token and second.folder != first.folder
    finally:
        second.close()


@pytest.mark.parametrize(
    "env",
    [{"RAY_AUTH_TOKEN": "test-only"}, {"RAY_AUTH_TOKEN_PATH": "test-only"}],
)
def test_a_users_own_ray_auth_settings_are_kept(
    no_ray_auth: None, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    session = PrivateSession.open()
    try:
        assert session.auth == "user" and session.token_file is None
        assert {k: os.environ.get(k) for k in AUTH_VARS} == {k: env.get(k) for k in AUTH_VARS}
        assert not list(session.folder.iterdir())
    finally:
        session.close()
    assert {k: os.environ.get(k) for k in AUTH_VARS} == {k: env.get(k) for k in AUTH_VARS}


def test_ray_auth_disabled_is_respected_with_one_warning(
    no_ray_auth: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setattr(raysession, "_warned_disabled", False)
    with caplog.at_level(logging.WARNING, logger="pipeline.raysession"):
        for _ in range(2):
            session = PrivateSession.open()
            assert session.auth == "disabled" and "RAY_AUTH_TOKEN" not in os.environ
            session.close()
    warned = [r for r in caplog.records if "RAY_AUTH_MODE=disabled" in r.getMessage()]
    assert len(warned) == 1
    assert os.environ["RAY_AUTH_MODE"] == "disabled"


def test_ray_sockets_fit_under_the_session_folder(no_ray_auth: None) -> None:
    session = PrivateSession.open()
    try:
        ray_socket = session.ray_dir / "session_2026-12-01_18-18-16_315559_4194304"
        assert len(str(ray_socket / "sockets" / "plasma_store").encode()) <= 107
    finally:
        session.close()


_HOLDER = """
import subprocess, sys, time
from pipeline.raysession import PrivateSession
session = PrivateSession.open()
child = subprocess.Popen(["sleep", "120"], cwd=session.folder, start_new_session=True)
log = open(session.folder / "held.log", "w")
print(session.folder, child.pid, flush=True)
time.sleep(120)
"""


@needs_proc
def test_the_watchdog_reaps_the_folder_when_its_driver_is_sigkilled(no_ray_auth: None) -> None:
    """No Ray: a 'driver' opens a session and leaves a process (in a session of its own,
    as Ray's workers are in groups of their own) holding the folder; SIGKILL the driver."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLDER],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=_clean_env(),
    )
    assert proc.stdout is not None
    folder_text, child_text = proc.stdout.readline().split()
    folder, child = Path(folder_text), int(child_text)
    assert alive(child) and folder.is_dir()
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (alive(child) or folder.exists()):
        time.sleep(0.1)
    assert not alive(child) and not folder.exists()
