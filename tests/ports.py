"""Loopback ports for the services tests start."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_HANDED_OUT: set[int] = set()
RAY_WORKER_PORTS_END = 19999
"""Ray's workers listen on ports up to this one (``--max-worker-port``'s default)."""


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nothing listens on right now, on the loopback interface.

    Picked between Ray's worker ports and the kernel's ephemeral range, so no socket bound
    to port 0 later (Ray's components bind many) can take it before our service starts:
    a port the kernel hands out at random once answered the MLflow URL with Ray's metrics.
    Never the same port twice in one test run.
    """
    first, last = RAY_WORKER_PORTS_END + 1, _ephemeral_start() - 1
    for _ in range(500 if last > first else 0):
        port = random.randint(first, last)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as s:  # no such range on this machine: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
