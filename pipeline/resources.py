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


def check_address(address: str | None, timeout: float = CONNECT_SECONDS) -> None:
    """Refuse a Ray address that nothing answers at (Ray itself waits minutes). ``auto``
    and ``local`` are left to Ray, which finds or starts the cluster itself.

    Raises:
        StudyError: one line naming the address and why it cannot be reached.
    """
    if address is None or address in ("auto", "local"):
        return
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        why = (
            f"no answer within {timeout:g} s"
            if isinstance(exc, TimeoutError)
            else (getattr(exc, "strerror", None) or str(exc))
        )
        raise StudyError(
            f"--address: cannot reach a Ray cluster at {address} ({why}); start it, or fix "
            "the address (HOST:PORT of the head's GCS, or ray://HOST:10001)"
        ) from None
