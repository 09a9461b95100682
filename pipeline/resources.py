"""What an embedded run may ask of this machine, checked before any store is touched.

A pack that asks for more CPUs than the embedded Ray has, or for a GPU on a machine
without one, would never be placed: Ray waits for it forever. So the driver checks the
request against the machine first, and refuses it in one line (a cluster's resources are
checked by the executor once it is connected, also before a trial is asked).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from pipeline.storage import StudyError


def machine_cpus() -> int:
    """CPUs this process may use (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def machine_gpus() -> int:
    """CUDA devices torch sees here (0 without a GPU or a CUDA build)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_embedded(options: Any, note: Callable[[str], None]) -> int | None:
    """Refuse a request an embedded Ray on this machine can never place (``options``: the
    driver's RunOptions); return the CPUs to give it: ``--workers`` capped at the machine's
    (``note`` says so).

    Raises:
        StudyError: one line naming the option, what was asked and what there is.
    """
    workers = options.workers
    cpus_per_trial, gpus_per_trial = options.cpus_per_trial, options.gpus_per_trial
    have = machine_cpus()
    if workers is not None and workers > have:
        note(f"--workers {workers} is more than the {have} CPUs here; using {have}")
        workers = have
    cpus = workers or have
    if cpus_per_trial > cpus:
        raise StudyError(
            f"--cpus-per-trial: {cpus_per_trial:g} asked for, but the embedded Ray has "
            f"{cpus} CPUs (--workers or this machine's); use at most {cpus}"
        )
    if gpus_per_trial > 0:
        gpus = machine_gpus()
        if gpus == 0:
            raise StudyError(
                f"--gpus-per-trial: {gpus_per_trial:g} asked for, but this machine has no "
                "GPU that torch can use; use 0 (the default) or run on a cluster with GPUs"
            )
        if gpus_per_trial > gpus:
            raise StudyError(
                f"--gpus-per-trial: {gpus_per_trial:g} asked for, but this machine has "
                f"{gpus} GPUs; use at most {gpus}"
            )
    return workers


CONNECT_SECONDS = 5.0
"""How long the driver waits for a cluster's address to answer before giving up."""
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
"""HTTP/2's client connection preface and an empty SETTINGS frame: what a gRPC client
(Ray's, to the GCS or to the Ray Client server) sends first."""
_SETTINGS = 0x04
"""HTTP/2's SETTINGS frame type: a gRPC server's first frame."""


def check_address(address: str | None, timeout: float = CONNECT_SECONDS) -> None:
    """Refuse a Ray address that nothing answers at, or that does not answer as a gRPC
    server does (Ray's GCS, or its client server for ``ray://``): an HTTP server such as
    Ray's dashboard (8265), a proxy that accepts every connection. Ray itself retries
    such an address for minutes. ``auto`` and ``local`` are left to Ray, which finds or
    starts the cluster itself. With ``RAY_USE_TLS`` (Ray's TLS) only the TCP connect is
    checked.

    Raises:
        StudyError: one line naming the address and why it cannot be used.
    """
    if address is None or address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    fix = (
        "start it, or fix the address (HOST:PORT of the head's GCS, default port 6379, or "
        "ray://HOST:10001)"
    )
    tls = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true")  # asked through TLS
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as s:
            why = None if tls else _not_grpc(s, timeout)
    except (OSError, ValueError) as exc:
        why = (
            f"no answer within {timeout:g} s"
            if isinstance(exc, TimeoutError)
            else (getattr(exc, "strerror", None) or str(exc))
        )
        raise StudyError(
            f"--address: cannot reach a Ray cluster at {address} ({why}); {fix}"
        ) from None
    if why is None and not tls and not address.startswith("ray://"):
        from pipeline.execution import gcs_problem

        why = gcs_problem(hostport, timeout)
    if why is not None:
        raise StudyError(f"--address: {address} is not a Ray cluster ({why}); {fix}")


def _not_grpc(sock: socket.socket, timeout: float) -> str | None:
    """Why the server at ``sock`` is not a gRPC server (None: it answers HTTP/2)."""
    sock.settimeout(timeout)
    try:
        sock.sendall(HTTP2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except TimeoutError:
        return f"no reply to a gRPC handshake within {timeout:g} s"
    except OSError as exc:
        return f"the connection failed during a gRPC handshake: {exc.strerror or exc}"
    if len(head) == 9 and head[3] == _SETTINGS:
        return None
    if not head:
        return "it closed the connection"
    return "it does not answer as a gRPC server does: an HTTP server, such as Ray's dashboard?"
