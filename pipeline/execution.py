"""Execution: one task per pack of trials. The only module that imports ray.

The driver hands an :class:`Executor` lists of TrialSpecs and gets each pack's events
back: :class:`Started` as it begins, :class:`Epochs` (its members' epoch records, about
once a second) while it trains, and last its TrialResults, each with the JSON text its
worker wrote (stored and logged as it is: a result is serialised once), or why it failed.
On Ray a pack is a streaming generator task. Workers never touch the Optuna storage or
MLflow. :class:`RayExecutor` runs real
studies; :class:`InProcessExecutor` trains in the calling process, for tests of the
driver's logic. A pack given a GPU (``gpus_per_pack`` > 0,
fractions allowed so several packs share one card) trains on CUDA. A worker that dies
mid-pack (killed, out of memory, node lost) is retried by Ray up to ``max_retries``
times; since a result depends only on its spec, a retried pack gives the same numbers.
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import ray

from models.spec import TrialResult, TrialSpec
from pipeline.ray_compat import local_only, refresh_auth
from pipeline.raysession import LOOPBACK, PrivateSession, RayHost

MAX_RETRIES = 3
"""How many times Ray reruns a pack whose worker died."""


DASHBOARD_NEEDS_AUTH = (
    "the Ray dashboard runs jobs, so it starts only with Ray's token authentication; "
    "unset RAY_AUTH_MODE (or set it to token)"
)

PROGRESS_SECONDS = 1.0
"""A pack streams its members' epoch records at most this often (and once as it starts)."""

Update = tuple[int, int, float, float, float, float, float, int | None, int | None]
"""One member's epoch as it travels from a worker: member index, epoch, train loss, val
loss, grad norm, hidden variance, hidden saturation, converged epoch, diverged epoch."""


def pack_messages(
    specs: Sequence[TrialSpec], device: str, interval: float | None = None
) -> Iterator[tuple[str, Any]]:
    """Train a pack, yielding what the driver streams from it, in order:
    ``("started", unix_seconds)`` first, then ``("epochs", [Update, ...])`` at most every
    ``interval`` seconds (default :data:`PROGRESS_SECONDS`) while it trains, and last
    ``("done", [TrialResult, ...])``. Epochs not yet sent when the pack ends are only in
    the results' histories."""
    from models.train import iter_pack

    interval = PROGRESS_SECONDS if interval is None else interval
    yield ("started", time.time())
    steps = iter_pack(specs, device)
    buffer: list[Update] = []
    last = time.monotonic()
    while True:
        try:
            updates = next(steps)
        except StopIteration as done:
            yield ("done", done.value)
            return
        buffer += [_update(u) for u in updates]
        if time.monotonic() - last >= interval:
            yield ("epochs", buffer)
            buffer, last = [], time.monotonic()


def _update(u: Any) -> Update:
    r = u.record
    return (
        u.member,
        r.epoch,
        r.train_loss,
        r.val_loss,
        r.grad_norm,
        r.hidden_var,
        r.hidden_sat,
        u.converged_epoch,
        u.diverged_epoch,
    )


def _train_pack_on_worker(spec_dicts: list[dict[str, Any]]) -> Iterator[tuple[str, Any]]:
    """Runs inside a Ray worker (a streaming generator task): train the pack on the device
    Ray assigned, streaming :func:`pack_messages`; the results go as their JSON text."""
    import torch

    ctx = ray.get_runtime_context()
    cpus = ctx.get_assigned_resources().get("CPU", 1.0)
    torch.set_num_threads(max(1, int(cpus)))
    device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    node = f"{socket.gethostname()}/{ctx.get_node_id()[:12]}"
    where = f"cuda:{torch.cuda.get_device_name()}" if device == "cuda" else device
    for kind, payload in pack_messages([TrialSpec.from_dict(d) for d in spec_dicts], device):
        if kind != "done":
            yield (kind, payload)
            continue
        out = []
        for result in payload:
            result.node = node
            result.device = where
            out.append(result.to_json())
        yield ("done", out)


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


@dataclass(frozen=True)
class Started:
    """A pack began training (its worker's clock, unix seconds)."""

    started_at: float


@dataclass(frozen=True)
class Epochs:
    """Epoch records of a pack's members while it trains (several epochs may be in one)."""

    updates: list[Update]


Event = Started | Epochs | list[Trained] | PackFailed
"""What :meth:`Executor.wait` hands back for a pack: news while it trains, then its end
(its results, or why it failed); a pack's events come in order."""
Finished = list[tuple[int, Event]]
"""Events of packs, each with the pack's id."""


def ends(event: Event) -> bool:
    """Whether an event is a pack's last (its results or its failure)."""
    return isinstance(event, list | PackFailed)


class Executor(Protocol):
    """Where packs train: the driver submits packs and collects them as they finish."""

    def capacity(self, resources: Resources) -> int:
        """How many packs of this size can run at once (at least 1)."""
        ...

    def submit(self, pack_id: int, specs: Sequence[TrialSpec], resources: Resources) -> None:
        """Start training a pack; ``pack_id`` comes back from :meth:`wait`."""
        ...

    def wait(self, timeout: float) -> Finished:
        """The packs' events that came within ``timeout`` seconds (maybe none)."""
        ...

    def shutdown(self) -> None:
        """Stop what is still running and release the workers."""
        ...


def _failed(exc: BaseException) -> PackFailed:
    """A pack's failure in one line: the error's type and the first line of its text."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return PackFailed(f"{type(exc).__name__}: {first}")


def gcs_problem(address: str, timeout: float) -> str | None:
    """Why nothing at ``address`` (HOST:PORT) answers as a Ray cluster's GCS does (None:
    it answers ``GetClusterId``, ``ray.init``'s first call, or refuses it for want of a
    token, which only Ray's GCS does); asked once, within ``timeout`` seconds, where
    ``ray.init`` retries for minutes."""
    import grpc
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    channel = grpc.insecure_channel(address)
    try:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
        stub.GetClusterId(request, timeout=timeout)
    except grpc.RpcError as exc:
        code = exc.code()
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return None
        name = getattr(code, "name", str(code))
        details = " ".join((exc.details() or "").split())
        said = f": {details[:120]}" if details else ""
        return f"no Ray GCS answers there: gRPC {name}{said}"
    finally:
        channel.close()
    return None


class NotPrivate(RuntimeError):
    """An embedded Ray came up on an address other than 127.0.0.1 (it was stopped)."""


def _stop_abandoned() -> None:
    """Shut down a Ray whose start was given up, once ``ray.init`` has returned (on its
    host thread), and give Ray back the exit hook the giving-up took away."""
    try:
        ray.shutdown()
    finally:
        atexit.register(ray.shutdown, _exiting_interpreter=True)


class RayExecutor:
    """Submits packs to Ray and collects finished ones.

    An embedded Ray (no ``address``) is private (:mod:`pipeline.raysession`): every
    process of it listens on 127.0.0.1 only, takes only callers with this run's token
    (unless the user set Ray's auth variables), lives in a folder of its own that is
    removed at :meth:`shutdown`, and dies with the driver however the driver ends.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        dashboard_port: int | None = None,
    ) -> None:
        """Connect to a cluster (``address``) or start an embedded local Ray.

        Args:
            address: a Ray cluster address ("auto", "ray://host:10001", "host:6379");
                None (or "local", Ray's word for a new local Ray) starts a private Ray
                inside this process, using ``num_cpus`` CPUs.
            num_cpus: CPUs for an embedded Ray (default: all of this machine's).
            num_gpus: GPUs for an embedded Ray (default: Ray's detection).
            dashboard_port: start an embedded Ray's dashboard on 127.0.0.1 at this port
                (None: no dashboard); see :attr:`dashboard_url`.
        """
        self.dashboard_url: str | None = None
        """The embedded Ray's dashboard, when one was started."""
        self.token_file: Path | None = None
        """The embedded Ray's per-run token (a 0600 file), for the dashboard or Ray's CLI
        (``RAY_AUTH_TOKEN_PATH=FILE ray status --address ...``); None when Ray's own
        settings are used (a cluster, or RAY_AUTH_* set by the user)."""
        self.session_folder: Path | None = None
        """The embedded Ray's own folder (its temp dir), removed at :meth:`shutdown`."""
        self._session: PrivateSession | None = None
        self._host: RayHost | None = None
        self._owned = not ray.is_initialized()
        if address == "local":  # ray.init would start a new, not private, local Ray
            address = None
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
                if dashboard_port is not None:
                    # The dashboard takes jobs (it runs code): only with Ray's token auth,
                    # on unless RAY_AUTH_MODE says otherwise (this run's token, in
                    # token_file, or the user's own; see pipeline.raysession).
                    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
                        raise ValueError(DASHBOARD_NEEDS_AUTH)
                    kwargs.update(
                        include_dashboard=True,
                        dashboard_host="127.0.0.1",
                        dashboard_port=dashboard_port,
                    )
            else:
                kwargs["address"] = address
            context = self._init(kwargs) if address is None else ray.init(**kwargs)
            if address is None and dashboard_port is not None and context.dashboard_url:
                self.dashboard_url = f"http://{context.dashboard_url}"
        self._refs: dict[Any, int] = {}

    @property
    def token_hint(self) -> str:
        """Where the user finds the token the dashboard asks for."""
        if self.token_file is not None:
            return f"in {self.token_file}"
        return "`ray get-auth-token`"

    def _init(self, kwargs: dict[str, Any]) -> Any:
        """Start a private embedded Ray (see the class's text)."""
        self._session = session = PrivateSession.open()
        self._host = host = RayHost()

        def init() -> Any:
            with local_only():
                return ray.init(
                    **kwargs, _node_ip_address=LOOPBACK, _temp_dir=str(session.ray_dir)
                )

        try:
            refresh_auth()
            context = host.start(init, _stop_abandoned)  # a Ctrl-C meanwhile: at once
            ip = ray.util.get_node_ip_address()
            if ip != LOOPBACK:
                raise NotPrivate(f"the embedded Ray's address is {ip}, not {LOOPBACK}")
        except BaseException:
            if host.started:
                ray.shutdown()  # also a node whose start failed half-way (none: no-op)
            else:  # shut down by its thread; its processes are reaped now, and the exit
                host.abandon()  # of the process does not wait for Ray's shutdown
                atexit.unregister(ray.shutdown)
            self._close_session()
            raise
        self.token_file, self.session_folder = session.token_file, session.folder
        return context

    def _close_session(self) -> None:
        if ray.is_initialized() and (self._host is None or self._host.started):
            ray.shutdown()
        if self._session is not None:
            self._session.close()
            self._session = None
            refresh_auth()
        if self._host is not None:
            self._host.close()
            self._host = None

    def capacity(self, resources: Resources) -> int:
        """How many packs of this size the cluster can run at once (at least 1).

        Raises:
            ValueError: no live node has the CPUs or GPUs one pack asks for (Ray would
                wait for such a node forever), naming the largest node there is.
        """
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        for kind, option, asked in (
            ("CPU", "--cpus-per-trial", resources.cpus),
            ("GPU", "--gpus-per-trial", resources.gpus),
        ):
            largest = max((n.get(kind, 0.0) for n in nodes), default=0.0)
            if asked > largest:
                has = f"its largest node has {largest:g}" if largest else f"it has no {kind}"
                raise ValueError(
                    f"{option}: {asked:g} asked for, but one pack runs on one node of the "
                    f"Ray cluster and {has}; use at most {largest:g}"
                )
        total = ray.cluster_resources()
        slots = [total.get("CPU", 1.0) / resources.cpus] if resources.cpus > 0 else []
        if resources.gpus > 0:
            slots.append(total["GPU"] / resources.gpus)
        return max(1, int(min(slots))) if slots else 1

    def nodes(self) -> int:
        """Number of live nodes in the cluster."""
        return sum(1 for n in ray.nodes() if n.get("Alive"))

    def submit(self, pack_id: int, specs: Sequence[TrialSpec], resources: Resources) -> None:
        """Start training a pack; ``pack_id`` comes back from :meth:`wait`."""
        gen = _remote_train.options(num_cpus=resources.cpus, num_gpus=resources.gpus).remote(
            [s.to_dict() for s in specs]
        )
        self._refs[gen] = pack_id

    @property
    def in_flight(self) -> int:
        return len(self._refs)

    def wait(self, timeout: float) -> Finished:
        """The packs' events that came within ``timeout`` seconds (maybe none): the next
        message of each pack that has one ready."""
        if not self._refs:
            return []
        ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=timeout)
        events: Finished = []
        gen: Any  # a streaming generator (ray.ObjectRefGenerator)
        for gen in ready:
            pack_id = self._refs[gen]
            try:
                kind, payload = ray.get(next(gen))
            except StopIteration:  # cannot happen: a pack's last message is "done"
                event: Event = PackFailed("the pack ended without its results")
            except (ray.exceptions.RayError, ray.exceptions.RayTaskError) as exc:
                event = _failed(exc)
            else:
                event = _event(kind, payload)
            if ends(event):
                del self._refs[gen]
            events.append((pack_id, event))
        return events

    def shutdown(self) -> None:
        """Cancel what is still running and stop an embedded Ray."""
        for gen in list(self._refs):
            ray.cancel(gen, force=True)
        self._refs.clear()
        if self._owned and ray.is_initialized():
            ray.shutdown()
        if self._session is not None:
            self._close_session()


def _event(kind: str, payload: Any) -> Event:
    """A worker's message as an event (results arrive as their JSON text)."""
    if kind == "started":
        return Started(float(payload))
    if kind == "epochs":
        return Epochs(list(payload))
    return [Trained(TrialResult.from_json(t), t) for t in payload]


TrainPack = Callable[[Sequence[TrialSpec], str], list[TrialResult]]
"""How a pack is trained: ``models.train.train_pack(specs, device)``."""


class InProcessExecutor:
    """Trains packs one after another in the calling process (no Ray), for tests of the
    driver's logic. Each :meth:`wait` takes the oldest pack one message further (the
    messages a Ray worker streams, :func:`pack_messages`), so the driver sees a pack start
    and its epochs before it ends; an error training raises fails the pack, as a task that
    raised does on Ray. A pack trained by a given ``train`` function streams no epochs."""

    def __init__(
        self, slots: int = 1, train: TrainPack | None = None, interval: float | None = None
    ) -> None:
        """A pool of ``slots`` packs at once (what :meth:`capacity` says), each trained by
        ``train`` (default ``models.train``, on the CPU, streaming its epochs at most every
        ``interval`` seconds, default :data:`PROGRESS_SECONDS`)."""
        self.slots = slots
        self._train = train
        self._interval = interval
        self._queue: list[tuple[int, Iterator[tuple[str, Any]]]] = []
        self.submitted: list[list[TrialSpec]] = []
        """Every pack submitted, in order (what a test checks was trained)."""

    def capacity(self, resources: Resources) -> int:
        return self.slots

    def submit(self, pack_id: int, specs: Sequence[TrialSpec], resources: Resources) -> None:
        self._queue.append((pack_id, self._messages(list(specs))))
        self.submitted.append(list(specs))

    def _messages(self, specs: list[TrialSpec]) -> Iterator[tuple[str, Any]]:
        if self._train is None:
            yield from pack_messages(specs, "cpu", self._interval)
            return
        yield ("started", time.time())
        yield ("done", self._train(specs, "cpu"))

    def wait(self, timeout: float) -> Finished:
        if not self._queue:
            return []
        pack_id, messages = self._queue[0]
        try:
            kind, payload = next(messages)
        except Exception as exc:
            self._queue.pop(0)
            return [(pack_id, _failed(exc))]
        if kind != "done":
            return [(pack_id, _event(kind, payload))]
        self._queue.pop(0)
        node = f"{socket.gethostname()}/in-process"
        for result in payload:
            result.node, result.device = node, "cpu"
        return [(pack_id, [Trained(r, r.to_json()) for r in payload])]

    def shutdown(self) -> None:
        self._queue.clear()
