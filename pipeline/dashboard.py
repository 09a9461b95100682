"""Serve optuna-dashboard on a study's Optuna store, on loopback by default.

``initstudy dashboard`` uses this. optuna-dashboard is an optional dependency (the
``dashboard`` extra: ``pip install "initstudy[dashboard]"``); :func:`installed` says whether
it is there. :func:`start_dashboard` runs ``python -m pipeline.dashboard HOST PORT`` (this
module's :func:`serve`, the interpreter running initstudy) as a child process in its own
process group, waits until it answers, and returns a :class:`pipeline.ui.UiServer` whose
``stop`` ends the whole group (the MLflow UI's process handling, signals included).

The child serves optuna-dashboard's WSGI app (``optuna_dashboard.wsgi``) over the
study store as :func:`pipeline.storage.make_storage` opens it. The storage URL reaches it
in the environment (:data:`STORAGE_ENV`), never on its command line, where ``ps`` would
show a password. Exposure: the dashboard can rename and delete studies and tell trials,
so it binds to 127.0.0.1 unless told otherwise; for a loopback bind it answers only
requests whose Host header is a loopback name with its port (DNS-rebinding protection),
403 otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipeline.ui import (
    _LOOPBACK_HOSTS,
    UiServer,
    _bind_check,
    _get,
    _HeldSignals,
    _is_loopback,
    _spawn,
    _start,
)

__all__ = [
    "STORAGE_ENV",
    "installed",
    "is_loopback",
    "serve",
    "start_dashboard",
    "study_url",
]

STORAGE_ENV = "INITSTUDY_DASHBOARD_STORAGE"
"""The environment variable that hands the Optuna storage URL to the server process."""
_POLL = 0.25


def installed() -> bool:
    """Whether optuna-dashboard can be imported by this interpreter."""
    try:
        return importlib.util.find_spec("optuna_dashboard") is not None
    except (ImportError, ValueError):
        return False


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address) is this machine only."""
    return _is_loopback(host)


def study_url(base_url: str, study_id: int) -> str:
    """The dashboard's page of one study."""
    return f"{base_url.rstrip('/')}/dashboard/studies/{study_id}"


def start_dashboard(
    storage_url: str, *, host: str = "127.0.0.1", port: int | None = None, timeout: float = 60
) -> UiServer:
    """Start optuna-dashboard on an Optuna storage and wait until it lists its studies.

    Args:
        storage_url: the study store's SQLAlchemy URL (an existing SQLite file or a server).
        host: address to bind to; anything but loopback exposes the dashboard (which can
            delete studies) to the network.
        port: port to listen on; None picks a free one.
        timeout: seconds to wait for the server to answer.

    Raises:
        RuntimeError: the port is taken, the server exited, or it did not answer within
            ``timeout`` (quoting the server's last output lines).
    """
    chosen = _bind_check(host, port or 0)
    command = [sys.executable, "-m", "pipeline.dashboard", host, str(chosen)]
    env = {**os.environ, STORAGE_ENV: storage_url}
    fd, log_name = tempfile.mkstemp(prefix="initstudy-dashboard-", suffix=".log")
    with _HeldSignals() as held:
        with os.fdopen(fd, "wb") as log:
            process = _spawn(command, env, log)
        server = UiServer(process, host, chosen, Path(log_name))
        _start(server, timeout, held, _wait_ready)
    return server


def _wait_ready(server: UiServer, timeout: float) -> None:
    """Poll ``/api/studies`` (it reads the store) until it answers 200 with JSON."""
    deadline = time.monotonic() + timeout
    while True:
        code = server.process.poll()
        if code is not None:
            raise RuntimeError(f"optuna-dashboard exited with code {code} while starting")
        status, body = _get(f"{server.url}/api/studies")
        if status == 200:
            try:
                json.loads(body)
                return
            except ValueError:
                pass
        elif status is not None and status >= 500:
            raise RuntimeError(
                f"optuna-dashboard at {server.url} cannot read its store (HTTP {status})"
            )
        if time.monotonic() >= deadline:
            raise RuntimeError(f"optuna-dashboard did not answer at {server.url} in {timeout:g} s")
        time.sleep(_POLL)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _loopback_only(app: WsgiApp, port: int) -> WsgiApp:
    """``app`` answering only requests whose Host is a loopback name with ``port``."""
    allowed = {f"{name}:{port}" for name in _LOOPBACK_HOSTS}

    def checked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_HOST", "").lower() not in allowed:
            start_response("403 Forbidden", [("Content-Type", "text/plain")])
            return [b"Forbidden: this dashboard answers only to a loopback Host\n"]
        return app(environ, start_response)

    return checked


def serve(storage_url: str, host: str, port: int) -> None:
    """The server process: optuna-dashboard's WSGI app on ``host``:``port``, until killed."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    from pipeline.storage import make_storage

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # no line per request
            pass

    app: WsgiApp = optuna_dashboard.wsgi(make_storage(storage_url))
    if _is_loopback(host):
        app = _loopback_only(app, port)
    httpd = make_server(host.strip("[]"), port, app, server_class=Server, handler_class=Quiet)
    print(f"optuna-dashboard listening on {host} port {port}", file=sys.stderr, flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    serve(os.environ[STORAGE_ENV], sys.argv[1], int(sys.argv[2]))
