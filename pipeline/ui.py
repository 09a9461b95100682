"""Serve the MLflow UI for a study's tracking store, on loopback by default.

``initstudy ui`` uses this to let a user browse a study: one experiment per study, a parent
run and one child run per trial with its per-epoch loss curves. :func:`start_ui` runs
``python -m mlflow server`` (the interpreter running initstudy, so the same MLflow) as a
child process in its own process group, waits until it answers, and returns a
:class:`UiServer` whose :meth:`UiServer.stop` ends the whole group.

This module does not import mlflow (pipeline/tracking.py and pipeline/mlflowio.py do); it
only starts the server and knows the UI's URLs. It knows nothing of specs, trials or results.

Exposure: the server binds to 127.0.0.1 unless the caller passes another ``host``. For a
loopback bind it accepts only requests whose Host header is a loopback name (127.0.0.1,
localhost, [::1]) with this port (DNS-rebinding protection), and browser writes only from
those origins (CORS): tighter than MLflow's defaults (any private IP, any localhost port).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

from pipeline.urls import canonical_url, sqlite_file

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
"""Signals that, while a :class:`UiServer` is used as a context manager, stop its server
(the whole process group) before this process ends."""
STOP_GRACE = 5.0
"""Seconds stop() waits after SIGTERM before it sends SIGKILL to the server's process group."""
LOG_TAIL_LINES = 20
"""How many of the server's last output lines an error message quotes."""

_POLL = 0.25
_PROBE_TIMEOUT = 2.0
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
"""Host header names (with the port) a loopback-bound server accepts."""


class UiServer:
    """A running MLflow UI server; a context manager that stops it on exit.

    Attributes:
        url: base URL of the UI, e.g. ``http://127.0.0.1:5123`` (for a wildcard bind such
            as ``0.0.0.0``, the loopback URL a browser on this machine can open).
        host: the address the server is bound to.
        port: the port it listens on.
        log_path: file holding the server's stdout and stderr (removed by stop()).
        process: the ``mlflow server`` process, leader of the server's process group.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], host: str, port: int, log_path: Path
    ) -> None:
        """Wrap an already started server process; use :func:`start_ui` to make one."""
        self.process = process
        self.host = host
        self.port = port
        self.url = f"http://{_url_host(_connect_host(host))}:{port}"
        self.log_path = log_path
        self._stopped = False
        self._entered = False
        self._previous: dict[signal.Signals, Any] = {}
        """Signal handlers this server's replaced (from :func:`start_ui` until its ``with``
        block ends)."""

    def __enter__(self) -> UiServer:
        """Stop the server on exit, and on SIGTERM, SIGHUP or SIGINT meanwhile (main thread
        only): the handler raises SystemExit(128 + its number), or KeyboardInterrupt for
        SIGINT as Python's default does, and this block's exit stops the server's whole
        process group on the way out."""
        self._guard()
        self._entered = True
        return self

    def _guard(self) -> None:
        """Install this server's stop-signal handlers (main thread only; once)."""
        if not self._previous and threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._on_signal)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self._restore_handlers()

    def _restore_handlers(self) -> None:
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous)
        self._previous.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGHUP/SIGINT: raise (SystemExit 128 + signum, or KeyboardInterrupt).
        Inside the ``with`` block its exit stops the server's group once the stack has
        unwound (stopping here could deadlock on a ``wait`` this signal interrupted);
        before it (between :func:`start_ui` and the ``with``) the server is stopped here
        first, since no block would. A signal while the server is being stopped is
        ignored."""
        if self._stopped:
            return
        if not self._entered:
            self.stop()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise SystemExit(128 + signum)

    def running(self) -> bool:
        """Whether the server's main process is still alive."""
        return self.process.poll() is None

    def wait(self) -> int:
        """Block until the server exits (e.g. the user pressed Ctrl-C); return its exit code."""
        return self.process.wait()

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The server's last ``lines`` lines of output ('' once stopped)."""
        try:
            with self.log_path.open(encoding="utf-8", errors="replace") as log:
                return "".join(deque(log, maxlen=lines)).rstrip()
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and every process it started; idempotent.

        Sends SIGTERM to the server's process group, waits up to :data:`STOP_GRACE` seconds,
        then sends SIGKILL to whatever is left. Afterwards the port is free again.
        """
        if self._stopped:
            return
        self._stopped = True
        pgid = self.process.pid  # start_new_session: the server leads its own group
        _signal_group(pgid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(pgid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):  # a wait with a timeout
                self.process.wait(timeout=STOP_GRACE)  # never blocks on Popen's lock
        # Workers that outlive the main process get the same grace, then SIGKILL.
        deadline = time.monotonic() + STOP_GRACE
        while _group_alive(pgid):
            if time.monotonic() >= deadline:
                _signal_group(pgid, signal.SIGKILL)
                break
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            self.log_path.unlink()
        self._restore_handlers()  # a later signal is the process's again


def start_ui(
    tracking_uri: str,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    artifacts_dir: Path | None = None,
    timeout: float = 60,
) -> UiServer:
    """Start the MLflow UI on a tracking store and wait until it serves it.

    Runs ``python -m mlflow server --backend-store-uri <uri> --host <host> --port <port>
    --workers 1`` plus, for a loopback ``host``, ``--allowed-hosts`` and
    ``--cors-allowed-origins`` naming only loopback names with this server's port. The
    server is ready once ``GET /health`` answers 200 and the tracking store answers an
    experiment search. Runs whose artifacts are local ``file://`` folders are served from
    there. MLflow's background job runner (GenAI jobs, several processes) is turned off unless
    ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set in the environment.

    Args:
        tracking_uri: the study's tracking store, e.g. ``sqlite:////abs/run/mlflow.db``. A
            SQLite file must exist already (the UI never creates an empty store).
        host: address to bind to. Anything but loopback exposes the UI (which can also
            delete runs) to the network; MLflow then applies its own Host checks (localhost
            and private IPs).
        port: port to listen on; None picks a free one.
        artifacts_dir: where artifacts uploaded through the server go
            (``--artifacts-destination``). None: the ``mlartifacts`` folder next to a SQLite
            database, else MLflow's default (``./mlartifacts``).
        timeout: seconds to wait for the server to answer.

    Returns:
        The running server; stop it with :meth:`UiServer.stop` or a ``with`` block.

    Raises:
        RuntimeError: the SQLite database does not exist, the port is taken, the server
            exited, its store failed, or it did not answer within ``timeout`` (quoting the
            server's last output lines).
    """
    db = sqlite_file(tracking_uri)
    if db is not None and not db.is_file():
        raise RuntimeError(
            f"no MLflow database at {db} (from tracking URI {tracking_uri!r}); "
            "run a study first or check the run folder"
        )
    if artifacts_dir is None and db is not None:
        artifacts_dir = db.resolve().parent / "mlartifacts"
    chosen = _bind_check(host, port or 0)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        canonical_url(tracking_uri),
        "--host",
        host,
        "--port",
        str(chosen),
        "--workers",
        "1",
    ]
    if artifacts_dir is not None:
        command += ["--artifacts-destination", Path(artifacts_dir).resolve().as_uri()]
    if _is_loopback(host):
        hosts = [f"{name}:{chosen}" for name in _LOOPBACK_HOSTS]
        command += ["--allowed-hosts", ",".join(hosts)]
        command += ["--cors-allowed-origins", ",".join(f"http://{h}" for h in hosts)]
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")

    fd, log_name = tempfile.mkstemp(prefix="initstudy-ui-", suffix=".log")
    log_path = Path(log_name)
    with _HeldSignals() as held:
        with os.fdopen(fd, "wb") as log:
            process = _spawn(command, env, log)
        server = UiServer(process, host, chosen, log_path)
        _start(server, timeout, held)
    return server


class _HeldSignals:
    """While the server is spawned (main thread only): a stop signal is held, its number
    kept, until :meth:`hand_to` gives the signals to the server, which acts on a held one
    at once. So no signal can leave a server running in its own group with nobody to
    stop it."""

    def __init__(self) -> None:
        self.held: list[int] = []
        self.previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> _HeldSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self.previous[sig] = signal.signal(sig, self._hold)
        return self

    def _hold(self, signum: int, frame: FrameType | None) -> None:
        self.held.append(signum)

    def hand_to(self, server: UiServer) -> None:
        """The server's handlers from now on (it restores the ones before at its end)."""
        if self.previous:
            server._previous, self.previous = self.previous, {}
            for sig in STOP_SIGNALS:
                signal.signal(sig, server._on_signal)
        if self.held:
            server._on_signal(self.held[0], None)  # stops the server and raises

    def __exit__(self, *exc: object) -> None:
        if not self.previous:
            return
        for sig, old in self.previous.items():  # not handed over: the spawn failed
            signal.signal(sig, old)
        self.previous.clear()
        if self.held:  # delivered now, to the handler it would have met
            signal.raise_signal(self.held[0])


def _start(
    server: UiServer,
    timeout: float,
    held: _HeldSignals,
    wait: Callable[[UiServer, float], None] | None = None,
) -> None:
    """Hand the signals to the server and wait for it (``wait``, by default the MLflow UI's
    readiness check); on any failure (or a stop signal) stop it (which puts the signal
    handlers back) and re-raise."""
    try:
        held.hand_to(server)
        (wait or _wait_ready)(server, timeout)
    except RuntimeError as exc:
        tail = server.log_tail()
        server.stop()
        output = f"\nlast server output:\n{tail}" if tail else " (no server output)"
        raise RuntimeError(f"{exc}{output}") from None
    except BaseException:
        server.stop()
        raise


def experiment_url(base_url: str, experiment_id: str) -> str:
    """The UI page listing an experiment's runs: ``<base_url>/#/experiments/<id>/runs``."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs"


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The UI page of one run (overview, parameters, metrics, artifacts)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _spawn(command: list[str], env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start the server in a new session (its own process group), output to ``log``."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )


def _wait_ready(server: UiServer, timeout: float) -> None:
    """Poll /health, then the store, until both answer; raise RuntimeError otherwise."""
    deadline = time.monotonic() + timeout
    healthy = False
    while True:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(f"MLflow server exited with code {code} while starting")
        if not healthy:
            healthy = _get(f"{server.url}/health")[0] == 200
        if healthy:
            # /health does not touch the store: a broken database only shows up here.
            status, body = _get(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1")
            # 403: MLflow's Host check (user-configured for a non-loopback bind) refused the
            # probe; the server and its store are up, only the probe's Host is not allowed.
            if status in (200, 403):
                return
            if status is not None and status >= 400:
                raise RuntimeError(
                    f"MLflow server at {server.url} cannot read its tracking store "
                    f"(HTTP {status}): {body[:500]}"
                )
        if time.monotonic() >= deadline:
            raise RuntimeError(f"MLflow server did not answer at {server.url} in {timeout:g} s")
        time.sleep(_POLL)


def _get(url: str) -> tuple[int | None, str]:
    """GET ``url``: (status, body), or (None, '') if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=_PROBE_TIMEOUT) as response:
            return response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None, ""


def _bind_check(host: str, port: int) -> int:
    """Check that ``port`` is free on ``host`` (0: let the OS pick one); return the port.

    Without this, a server already on the port (say, an earlier UI) would answer the
    readiness probes and the new one's failure would go unnoticed.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind((host.strip("[]"), port))
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {host} port {port}: {exc}") from exc
        return int(sock.getsockname()[1])


def exposure_warning(host: str, port: int | None = None) -> str | None:
    """What binding the UI to ``host`` exposes, for a host that is not loopback (None for
    loopback): the MLflow UI has no login, and it can delete runs and experiments."""
    if _is_loopback(host):
        return None
    where = f"port {port}" if port is not None else "its port"
    tunnel = port if port is not None else "PORT"
    return (
        f"--host {host}: the MLflow UI has no login and can delete runs and experiments; "
        f"anyone who can reach {where} on this machine can. Keep the default 127.0.0.1 and "
        f"reach it through an SSH tunnel (ssh -L {tunnel}:127.0.0.1:{tunnel} THIS-HOST), or "
        "put it behind a reverse proxy that asks for a login, and a firewall"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _connect_host(host: str) -> str:
    """The address a local client uses to reach a server bound to ``host``."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host
    if address.is_unspecified:
        return "::1" if address.version == 6 else "127.0.0.1"
    return str(address)


def _url_host(host: str) -> str:
    """``host`` as it appears in a URL (IPv6 addresses in brackets)."""
    host = host.strip("[]")
    return f"[{host}]" if ":" in host else host


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
