"""The contract between ``models/`` and ``pipeline/``: two plain, serializable records.

A :class:`TrialSpec` says everything that determines a trial's numbers; a
:class:`TrialResult` is what training it produced. Both round-trip through JSON
(``to_dict``/``from_dict``), so the pipeline can move them between processes and
store them without knowing anything about tensors. This module must not import
torch, Ray, Optuna or MLflow.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

OUTCOMES: tuple[str, ...] = ("converged", "censored", "stalled", "frozen", "diverged")
"""Every way a trial can end (see :meth:`TrialResult.outcome`)."""
DEFAULT_PATIENCE = 1
"""Consecutive evaluations at or below the target that count as converged. Measured
(``benchmarks/convergence_rule.py``, docs/results.md): at 1024 validation sequences a
longer patience neither agrees better with a 4096-sequence reference nor removes false
convergences, and it delays and censors more, so the default is the first crossing."""
DEFAULT_VAL_SIZE = 1024
"""Validation sequences. Measured (``benchmarks/convergence_rule.py``): 1024 halves the
evaluation noise of 256 near the target (relative std 0.10 -> 0.05) and cuts disagreement
of the converged epoch with a 4096-sequence reference from 41% to 16% of trials, for
0.04-0.8x an epoch of training per evaluation."""
STALL_FRACTION = 0.8
"""A trial whose best validation loss never fell below this share of the task's memoryless
baseline never left the baseline (stalled). With 256 validation sequences a squared-error
loss has a relative standard error of about sqrt(2/256) = 9%, so a 20% margin is beyond
noise; at the default 1024 it is 4%."""


@dataclass(frozen=True)
class TrialSpec:
    """Everything that determines one trial's result. Validated by ``models.check_spec``."""

    task: str = "adding"
    """Task name from ``models.TASKS`` (adding, copy, charlm)."""
    seq_len: int = 30
    """Sequence length: the whole sequence for adding and charlm, the blank delay T for copy."""
    hidden: int = 64
    """Hidden units of the recurrent cell."""
    cell: str = "rnn_tanh"
    """Cell name from ``models.CELLS`` (rnn_tanh, rnn_relu, rnn_linear, lstm, gru)."""
    init: str = "xavier"
    """Init scheme from ``models.INIT_SCHEMES``, applied to Wxh, Whh and Why."""
    init_recurrent: str | None = None
    """Optional scheme for the recurrent matrix Whh alone (None = same as ``init``)."""
    scale: float = 1.0
    """Multiplier applied to every matrix the scheme draws (the gain)."""
    recurrent_scale: float | None = None
    """Gain for the recurrent matrix Whh alone (None = ``scale``); Wxh and Why keep ``scale``."""
    optimizer: str = "adam"
    """Optimizer name from ``models.OPTIMIZERS`` (sgd, adam, rmsprop)."""
    lr: float = 1e-3
    """Learning rate."""
    clip: float | None = None
    """Gradient-norm clipping threshold (None = no clipping)."""
    batch_size: int = 32
    """Sequences per training batch."""
    batches_per_epoch: int = 50
    """Training batches in one epoch."""
    max_epochs: int = 30
    """Epoch budget; a trial that has not converged by then is censored."""
    target_loss: float | None = None
    """Validation loss that counts as converged (None = the task's default target)."""
    patience: int = DEFAULT_PATIENCE
    """Converged after this many consecutive evaluations at or below the target; the
    reported epoch is the first of them."""
    divergence_factor: float = 10.0
    """A validation loss above this factor times the initial loss counts as divergence."""
    val_size: int = DEFAULT_VAL_SIZE
    """Sequences in the fixed validation set."""
    seed: int = 0
    """Seed for the weights."""
    data_seed: int = 0
    """Seed for the data stream (training batches and validation set)."""
    corpus: str | None = None
    """Text file for the charlm task (None = the corpus built from Python's own docs)."""
    stop_on_converge: bool = True
    """Stop training once the target is reached (the epoch count is what is measured)."""

    def to_dict(self) -> dict[str, Any]:
        """Return the spec as a plain JSON-able dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialSpec:
        """Build a spec from a dict, refusing keys that are not fields."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            names, allowed = ", ".join(unknown), ", ".join(sorted(known))
            raise ValueError(f"unknown TrialSpec field(s) {names}; known: {allowed}")
        return cls(**data)

    def key(self, claim: str = "") -> str:
        """Identity key: a hash of the spec and the claim it is run against."""
        payload = json.dumps({"spec": self.to_dict(), "claim": claim}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def shape_key(self) -> tuple[Any, ...]:
        """Trials with equal shape keys can be trained together in one pack.

        The seeds, init, learning rate, clipping, targets and epoch budget may differ
        within a pack, and so may ``data_seed``: each distinct data seed is its own data
        stream inside the pack.
        """
        return (
            self.task,
            self.cell,
            self.hidden,
            self.seq_len,
            self.batch_size,
            self.batches_per_epoch,
            self.val_size,
            self.optimizer,
            self.corpus,
        )


@dataclass
class EpochRecord:
    """Metrics after one training epoch."""

    epoch: int
    """1-based epoch number."""
    train_loss: float
    """Mean training loss over the epoch's batches."""
    val_loss: float
    """Loss on the fixed validation set after the epoch."""
    grad_norm: float
    """Mean gradient norm over the epoch's batches, before clipping."""
    hidden_var: float
    """Variance of the hidden state over the validation set's steps."""
    hidden_sat: float
    """Share of hidden units with abs(h) > 0.99 on the validation set."""


@dataclass
class InitDiagnostics:
    """Measurements at initialization, on a probe batch, before any training (claims C1-C3)."""

    spectral_radius: float
    """Largest absolute eigenvalue of Whh (for gated cells, the largest over the gate blocks)."""
    hidden_var: list[float]
    """Variance of the hidden state at each time step."""
    hidden_sat: list[float]
    """Share of hidden units with abs(h) > 0.99 at each time step."""
    grad_norm: list[float]
    """Norm of dL/dh_t at each time step t."""
    initial_loss: float
    """Validation loss before training (on the whole validation set)."""
    input_grad_norm: float = math.nan
    """Norm of dL/dWxh on the probe batch (NaN: not measured, a result from before it was)."""
    recurrent_grad_norm: float = math.nan
    """Norm of dL/dWhh on the probe batch (NaN: not measured)."""

    @property
    def frozen(self) -> bool:
        """True when the loss sends exactly zero gradient into Wxh and Whh at init.

        Measured, not inferred: e.g. uniform[0,1] at hidden >= 32 saturates tanh to
        exactly +-1.0 in float32, so no gradient reaches the input or recurrent matrix and
        only the output layer can learn.
        """
        return self.input_grad_norm == 0.0 and self.recurrent_grad_norm == 0.0


@dataclass
class TrialResult:
    """What training one TrialSpec produced. Divergence is data, not an error."""

    spec: TrialSpec
    converged_epoch: int | None
    """First of ``patience`` consecutive epochs whose validation loss was at or below the
    target; None = not reached within the budget."""
    diverged_epoch: int | None
    """Epoch at which the loss became non-finite or exploded; None = did not diverge."""
    target_loss: float
    """The target actually used (the spec's or the task's default)."""
    baseline_loss: float
    """The task's memoryless baseline loss."""
    history: list[EpochRecord]
    diagnostics: InitDiagnostics
    wall_seconds: float = 0.0
    """This trial's share of its pack's training time, in proportion to the epochs it
    trained (``wall * its epochs / all members' epochs``; a trial trained alone: all of
    it). The shares of a pack add up to the pack's time, :attr:`pack_wall_seconds`. A result
    stored before the share (no ``pack_wall_seconds`` in ``extra``) holds the pack's time."""
    device: str = "cpu"
    node: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        """How the trial ended, one of :data:`OUTCOMES`; the one rule used everywhere.

        - ``converged``: the validation loss stayed at or below the target for
          ``patience`` evaluations, before any divergence (a trial that converged and
          later diverged, with ``stop_on_converge: false``, is converged);
        - ``diverged``: the loss became non-finite or exploded (``diverged_epoch``). A
          trial frozen at init is diverged when its loss exploded in training
          (:attr:`exploded`), with :attr:`frozen_at_init` still True; only a divergence
          that is not an explosion (a loss that was huge at init and does not come down,
          caught by the rule's "stuck above the baseline" clause) leaves it frozen;
        - ``frozen``: at init the loss sent exactly zero gradient into Wxh and Whh
          (:attr:`InitDiagnostics.frozen`, :attr:`frozen_at_init`), and the loss did not
          explode in training: it cannot train at any learning rate;
        - ``stalled``: the best validation loss never fell below :data:`STALL_FRACTION`
          of the task's memoryless baseline: it never left the baseline;
        - ``censored``: it left the baseline but did not reach the target in the budget.

        For time-to-event statistics every outcome but ``converged`` is censored at the
        budget; the verdicts tell them apart ("cannot train" is not "slow").
        """
        c, d = self.converged_epoch, self.diverged_epoch
        if c is not None and (d is None or c <= d):
            return "converged"
        if d is not None and (self.exploded or not self.diagnostics.frozen):
            return "diverged"
        if self.diagnostics.frozen:  # frozen, and its loss did not explode
            return "frozen"
        best = self.best_val_loss
        if not math.isfinite(best) or best >= STALL_FRACTION * self.baseline_loss:
            return "stalled"
        return "censored"

    @property
    def frozen_at_init(self) -> bool:
        """The init diagnosis, apart from what happened in training: the loss sent exactly
        zero gradient into Wxh and Whh at init (:attr:`InitDiagnostics.frozen`). True for
        every ``frozen`` outcome, and kept for a frozen trial whose loss then exploded
        (outcome ``diverged``) or that converged all the same (its output layer alone)."""
        return self.diagnostics.frozen

    @property
    def exploded(self) -> bool:
        """The trial diverged by an explosion: at its ``diverged_epoch`` a training loss,
        gradient norm or the validation loss was non-finite, or the validation loss was
        above the loss at init (it rose in training).

        The divergence rule (``models.train``) also ends a trial whose loss sits above
        ``divergence_factor`` times the task's baseline without improving; when that loss
        is still at or below where it started (huge at init, as uniform[0,1]'s is), the
        trial diverged but did not explode. False when it did not diverge.
        """
        d = self.diverged_epoch
        if d is None:
            return False
        record = next((r for r in self.history if r.epoch == d), None)
        if record is None:  # diverged before any epoch was recorded: no record to read
            return True
        values = (record.train_loss, record.grad_norm, record.val_loss)
        if not all(math.isfinite(v) for v in values):
            return True
        initial = self.diagnostics.initial_loss
        return math.isfinite(initial) and record.val_loss > initial

    @property
    def converged(self) -> bool:
        """The outcome is ``converged`` (reached the target before any divergence)."""
        return self.outcome == "converged"

    @property
    def diverged(self) -> bool:
        """The loss diverged at some epoch (also after converging; see ``diverged_epoch``)."""
        return self.diverged_epoch is not None

    @property
    def converged_at(self) -> int | None:
        """``converged_epoch`` when the outcome is converged, else None (the epoch the
        statistics and the objective read: a trial that diverged first did not converge)."""
        return self.converged_epoch if self.converged else None

    @property
    def pack_wall_seconds(self) -> float:
        """The training time of the pack this trial was trained in (``extra``'s
        ``pack_wall_seconds``; a result stored before it: ``wall_seconds``, then the pack's)."""
        value = self.extra.get("pack_wall_seconds")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return self.wall_seconds

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def best_val_loss(self) -> float:
        finite = [r.val_loss for r in self.history if math.isfinite(r.val_loss)]
        return min(finite) if finite else math.nan

    def numbers(self) -> dict[str, Any]:
        """The result without the fields that legitimately vary between runs."""
        d = self.to_dict()
        for k in ("wall_seconds", "device", "node", "extra"):
            d.pop(k)
        return d

    def to_dict(self) -> dict[str, Any]:
        """Return the result as a plain JSON-able dict (non-finite floats kept as floats)."""
        return {
            "spec": self.spec.to_dict(),
            "converged_epoch": self.converged_epoch,
            "diverged_epoch": self.diverged_epoch,
            "target_loss": self.target_loss,
            "baseline_loss": self.baseline_loss,
            "history": [asdict(r) for r in self.history],
            "diagnostics": asdict(self.diagnostics),
            "wall_seconds": self.wall_seconds,
            "device": self.device,
            "node": self.node,
            "extra": dict(self.extra),
            "outcome": self.outcome,  # derived: from_dict recomputes it
            "frozen_at_init": self.frozen_at_init,  # derived from the diagnostics
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialResult:
        return cls(
            spec=TrialSpec.from_dict(data["spec"]),
            converged_epoch=data["converged_epoch"],
            diverged_epoch=data["diverged_epoch"],
            target_loss=data["target_loss"],
            baseline_loss=data["baseline_loss"],
            history=[EpochRecord(**r) for r in data["history"]],
            diagnostics=InitDiagnostics(**data["diagnostics"]),
            wall_seconds=data.get("wall_seconds", 0.0),
            device=data.get("device", "cpu"),
            node=data.get("node", ""),
            extra=dict(data.get("extra", {})),
        )

    def to_json(self) -> str:
        """JSON text; NaN and infinity are written as the strings "NaN", "Infinity"."""
        return json.dumps(_encode_floats(self.to_dict()))

    @classmethod
    def from_json(cls, text: str) -> TrialResult:
        return cls.from_dict(_decode_floats(json.loads(text)))


_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _encode_floats(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: _encode_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_encode_floats(v) for v in obj]
    return obj


def _decode_floats(obj: Any) -> Any:
    if isinstance(obj, str) and obj in _NONFINITE:
        return _NONFINITE[obj]
    if isinstance(obj, dict):
        return {k: _decode_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_floats(v) for v in obj]
    return obj
