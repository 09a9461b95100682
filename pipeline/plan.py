"""The pack plan and the cost model: which trials train together, in what order, and how
long a trial or a study takes.

One estimate of training time, :func:`step_seconds` (seconds of one time step of one
batch on one CPU core), serves both the order of the packs (:func:`pack_cost`) and the
study's estimate that ``initstudy validate`` prints (:func:`study_seconds`, through
``StudySpec.estimated_cpu_seconds``). How large a pack may be is a budget of multiply-adds
(:func:`batch_work`), since that is what packing was measured against. How many trials a
sampled study asks at a time is :func:`sampled_batch`. How much memory a pack needs is
:func:`pack_memory_bytes`.
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from models.cells import get_cell
from models.spec import TrialSpec
from models.tasks import COPY_LENGTH

if TYPE_CHECKING:
    from pipeline.studyspec import StudySpec

MAX_AUTO_PACK = 16
"""Largest pack the driver forms on its own (``--pack-size`` overrides)."""
PACK_WORK_BUDGET = 128e6
"""Multiply-adds of one batch (all time steps, all members) a CPU pack may cost when the
driver picks the pack size. Packing pays while each member's step is small: on a 2-core
CPU (``benchmarks/packing.py``, rnn_tanh, batch 32), 16 members run 5.2x faster than one
by one at hidden 64 and length 10, 3.3x at length 50, but 1.5x at hidden 256 and length
10 and nothing (0.96x, 655 MiB) at hidden 256 and length 50. The budget keeps the first
two at 16 and makes the last two 6 and 1. Not applied to GPU packs (not measured)."""
SAMPLED_PACK = 4
"""Trials asked per free slot at a time for a sampled study whose sampler does not model
results (random, qmc), unless ``--pack-size`` is given (see :func:`sampled_batch`)."""
STEP_SECONDS = 1.0e-4
"""Estimate: fixed seconds per time step of one training batch (forward, backward, update)
for an Elman cell on one CPU core; a cell with G gate blocks costs (1 + G) / 2 times it."""
MAC_SECONDS = 2.5e-10
"""Estimate: seconds per multiply-add of the recurrent and input products, batch x G x
hidden x (hidden + 1) per time step, forward and backward together, on one CPU core."""
WORKER_BYTES = 256 * 2**20
"""Estimate: resident memory of a worker process with PyTorch loaded, before any pack."""
MEMORY_TERMS = {"train_gates": 3, "train_hidden": 2, "val_hidden": 2, "outputs": 4}
"""How many float32 tensors of each size :func:`pack_memory_bytes` counts. Training keeps,
per member, sequence and batch row, the input, ``train_gates`` gate-width tensors
(pre-activations, gate outputs, their gradients) and ``train_hidden`` hidden-width ones
for backprop through time; the validation pass (no gradients, but the whole validation
set at once) the input, for the Elman cells the input projection of every step (the fused
LSTM and GRU recurrences compute it step by step), and ``val_hidden`` hidden-width tensors;
logits count ``outputs`` times. The calibration against measured peaks is in
docs/design.md (memory estimate); ``tests/test_packing_plan.py`` measures one case again."""


@dataclass
class Pending:
    """A trial that exists in Optuna and waits for its result."""

    number: int
    trial_id: int
    spec: TrialSpec
    key: str


# -- the cost model --------------------------------------------------------------------


def time_steps(seq_len: int, task: str) -> int:
    """Time steps of one sequence: ``seq_len``, plus the symbols and the recall of copy."""
    return seq_len + (2 * COPY_LENGTH if task == "copy" else 0)


def step_work(batch_size: float, gates: float, hidden: float) -> float:
    """Multiply-adds of one time step of one batch: the recurrent and input matrices of
    every gate (the input width counted as one)."""
    return batch_size * gates * hidden * (hidden + 1)


def step_seconds(gates: float, work: float) -> float:
    """Estimated seconds of one time step of one training batch (forward, backward,
    update) on one CPU core, for a cell of ``gates`` gate blocks doing ``work``
    multiply-adds. Measured with ``models.train_trial`` on one torch thread of a 2-core
    x86-64 VM; within about 2x of it for hidden 8-512 (smaller models are overhead-bound,
    larger ones BLAS-bound). Validation, output projections and packing are left out."""
    return STEP_SECONDS * (1 + gates) / 2 + MAC_SECONDS * work


def batch_work(spec: TrialSpec) -> float:
    """Multiply-adds of one member's forward pass over one batch (every time step)."""
    gates = get_cell(spec.cell).gates
    return time_steps(spec.seq_len, spec.task) * step_work(spec.batch_size, gates, spec.hidden)


def batch_seconds(spec: TrialSpec) -> float:
    """Estimated seconds of one training batch of one trial, on one CPU core, alone."""
    gates = get_cell(spec.cell).gates
    per_step = step_seconds(gates, step_work(spec.batch_size, gates, spec.hidden))
    return time_steps(spec.seq_len, spec.task) * per_step


def trial_seconds(spec: TrialSpec) -> float:
    """Estimated seconds of one trial at its full budget, on one CPU core, alone."""
    return spec.max_epochs * spec.batches_per_epoch * batch_seconds(spec)


def pack_cost(specs: Sequence[TrialSpec]) -> float:
    """A relative estimate of a pack's training time: its members' estimated time, each at
    the pack's largest epoch budget (a pack trains until its last member stops)."""
    batches = max(s.max_epochs for s in specs) * specs[0].batches_per_epoch
    return len(specs) * batches * batch_seconds(specs[0])


def study_seconds(spec: StudySpec) -> float:
    """Estimated seconds of a study's trials on one CPU core, each at its full budget:
    :func:`step_seconds` over every time step of every batch.

    The cost is a product of independent factors (the steps, the gates, the width), so for
    a grid (a full product: every value equally often) the mean cost is that of the mean
    factors, and for a sampled study the costliest trial is that of the largest ones.
    """
    from models import CELLS

    fixed = spec.fixed()
    batch = int(fixed.get("batch_size", TrialSpec.batch_size))
    batches = spec.max_epochs * int(fixed.get("batches_per_epoch", TrialSpec.batches_per_epoch))
    pick = statistics.fmean if spec.is_grid else max
    extra = [time_steps(0, str(task)) for task in spec.values("task")]
    steps = pick(int(v) for v in spec.values("seq_len")) + pick(extra)
    gates = pick(CELLS[str(c)].gates for c in spec.values("cell"))
    width = pick(int(h) * (int(h) + 1) for h in spec.values("hidden"))
    per_step = step_seconds(gates, batch * gates * width)
    return spec.n_trials_planned * batches * steps * per_step


def pack_memory_bytes(
    spec: TrialSpec, members: int, input_dim: int | None = None, output_dim: int | None = None
) -> float:
    """Estimated peak memory of a worker training ``members`` trials of ``spec``'s shape
    together (a lone trial trains beside a copy of itself: as 2), in bytes, with
    :data:`WORKER_BYTES` (see :data:`MEMORY_TERMS` for the calibration). The task's input
    and output widths default to adding's (2, 1) and copy's (10, 10); give charlm's (its
    vocabulary) from the built task."""
    known = {"adding": (2, 1), "copy": (10, 10)}.get(spec.task, (256, 256))
    n_in, n_out = input_dim or known[0], output_dim or known[1]
    k, t = max(2, members), time_steps(spec.seq_len, spec.task)
    gates, h, terms = get_cell(spec.cell).gates, spec.hidden, MEMORY_TERMS
    read = 1 if spec.task == "adding" else t  # the steps whose outputs are computed
    per_row = t * (n_in + terms["train_gates"] * gates * h + terms["train_hidden"] * h)
    train = spec.batch_size * (per_row + terms["outputs"] * read * n_out)
    projection = gates * h if gates == 1 else 0  # the Elman cells hold it whole
    per_val = t * (n_in + projection + terms["val_hidden"] * h) + terms["outputs"] * read * n_out
    # parameters, gradients and two optimizer moments
    params = 4 * (gates * h * (n_in + h + 2) + h * n_out + n_out)
    return WORKER_BYTES + 4.0 * k * (train + spec.val_size * per_val + params)


# -- asking ----------------------------------------------------------------------------


def sampled_batch(
    startup: int | None,
    complete: int,
    in_progress: int,
    free_slots: int,
    pack_size: int | None,
) -> int:
    """How many trials a sampled (non-grid) study asks now; the driver still caps it at the
    trials left to plan.

    Args:
        startup: trials the sampler draws at random before it models results (TPE's
            ``n_startup_trials``, ``StudySpec.startup_trials``); None for a sampler that
            never models results (random, qmc).
        complete: the study's COMPLETE trials (what the sampler models; a failed trial
            does not count, as it does not for Optuna's TPE).
        in_progress: trials asked and not finished (RUNNING or WAITING).
        free_slots: slots that could take a pack now.
        pack_size: ``--pack-size`` if it was given, else None.

    Returns:
        * random/qmc: ``free_slots x (pack_size or SAMPLED_PACK)``, full batches, since
          their draws do not depend on results;
        * TPE before ``startup`` trials are complete: every random draw still to ask
          (``startup - complete - in_progress``) at once, since they are random anyway and
          pack well; 0 while the random start is all in progress, so that no modelled
          trial is asked before the model has its ``startup`` results;
        * TPE after that: one trial per free slot (``pack_size`` per slot when given),
          so that the sampler sees each result before it proposes the next trial.
    """
    if startup is None:
        return max(0, free_slots) * (pack_size or SAMPLED_PACK)
    if complete < startup:
        return max(0, startup - complete - in_progress)
    return max(0, free_slots) * (pack_size or 1)


def grid_window(slots: int, pack_size: int) -> int:
    """How many created, unfinished trials a grid keeps at most (queued or training): two
    packs per slot, one training and one ready for the moment it ends, so no slot waits for
    trials to be created, and the first pack starts after ``pack_size`` creations whatever
    the grid's size. Creating further ahead buys nothing: it only delays the first pack
    and leaves more RUNNING trials for a resume to take over after a crash."""
    return 2 * max(1, slots) * max(1, pack_size)


# -- packing ---------------------------------------------------------------------------


def make_packs(
    pending: Sequence[Pending],
    pack_size: int,
    limit: Callable[[TrialSpec], int] | None = None,
) -> list[list[Pending]]:
    """Group trials by shape, split each group into near-equal packs of <= pack_size (and
    <= ``limit(spec)`` of the group's shape, if given), and order the packs longest first
    (by :func:`pack_cost`), so that the last packs to start are short ones and no slot
    idles long at the end of a study."""
    groups: dict[tuple[object, ...], list[Pending]] = {}
    for p in pending:
        groups.setdefault(p.spec.shape_key(), []).append(p)
    packs: list[list[Pending]] = []
    for members in groups.values():
        size = pack_size if limit is None else min(pack_size, limit(members[0].spec))
        n_packs = math.ceil(len(members) / max(1, size))
        # Consecutive runs of the grid, so neighbours (often one init, stopping at about
        # the same epoch) share a pack and it sheds them together: on the headline study
        # this took 193 s of pack time against 199 s with trials dealt round-robin.
        small, bigger = divmod(len(members), n_packs)  # `bigger` packs get one more
        start = 0
        for i in range(n_packs):
            end = start + small + (1 if i < bigger else 0)
            packs.append(members[start:end])
            start = end
    return sorted(packs, key=lambda pack: -pack_cost([p.spec for p in pack]))


def pack_sizes(
    pack_size: int | None, n_trials: int, slots: int, gpu: bool
) -> tuple[int, Callable[[TrialSpec], int] | None]:
    """The pack size for :func:`make_packs` and its limit per shape: the user's
    ``pack_size`` for every shape, or else :func:`auto_pack_size` within :func:`pack_limit`."""
    if pack_size:
        return pack_size, None
    return auto_pack_size(n_trials, slots), functools.partial(pack_limit, gpu=gpu)


def auto_pack_size(n_trials: int, slots: int) -> int:
    """Enough packs to keep every slot busy, each as large as that allows (<= 16)."""
    return max(1, min(MAX_AUTO_PACK, math.ceil(n_trials / max(1, slots))))


def pack_limit(spec: TrialSpec, gpu: bool = False) -> int:
    """The largest automatic pack for trials of this shape: on a CPU, as many members as
    :data:`PACK_WORK_BUDGET` allows (at least 1, at most :data:`MAX_AUTO_PACK`); on a
    GPU, :data:`MAX_AUTO_PACK`."""
    if gpu:
        return MAX_AUTO_PACK
    return max(1, min(MAX_AUTO_PACK, int(PACK_WORK_BUDGET // batch_work(spec))))
