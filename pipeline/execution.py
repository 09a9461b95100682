"""Ray execution: one remote task per pack of trials. The only module that imports ray.

The driver hands this module lists of TrialSpecs and gets TrialResults back; workers
never touch the Optuna storage or MLflow. A pack given a GPU (``gpus_per_pack`` > 0,
fractions allowed so several packs share one card) trains on CUDA. A worker that dies
mid-pack (killed, out of memory, node lost) is retried by Ray up to ``max_retries``
times; since a result depends only on its spec, a retried pack gives the same numbers.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray

from models.spec import TrialResult, TrialSpec

MAX_RETRIES = 3
"""How many times Ray reruns a pack whose worker died."""


def _train_pack_on_worker(spec_dicts: list[dict[str, Any]]) -> list[str]:
    """Runs inside a Ray worker: train the pack on the device Ray assigned."""
    import torch

    from models.train import train_pack

    ctx = ray.get_runtime_context()
    cpus = ctx.get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    results = train_pack([TrialSpec.from_dict(d) for d in spec_dicts], device)
    node = f"{socket.gethostname()}/{ctx.get_node_id()[:12]}"
    if device == "cuda":
        device = f"cuda:{torch.cuda.get_device_name()}"
    out = []
    for result in results:
        result.node = node
        result.device = device
        out.append(result.to_json())
    return out


_remote_train = ray.remote(max_retries=MAX_RETRIES)(_train_pack_on_worker)


@dataclass(frozen=True)
class Resources:
    """What one pack asks Ray for."""

    cpus: float = 1.0
    """CPUs per pack (the worker uses this many torch threads)."""
    gpus: float = 0.0
    """GPUs per pack; fractions let several packs share one GPU."""


class PackFailed(RuntimeError):
    """A pack failed for good: its worker kept dying, or training raised."""


class RayExecutor:
    """Submits packs to Ray and collects finished ones."""

    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None
    ) -> None:
        """Connect to a cluster (``address``) or start an embedded local Ray.

        Args:
            address: a Ray cluster address ("auto", "ray://host:10001", "host:6379");
                None starts Ray inside this process, using ``num_cpus`` CPUs.
            num_cpus: CPUs for an embedded Ray (default: all of this machine's).
            num_gpus: GPUs for an embedded Ray (default: Ray's detection).
        """
        self._owned = not ray.is_initialized()
        if self._owned:
            # Offline and private by default: no usage statistics sent by Ray
            # (RAY_USAGE_STATS_ENABLED=1 turns them back on).
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            kwargs: dict[str, Any] = {
                "logging_level": logging.ERROR,
                "log_to_driver": True,
                "include_dashboard": False,
            }
            if address is None:
                kwargs["num_cpus"] = num_cpus
                kwargs["num_gpus"] = num_gpus
            else:
                kwargs["address"] = address
            ray.init(**kwargs)
        self._refs: dict[Any, int] = {}

    def capacity(self, resources: Resources) -> int:
        """How many packs of this size the cluster can run at once (at least 1)."""
        total = ray.cluster_resources()
        slots = [total.get("CPU", 1.0) / resources.cpus] if resources.cpus > 0 else []
        if resources.gpus > 0:
            if total.get("GPU", 0.0) <= 0:
                raise ValueError("gpus per trial > 0 asked for, but the Ray cluster has no GPU")
            slots.append(total["GPU"] / resources.gpus)
        return max(1, int(min(slots))) if slots else 1

    def nodes(self) -> int:
        """Number of live nodes in the cluster."""
        return sum(1 for n in ray.nodes() if n.get("Alive"))

    def submit(self, pack_id: int, specs: Sequence[TrialSpec], resources: Resources) -> None:
        """Start training a pack; ``pack_id`` comes back from :meth:`wait`."""
        ref = _remote_train.options(num_cpus=resources.cpus, num_gpus=resources.gpus).remote(
            [s.to_dict() for s in specs]
        )
        self._refs[ref] = pack_id

    @property
    def in_flight(self) -> int:
        return len(self._refs)

    def wait(self, timeout: float) -> list[tuple[int, list[TrialResult] | PackFailed]]:
        """Return the packs that finished within ``timeout`` seconds (maybe none)."""
        if not self._refs:
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        done: list[tuple[int, list[TrialResult] | PackFailed]] = []
        for ref in ready:
            pack_id = self._refs.pop(ref)
            try:
                payload = ray.get(ref)
            except (ray.exceptions.RayError, ray.exceptions.RayTaskError) as exc:
                first = (
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                )
                done.append((pack_id, PackFailed(f"{type(exc).__name__}: {first}")))
                continue
            done.append((pack_id, [TrialResult.from_json(text) for text in payload]))
        return done

    def shutdown(self) -> None:
        """Cancel what is still running and stop an embedded Ray."""
        for ref in list(self._refs):
            ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owned and ray.is_initialized():
            ray.shutdown()
