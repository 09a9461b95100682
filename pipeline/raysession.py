"""A private session for an embedded Ray: its folder, its token, and a watchdog.

:class:`pipeline.execution.RayExecutor` opens one before it starts Ray inside the driver
(``initstudy run`` without ``--address``) and closes it after ``ray.shutdown()``:

- **Folder.** Ray's temp dir is ``r`` inside a fresh folder (``initstudy-ray-*`` under the
  system temp, mode 0700, short enough for Ray's unix sockets; Ray makes its own temp dir
  0777, hence the level), so the run's logs, sockets and session files are the user's
  alone, and they are removed when the run ends.
- **Token.** Unless the user set ``RAY_AUTH_MODE``, ``RAY_AUTH_TOKEN`` or
  ``RAY_AUTH_TOKEN_PATH`` (theirs are kept as they are), Ray's token authentication is on
  with a fresh random token, handed to Ray through this process's environment only (its
  Ray processes inherit it) and kept in ``auth_token`` (mode 0600) in the folder for the
  user (the dashboard, ``RAY_AUTH_TOKEN_PATH=... ray status``). Never printed, never in
  ``~/.ray``. ``RAY_AUTH_MODE=disabled`` is respected with one warning.
- **Loopback.** ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` for Ray's processes, Ray's own
  switch for a local-only node (its address 127.0.0.1); the executor sets the rest.
- **Host thread.** :class:`RayHost` runs ``ray.init`` on a thread that lives as long as
  the embedded Ray (see there), so a Ctrl-C during the seconds of its start is taken at
  once.
- **Watchdog.** A small process in a session of its own waits for the driver to end,
  however it ends (SIGKILL included), then kills every process of this user that still
  holds a file of the folder open (Ray's processes log there: gcs_server, raylet, the
  agents, the workers), and removes the folder.

Only the standard library: the watchdog runs this file as a script (``python -I``).
Process discovery reads ``/proc`` (Linux); elsewhere only the folder is removed.
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

LOOPBACK = "127.0.0.1"
"""The only address an embedded Ray listens on."""
AUTH_VARS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
"""Ray's authentication settings: a user who sets any of them keeps their own."""
LOCAL_ONLY_VAR = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch (ray_constants.ENABLE_RAY_CLUSTER): 0 makes a node's address 127.0.0.1."""
AUTH_FILE = "auth_token"
"""The per-run token's file in the session folder (mode 0600)."""
SOCKET_PATH_MAX = 107
"""AF_UNIX path limit on Linux (108 bytes with the NUL; Ray checks it)."""
RAY_DIR = "r"
"""Ray's temp dir inside the session folder."""
_RAY_SOCKET_TAIL = len("/r/session_2026-12-01_18-18-16_315559_4194304/sockets/plasma_store") + 8
"""The longest path Ray puts under its temp dir for a socket, with some slack."""
REAP_SECONDS = 15.0
"""How long a reap goes on killing what holds the folder before it gives up."""

log = logging.getLogger(__name__)
_warned_disabled = False


class RayHost:
    """Starts an embedded Ray (``ray.init``) on a thread of its own that lives until
    :meth:`close`, after ``ray.shutdown``.

    Why a thread: ``ray.init`` spends seconds in calls to the GCS that hold a signal until
    they return, so on the main thread a Ctrl-C waited for the whole start. Here the main
    thread only waits on an event, which a signal handler interrupts at once. Why it lives
    on: Ray's processes are started with a parent-death signal, which Linux sends when
    the *thread* that started them ends. A start given up (:meth:`abandon`) is shut down by
    its own thread once ``ray.init`` returns; a later host waits for that (one embedded Ray
    per process)."""

    _one = threading.Lock()
    """Held from a host's start until its Ray is shut down."""
    _given_up: ClassVar[set[RayHost]] = set()
    """Hosts abandoned whose thread has not ended yet."""

    def __init__(self) -> None:
        self._started = threading.Event()
        self._closed = threading.Event()
        self._abandoned = False
        self._result: Any = None
        self._error: BaseException | None = None

    def start(self, init: Callable[[], Any], shutdown: Callable[[], None]) -> Any:
        """Run ``init`` on the host thread and return what it returns (or raise its
        error); ``shutdown`` is what an abandoned start calls when ``init`` has returned."""
        # an abandoned start before this one is shut down first (a failed start of Ray
        # gives up within a minute)
        if not RayHost._one.acquire(timeout=REAP_SECONDS + 60):
            raise RuntimeError("an earlier embedded Ray of this process is still starting")
        thread = threading.Thread(
            target=self._host, args=(init, shutdown), name="initstudy-ray", daemon=True
        )
        thread.start()
        while not self._started.wait(0.1):  # a signal handler may raise here, at once
            pass
        if self._error is not None:
            raise self._error
        return self._result

    def _host(self, init: Callable[[], Any], shutdown: Callable[[], None]) -> None:
        try:
            self._result = init()
        except BaseException as exc:  # raised by start, in the caller's thread
            self._error = exc
        self._started.set()
        self._closed.wait()
        try:
            if self._abandoned:
                shutdown()
        finally:
            RayHost._given_up.discard(self)
            RayHost._one.release()

    @property
    def started(self) -> bool:
        """Whether ``init`` has returned (or raised)."""
        return self._started.is_set()

    def abandon(self) -> None:
        """Give up a start still in flight: its thread shuts Ray down when ``init``
        returns (the caller reaps the session's processes meanwhile)."""
        self._abandoned = True
        RayHost._given_up.add(self)
        self._closed.set()

    @classmethod
    def unwinding(cls) -> bool:
        """Whether a start given up is still ending on its thread: the process must then
        end with ``os._exit``, as the interpreter's teardown under Ray's C++ threads can
        abort it (``std::bad_alloc``)."""
        return bool(cls._given_up)

    def close(self) -> None:
        """After ``ray.shutdown``: let the thread end."""
        self._closed.set()


def session_base() -> str:
    """Where session folders go: the system temp, or /tmp where that is too long for
    Ray's unix sockets (macOS's per-user temp is)."""
    base = tempfile.gettempdir()
    limit = SOCKET_PATH_MAX - _RAY_SOCKET_TAIL - len("/initstudy-ray-xxxxxxxx")
    return base if len(base.encode()) <= limit else "/tmp"


@dataclass
class PrivateSession:
    """One embedded Ray's private folder, token and watchdog (see the module's text)."""

    folder: Path
    """This run's private folder (0700; removed by :meth:`close` or the watchdog)."""
    token_file: Path | None
    """The per-run token's file (0600); None when the user's own settings are used."""
    auth: str
    """"per-run" (a fresh token), "user" (the user's RAY_AUTH_* settings: with only
    RAY_AUTH_MODE=token, Ray's ~/.ray/auth_token), or "disabled"."""
    _saved: dict[str, str | None] = field(default_factory=dict, repr=False)
    _watchdog: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def ray_dir(self) -> Path:
        """Ray's temp dir (``ray.init(_temp_dir=...)``), inside :attr:`folder`."""
        return self.folder / RAY_DIR

    @classmethod
    def open(cls) -> PrivateSession:
        """Make the folder, set this process's environment for Ray, start the watchdog."""
        folder = Path(tempfile.mkdtemp(prefix="initstudy-ray-", dir=session_base()))
        session = cls(folder, None, "user")
        try:
            session._set(LOCAL_ONLY_VAR, "0")
            if not any(os.environ.get(v) for v in AUTH_VARS):
                token = secrets.token_hex(32)
                session.token_file = folder / AUTH_FILE
                fd = os.open(session.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(token)
                session._set("RAY_AUTH_MODE", "token")
                session._set("RAY_AUTH_TOKEN", token)
                session.auth = "per-run"
            elif os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
                session.auth = "disabled"
                _warn_disabled()
            session._watchdog = _start_watchdog(folder)
        except BaseException:
            session.close()
            raise
        return session

    def _set(self, name: str, value: str) -> None:
        self._saved.setdefault(name, os.environ.get(name))
        os.environ[name] = value

    def restore_environment(self) -> None:
        """Put back what :meth:`open` changed in this process's environment."""
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()

    def close(self) -> None:
        """After Ray's shutdown: restore the environment, kill what still holds the
        folder, remove it, and stop the watchdog. Safe to call twice."""
        self.restore_environment()
        watchdog = self._watchdog
        reap(self.folder, spare=frozenset({watchdog.pid} if watchdog else ()))
        if self._watchdog is not None:
            if self._watchdog.stdin is not None:
                self._watchdog.stdin.close()
            try:
                self._watchdog.wait(timeout=REAP_SECONDS + 5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
                self._watchdog.wait()
            self._watchdog = None


def _warn_disabled() -> None:
    global _warned_disabled
    if not _warned_disabled:
        _warned_disabled = True
        log.warning(
            "RAY_AUTH_MODE=disabled: the embedded Ray takes connections without a token "
            "(on 127.0.0.1 only, but any local user can then run code as you)"
        )


def _start_watchdog(folder: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in AUTH_VARS}
    return subprocess.Popen(
        [sys.executable, "-I", str(Path(__file__).resolve()), str(folder), str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a kill of the driver's process group leaves it alive
        close_fds=True,
        env=env,
        cwd="/",
    )


def holders(folder: Path, spare: frozenset[int] = frozenset()) -> list[int]:
    """This user's processes (but this one and ``spare``) with a file, cwd or argument in
    ``folder``."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    inside = str(folder.resolve())
    skip, uid = spare | {os.getpid()}, os.getuid()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            if _holds(entry, inside):
                found.append(int(entry.name))
        except OSError:  # gone, or not ours to read
            continue
    return found


def _holds(entry: Path, inside: str) -> bool:
    def within(target: str) -> bool:
        return target == inside or target.startswith(inside + "/")

    try:
        if within(os.readlink(entry / "cwd")):
            return True
    except OSError:
        pass
    if inside.encode() in (entry / "cmdline").read_bytes():
        return True
    for fd in (entry / "fd").iterdir():
        try:
            if within(os.readlink(fd)):
                return True
        except OSError:
            continue
    return False


def reap(
    folder: Path, seconds: float = REAP_SECONDS, spare: frozenset[int] = frozenset()
) -> list[int]:
    """SIGKILL every process but ``spare`` that holds ``folder`` (until none does, or
    ``seconds`` pass), then remove the folder. Returns the processes killed."""
    killed: list[int] = []
    deadline = time.monotonic() + seconds
    while folder.exists() and time.monotonic() < deadline:
        pids = holders(folder, spare)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except OSError:
                pass
        time.sleep(0.2)
    shutil.rmtree(folder, ignore_errors=True)
    return killed


def watch(folder: Path, driver: int) -> None:
    """The watchdog: wait until the driver closes our stdin or dies, then reap."""
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    while os.getppid() == driver:
        ready, _, _ = select.select([sys.stdin.fileno()], [], [], 1.0)
        if ready and not os.read(sys.stdin.fileno(), 4096):
            break
    alive = os.getppid() == driver  # closed by a driver that lives on: never kill it
    reap(folder, spare=frozenset({driver}) if alive else frozenset())


if __name__ == "__main__":
    watch(Path(sys.argv[1]), int(sys.argv[2]))
