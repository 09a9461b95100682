"""Execution: one task per pack of trials. The only module that imports ray.

The driver hands an :class:`Executor` lists of TrialSpecs and gets TrialResults back, each
with the JSON text its worker wrote (stored and logged as it is: a result is serialised
once); workers never touch the Optuna storage or MLflow. :class:`RayExecutor` runs real
studies; :class:`InProcessExecutor` trains in the calling process, for tests of the
driver's logic. A pack given a GPU (``gpus_per_pack`` > 0,
fractions allowed so several packs share one card) trains on CUDA. A worker that dies
mid-pack (killed, out of memory, node lost) is retried by Ray up to ``max_retries``
times; since a result depends only on its spec, a retried pack gives the same numbers.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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


@dataclass(frozen=True)
class Trained:
    """One trial's result and the JSON its worker wrote for it (``result.to_json()``)."""

    result: TrialResult
    text: str


PackResult = list[Trained] | PackFailed
"""What a pack came to: its members' results, in order, or why it failed."""
Finished = list[tuple[int, PackResult]]
"""Packs that finished, each with its id."""


class Executor(Protocol):
    """Where packs train: the driver submits packs and collects them as they finish."""

    def capacity(self, resources: Resources) -> int:
        """How many packs of this size can run at once (at least 1)."""
        ...

    def submit(self, pack_id: int, specs: Sequence[TrialSpec], resources: Resources) -> None:
        """Start training a pack; ``pack_id`` comes back from :meth:`wait`."""
        ...

    def wait(self, timeout: float) -> Finished:
        """The packs that finished within ``timeout`` seconds (maybe none)."""
        ...

    def shutdown(self) -> None:
        """Stop what is still running and release the workers."""
        ...


def _failed(exc: BaseException) -> PackFailed:
    """A pack's failure in one line: the error's type and the first line of its text."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PackFailed(f"{type(exc).__name__}: {first}")


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

    def wait(self, timeout: float) -> Finished:
        """Return the packs that finished within ``timeout`` seconds (maybe none)."""
        if not self._refs:
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        done: Finished = []
        for ref in ready:
            pack_id = self._refs.pop(ref)
            try:
                payload = ray.get(ref)
            except (ray.exceptions.RayError, ray.exceptions.RayTaskError) as exc:
                done.append((pack_id, _failed(exc)))
                continue
            done.append((pack_id, [Trained(TrialResult.from_json(t), t) for t in payload]))
        return done

    def shutdown(self) -> None:
        """Cancel what is still running and stop an embedded Ray."""
        for ref in list(self._refs):
            ray.cancel(ref, force=True)
        self._refs.clear()
        if self._owned and ray.is_initialized():
            ray.shutdown()


TrainPack = Callable[[Sequence[TrialSpec], str], list[TrialResult]]
"""How a pack is trained: ``models.train.train_pack(specs, device)``."""


class InProcessExecutor:
    """Trains packs one after another in the calling process (no Ray), for tests of the
    driver's logic: a pack submitted is trained by the next :meth:`wait`, and an error it
    raises fails the pack, as a task that raised does on Ray."""

    def __init__(self, slots: int = 1, train: TrainPack | None = None) -> None:
        """A pool of ``slots`` packs at once (what :meth:`capacity` says), each trained by
        ``train`` (default ``models.train.train_pack``, on the CPU)."""
        self.slots = slots
        self._train = train
        self._queue: list[tuple[int, list[TrialSpec]]] = []
        self.submitted: list[list[TrialSpec]] = []
        """Every pack submitted, in order (what a test checks was trained)."""

    def capacity(self, resources: Resources) -> int:
        return self.slots

    def submit(self, pack_id: int, specs: Sequence[TrialSpec], resources: Resources) -> None:
        self._queue.append((pack_id, list(specs)))
        self.submitted.append(list(specs))

    def wait(self, timeout: float) -> Finished:
        done: Finished = []
        while self._queue:
            pack_id, specs = self._queue.pop(0)
            try:
                results = self._run(specs)
            except Exception as exc:
                done.append((pack_id, _failed(exc)))
                continue
            node = f"{socket.gethostname()}/in-process"
            for result in results:
                result.node, result.device = node, "cpu"
            done.append((pack_id, [Trained(r, r.to_json()) for r in results]))
        return done

    def _run(self, specs: Sequence[TrialSpec]) -> list[TrialResult]:
        if self._train is not None:
            return self._train(specs, "cpu")
        from models.train import train_pack

        return train_pack(specs, "cpu")

    def shutdown(self) -> None:
        self._queue.clear()
