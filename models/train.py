"""Training with convergence and divergence detection, and the init diagnostics.

``train_pack(specs)`` trains K trials that share a shape (``TrialSpec.shape_key``) as one
packed model and returns one :class:`TrialResult` per spec; ``train_trial(spec)`` is a
pack of one. A member's result depends only on its own spec:

- weights come from ``spec.seed`` (see ``models.cells.init_weights``);
- the data stream comes from ``spec.data_seed``: members that share a data_seed see the
  same batches and validation set (common random numbers), whether they train alone or
  with others, and members with different data_seeds can share a pack (each stream's
  batch is drawn once per step and given to the members that read it);
- a member has converged after ``spec.patience`` consecutive evaluations at or below its
  target (the first of them is its converged epoch);
- per-member learning rate, optimizer state and clipping (``models.optim``);
- a member stops when it converges, diverges or reaches its epoch budget, and a stopped
  member's parameters never change again; after the epoch it stopped in it
  leaves the pack (the pack is rebuilt from the members still training), so a pack costs
  about the sum of its members' epochs, not K times the longest.

Divergence is data: a non-finite loss or gradient, or a validation loss above
``divergence_factor`` times the initial one, is recorded with its epoch and ends that
member's training. It never raises. This module knows nothing of Ray, Optuna or MLflow.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from models.cells import CELLS, PackedRNN, init_weights
from models.fields import FIELDS, size_problem
from models.init import INIT_SCHEMES
from models.optim import OPTIMIZERS, clip_member_grads, get_optimizer, member_grad_norms
from models.spec import EpochRecord, InitDiagnostics, TrialResult, TrialSpec
from models.tasks import TASKS, Task, get_task

SATURATION = 0.99
"""A hidden unit with abs(h) above this counts as saturated."""
PROBE_SIZE = 64
"""Sequences in the probe batch used for the init diagnostics."""
STALL_IMPROVEMENT = 0.01
"""An exploded loss that improves by less than this share in an epoch counts as diverged."""
_VAL_SEED_OFFSET = 1_000_003
"""The validation set is drawn from data_seed + this, apart from the training stream."""


def check_spec(spec: TrialSpec) -> None:
    """Raise ValueError naming the field and what is allowed if ``spec`` is invalid.

    Each field is checked by its rule in :data:`models.fields.FIELDS` (type, finiteness,
    bounds, registry name), the rule a study spec's values are checked by too; then the
    rules that tie fields together, which a study spec checks by calling this.
    """
    for name, field in FIELDS.items():
        known = _REGISTRIES[field.registry] if field.registry is not None else ()
        problem = field.problem(getattr(spec, name), known)
        if problem is not None:
            raise ValueError(f"{name}: {problem}")
    together = size_problem(spec.to_dict())  # one trial's sizes, multiplied
    if together is not None:
        raise ValueError(f"{together[0]}: {together[1]}")
    if spec.patience > spec.max_epochs:
        raise ValueError(
            f"patience: must be at most max_epochs ({spec.max_epochs}), got {spec.patience!r}"
        )
    if spec.corpus is not None and spec.task != "charlm":
        raise ValueError(f"corpus: only the charlm task reads a corpus, not {spec.task!r}")


_REGISTRIES: dict[str, Collection[str]] = {
    "TASKS": TASKS,
    "CELLS": CELLS,
    "INIT_SCHEMES": INIT_SCHEMES,
    "OPTIMIZERS": OPTIMIZERS,
}
"""The registries a field's ``registry`` names, by name."""


@dataclass(frozen=True)
class EpochUpdate:
    """One member's record of an epoch, as training goes (see :func:`iter_pack`)."""

    member: int
    """The member's index in the pack's specs."""
    record: EpochRecord
    converged_epoch: int | None
    """The member's converged epoch so far (None: not yet)."""
    diverged_epoch: int | None
    """The epoch it diverged at (None: it has not)."""


PackSteps = Generator[list[EpochUpdate], None, list[TrialResult]]
"""Training a pack: yields each epoch's updates, returns the results (``StopIteration``)."""
EpochCallback = Callable[[list[EpochUpdate]], None]


def train_trial(spec: TrialSpec, device: str | torch.device = "cpu") -> TrialResult:
    """Train one trial alone (a pack of one)."""
    return train_pack([spec], device)[0]


def train_pack(
    specs: Sequence[TrialSpec],
    device: str | torch.device = "cpu",
    on_epoch: EpochCallback | None = None,
) -> list[TrialResult]:
    """Train trials that share a shape as one packed model.

    Args:
        specs: one or more TrialSpecs with equal ``shape_key()``.
        device: where to train ("cpu", "cuda", "cuda:1", ...). Weights and data are
            always generated on the CPU first, so the same spec gives the same start
            on every device.
        on_epoch: called after every epoch with the records of the members that trained
            in it (live progress; it must not raise).

    Returns:
        One TrialResult per spec, in order.

    Raises:
        ValueError: a spec is invalid, or the specs do not share a shape.
    """
    return drain(iter_pack(specs, device), on_epoch)


def drain(steps: PackSteps, on_epoch: EpochCallback | None = None) -> list[TrialResult]:
    """Run a pack's training generator to its end (each epoch's updates to ``on_epoch``)
    and return its results."""
    while True:
        try:
            updates = next(steps)
        except StopIteration as done:
            return done.value
        if on_epoch is not None:
            on_epoch(updates)


def iter_pack(specs: Sequence[TrialSpec], device: str | torch.device = "cpu") -> PackSteps:
    """:func:`train_pack` as a generator: yields, after every epoch, the
    :class:`EpochUpdate` of each member that trained in it, and returns the results.

    The specs are checked before the first epoch; a ``ValueError`` is raised by the first
    ``next``.
    """
    if not specs:
        raise ValueError("train_pack needs at least one spec")
    for spec in specs:
        check_spec(spec)
    shapes = {s.shape_key() for s in specs}
    if len(shapes) > 1:
        raise ValueError(f"specs in a pack must share a shape; got {len(shapes)} shapes")
    if len(specs) == 1:
        # A batched matmul over one member takes another kernel path than over several,
        # which changes the last bits of the numbers and, through training, the epoch a
        # trial converges at. Training a lone trial beside a copy of itself keeps every
        # trial's result the same whether it is trained alone or in a pack of any size.
        # The copy's records (member 1) are not the trial's: only member 0's are passed on.
        steps = _train([specs[0], specs[0]], device)
        while True:
            try:
                updates = next(steps)
            except StopIteration as done:
                result = done.value[0]
                break
            yield [u for u in updates if u.member == 0]
        result.extra["pack_size"] = 1
        result.wall_seconds = result.extra["pack_wall_seconds"]  # all of it was its own
        return [result]
    return (yield from _train(specs, device))


def _train(specs: Sequence[TrialSpec], device: str | torch.device = "cpu") -> PackSteps:
    """iter_pack for validated specs of one shape (two or more, except in benchmarks).

    The packed model's members ("slots") are tracked by ``slots``, the index in ``specs``
    of each. At the end of an epoch in which a member stopped, the pack is compacted to
    the members still training (``PackedRNN.select`` and ``PackedOptimizer.select``), so
    a pack costs about the sum of its members' epochs rather than K times the longest. A
    lone survivor keeps training beside a copy of itself (see ``train_pack``), and is
    recorded once.
    """
    started, started_at = time.perf_counter(), time.time()
    device = torch.device(device)
    first = specs[0]
    task = get_task(first.task, first.seq_len, first.corpus)
    k = len(specs)

    # One data stream per distinct data_seed, in order of first appearance.
    seeds = list(dict.fromkeys(s.data_seed for s in specs))
    stream_of = [seeds.index(s.data_seed) for s in specs]
    data_gens = [torch.Generator().manual_seed(seed) for seed in seeds]
    val_sets = [
        task.sample(torch.Generator().manual_seed(seed + _VAL_SEED_OFFSET), first.val_size, "val")
        for seed in seeds
    ]
    x_vals = torch.stack([x for x, _ in val_sets]).to(device)  # (streams, val, steps, in)
    y_vals = torch.stack([y for _, y in val_sets]).to(device)

    model = PackedRNN(k, first.cell, task.input_dim, first.hidden, task.output_dim)
    init_weights(model, specs)
    model.to(device)
    params = list(model.parameters())

    slots = list(range(k))
    pack = _Streams(slots, stream_of, device)
    by_stream = torch.tensor(stream_of, device=device)
    x_val, y_val = x_vals.index_select(0, by_stream), y_vals.index_select(0, by_stream)
    diagnostics = init_diagnostics(model, task, x_val[:, :PROBE_SIZE], y_val[:, :PROBE_SIZE])
    with torch.no_grad():
        initial = (
            task.loss(model(x_val, task.loss_steps)[0], y_val, per_member=True)
            .double()
            .cpu()
            .tolist()
        )
    for d, loss0 in zip(diagnostics, initial, strict=True):
        d.initial_loss = loss0

    lr = torch.tensor([s.lr for s in specs], dtype=torch.float32, device=device)
    clip = torch.tensor([s.clip if s.clip is not None else math.inf for s in specs], device=device)
    targets = [s.target_loss if s.target_loss is not None else task.default_target for s in specs]
    optimizer = get_optimizer(first.optimizer)(params, lr)

    converged: list[int | None] = [None] * k
    streak = [0] * k  # consecutive evaluations at or below the target, per member
    diverged: list[int | None] = [None] * k
    history: list[list[EpochRecord]] = [[] for _ in range(k)]
    budget = max(s.max_epochs for s in specs)
    n_batches = first.batches_per_epoch
    member_epochs = 0

    for epoch in range(1, budget + 1):
        # Every slot is training at the start of an epoch (the pack was compacted).
        n = len(slots)
        member_epochs += n
        active = torch.ones(n, dtype=torch.bool, device=device)
        loss_sum = torch.zeros(n, dtype=torch.float64, device=device)
        norm_sum = torch.zeros(n, dtype=torch.float64, device=device)
        for _ in range(n_batches):
            # Each live stream's batch is drawn once; members of a stream share it.
            batches = [task.sample(data_gens[s], first.batch_size) for s in pack.streams]
            x = torch.stack([b[0] for b in batches]).to(device).index_select(0, pack.of_slot)
            y = torch.stack([b[1] for b in batches]).to(device).index_select(0, pack.of_slot)
            outputs, _ = model(x, task.loss_steps)
            losses = task.loss(outputs, y, per_member=True)
            model.zero_grad(set_to_none=False)
            torch.where(active, losses, torch.zeros_like(losses)).sum().backward()
            norms = member_grad_norms(params)
            bad = active & ~(torch.isfinite(losses) & torch.isfinite(norms))
            if bool(bad.any()):
                for j in bad.nonzero().flatten().tolist():
                    diverged[slots[j]] = epoch
                active &= ~bad
            loss_sum += losses.detach().double()
            norm_sum += norms.double()
            clip_member_grads(params, norms, clip)
            optimizer.step(active)

        with torch.no_grad():
            out_val, hidden = model(x_val, task.loss_steps)
            val_loss = task.loss(out_val, y_val, per_member=True).double().cpu()
            h_val = hidden.reshape(n, -1)
            h_var, h_sat = _spread(h_val)
        train_loss, grad_norm = (loss_sum / n_batches).cpu(), (norm_sum / n_batches).cpu()

        keep: list[int] = []
        updates: list[EpochUpdate] = []
        for j, i in enumerate(slots):
            if j > 0 and slots[j - 1] == i:  # the copy beside a lone survivor
                if keep and keep[-1] == j - 1:
                    keep.append(j)
                continue
            spec, v = specs[i], float(val_loss[j])
            history[i].append(
                EpochRecord(
                    epoch=epoch,
                    train_loss=float(train_loss[j]),
                    val_loss=v,
                    grad_norm=float(grad_norm[j]),
                    hidden_var=float(h_var[j]),
                    hidden_sat=float(h_sat[j]),
                )
            )
            previous = history[i][-2].val_loss if len(history[i]) > 1 else initial[i]
            if diverged[i] is None and _diverged(v, initial[i], previous, task, spec):
                diverged[i] = epoch
            if diverged[i] is None:
                streak[i] = streak[i] + 1 if v <= targets[i] else 0
                if converged[i] is None and streak[i] >= spec.patience:
                    converged[i] = epoch - spec.patience + 1  # the first of the streak
                if epoch < spec.max_epochs and not (converged[i] and spec.stop_on_converge):
                    keep.append(j)
            updates.append(EpochUpdate(i, history[i][-1], converged[i], diverged[i]))
        yield updates
        if not keep:
            break
        if len(keep) < n:
            if len(keep) == 1:
                keep *= 2  # never a pack of one: see train_pack
            index = torch.tensor(keep, device=device)
            model = model.select(index)
            params = list(model.parameters())
            optimizer.select(params, index)
            clip = clip.index_select(0, index)
            x_val, y_val = x_val.index_select(0, index), y_val.index_select(0, index)
            slots = [slots[j] for j in keep]
            pack = _Streams(slots, stream_of, device)

    wall = time.perf_counter() - started
    trained = sum(len(h) for h in history) or 1  # member-epochs: a pack's cost is about this
    return [
        TrialResult(
            spec=spec,
            converged_epoch=converged[i],
            diverged_epoch=diverged[i],
            target_loss=float(targets[i]),
            baseline_loss=float(task.baseline_loss),
            history=history[i],
            diagnostics=diagnostics[i],
            wall_seconds=wall * len(history[i]) / trained,
            device=str(device),
            node=platform.node(),
            extra={
                "pack_size": k,
                "member_epochs": member_epochs,
                "started_at": started_at,
                "pack_wall_seconds": wall,
            },
        )
        for i, spec in enumerate(specs)
    ]


class _Streams:
    """Which data streams the slots of a pack read.

    ``streams``: the stream ids with at least one slot, ascending (the batches drawn each
    step, in this order); ``of_slot``: for each slot, the position of its stream in
    ``streams`` (a long tensor on ``device``, to gather each slot's batch).
    """

    def __init__(self, slots: Sequence[int], stream_of: Sequence[int], device: torch.device):
        self.streams = sorted({stream_of[i] for i in slots})
        position = {s: p for p, s in enumerate(self.streams)}
        self.of_slot = torch.tensor([position[stream_of[i]] for i in slots], device=device)


def _diverged(
    val_loss: float, initial: float, previous: float, task: Task, spec: TrialSpec
) -> bool:
    """The divergence rule, applied to the validation loss after each epoch.

    Diverged when the loss is non-finite; when it rose above ``divergence_factor`` times
    the initial loss (it blew up during training); or when it sits above
    ``divergence_factor`` times the task's memoryless baseline and the epoch improved it
    by less than ``STALL_IMPROVEMENT`` (it exploded and training is not bringing it back).
    Non-finite training losses and gradients are caught per batch.
    """
    factor = spec.divergence_factor
    if not math.isfinite(val_loss) or val_loss > factor * initial:
        return True
    stalled = val_loss > (1 - STALL_IMPROVEMENT) * previous
    return val_loss > factor * task.baseline_loss and stalled


_SPREAD_COLUMNS = 1 << 14
"""Columns per chunk in :func:`_spread` on the CPU: a (K, 16,384) float32 scratch stays in
the core's cache."""


def _spread(h: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of (rows, n) ``h``: the variance and the share of saturated entries.

    Float64 CPU tensors. The variance is two-pass: the row mean, then the squared
    deviations from it summed; the saturated entries are counted as 0/1 floats. On the
    CPU both go through the row in chunks of ``_SPREAD_COLUMNS`` columns, each reduced in
    float32 (PyTorch's cascade summation; a chunk's count is exact) and the chunks added
    in float64: within 1e-6 of a float64 computation (``tests/test_train.py``) and, on a
    pack's validation set (K x 1,024 sequences x steps x H), about 8x faster than a
    float64 reduction of the whole row, which cost more than the validation forward pass.
    """
    rows, n = h.shape
    columns = _SPREAD_COLUMNS if h.device.type == "cpu" else n
    mean = h.mean(dim=1, keepdim=True)
    scratch = h.new_empty(rows, min(n, columns))
    squares = torch.zeros(rows, dtype=torch.float64, device=h.device)
    saturated = torch.zeros(rows, dtype=torch.float64, device=h.device)
    for part in h.split(columns, dim=1):
        chunk = scratch[:, : part.shape[1]]
        squares += torch.linalg.vecdot(torch.sub(part, mean, out=chunk), chunk)
        saturated += torch.abs(part, out=chunk).gt_(SATURATION).sum(dim=1)
    return (squares / (n - 1)).cpu(), (saturated / n).cpu()  # n=1: NaN variance


def init_diagnostics(model: PackedRNN, task: Task, x: Tensor, y: Tensor) -> list[InitDiagnostics]:
    """Measure every member at initialization on a probe batch (claims C1-C3).

    ``x`` and ``y`` are one probe batch per member, stacked ((K, batch, steps, in) and
    (K, *targets)), or one batch shared by all members ((batch, steps, in) and targets).

    Per time step t: variance of h_t over the batch and units, the share of saturated
    units (abs(h_t) > 0.99), and the norm of dL/dh_t (how much of the loss's gradient
    reaches step t), and the norms of dL/dWxh and dL/dWhh (both exactly zero: the trial
    is frozen, it cannot train). Also the spectral radius of the recurrent matrix (the
    largest over the gate blocks for LSTM and GRU) and the loss before training. Leaves no
    gradients behind.
    """
    k = model.members
    outputs, hs = model.forward_steps(x)
    for h in hs:
        h.retain_grad()
    losses = task.loss(outputs, y, per_member=x.dim() == 4)
    # Each member's loss depends only on its own slice, so one backward gives all of them.
    torch.where(torch.isfinite(losses), losses, torch.zeros_like(losses)).sum().backward()
    with torch.no_grad():
        hstack = torch.stack([h.detach() for h in hs], dim=1).reshape(k * len(hs), -1)
        variances, saturation = (v.reshape(k, len(hs)) for v in _spread(hstack))
        grads = [
            h.grad.reshape(k, -1).double().norm(dim=1)
            if h.grad is not None
            else torch.zeros(k, dtype=torch.float64)
            for h in hs
        ]
        not_finite = ~torch.isfinite(losses).cpu()
        grad_norms = torch.stack(grads, dim=1).cpu()
        grad_norms[not_finite] = math.nan
        matrix_grads = [
            w.grad.reshape(k, -1).double().norm(dim=1).cpu()
            if w.grad is not None
            else torch.zeros(k, dtype=torch.float64)
            for w in (model.Wxh, model.Whh)
        ]
        for g in matrix_grads:
            g[not_finite] = math.nan
    model.zero_grad(set_to_none=True)
    result = []
    for i in range(k):
        radius = max(
            float(torch.linalg.eigvals(block.cpu().double()).abs().max())
            for block in model.recurrent_blocks(i)
        )
        result.append(
            InitDiagnostics(
                spectral_radius=radius,
                hidden_var=variances[i].tolist(),
                hidden_sat=saturation[i].tolist(),
                grad_norm=grad_norms[i].tolist(),
                initial_loss=float(losses[i].detach()),
                input_grad_norm=float(matrix_grads[0][i]),
                recurrent_grad_norm=float(matrix_grads[1][i]),
            )
        )
    return result
