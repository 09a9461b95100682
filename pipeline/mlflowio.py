"""MLflow entities for initstudy's runs: a trial's metrics and params, tags, and the
``log_batch`` calls that carry them within MLflow's per-call limits.

Pure conversion for :mod:`pipeline.tracking`, which makes every call to the tracking store;
nothing here contacts one. mlflow is imported lazily (its entities only), so importing this
module is cheap. It knows nothing of tensors, Ray or Optuna.

A trial's run gets every :class:`~models.spec.TrialSpec` field as a param (``None`` as
``"None"``), its per-epoch metrics (step = epoch) and one summary metric of each kind
(step 0); a summary that does not apply (no converged epoch, no history) is left out.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

from models.spec import EpochRecord, TrialResult, TrialSpec

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, RunTag

MAX_METRICS_PER_CALL = 1000
MAX_PARAMS_PER_CALL = 100
MAX_TAGS_PER_CALL = 100
MAX_ENTITIES_PER_CALL = 1000
"""MLflow's log_batch limits (mlflow.utils.validation)."""
EPOCH_METRICS = ("train_loss", "val_loss", "grad_norm", "hidden_var", "hidden_sat")
"""The per-epoch metrics of a trial run, one value per epoch (step = epoch)."""

_T = TypeVar("_T")


def trial_metrics(result: TrialResult, skip_epochs: Collection[int] = ()) -> list[Metric]:
    """A trial's per-epoch metrics (step = epoch) and its summary metrics (step 0).

    ``skip_epochs``: epochs whose per-epoch metrics are logged already (streamed while the
    trial trained, :func:`epoch_metrics`): left out, so no history point is logged twice.
    """
    now = int(time.time() * 1000)
    records = [r for r in result.history if r.epoch not in skip_epochs]
    return epoch_metrics(records, now) + summary_metrics(result, now)


def epoch_metrics(records: Sequence[EpochRecord], timestamp: int | None = None) -> list[Metric]:
    """The per-epoch metrics of some epochs: one of each :data:`EPOCH_METRICS` per record,
    step = its epoch; ``timestamp`` in ms (default: now)."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000) if timestamp is None else timestamp
    return [
        Metric(name, float(getattr(record, name)), now, record.epoch)
        for record in records
        for name in EPOCH_METRICS
    ]


def summary_metrics(result: TrialResult, timestamp: int | None = None) -> list[Metric]:
    """A trial's summary metrics (step 0); one that does not apply is left out."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000) if timestamp is None else timestamp
    diag = result.diagnostics
    summary: dict[str, float | None] = {
        "converged": float(result.converged),
        "converged_epoch": result.converged_at,
        "frozen_at_init": float(diag.frozen),
        "input_grad_norm": diag.input_grad_norm,
        "recurrent_grad_norm": diag.recurrent_grad_norm,
        "diverged": float(result.diverged),
        "diverged_epoch": result.diverged_epoch,
        "epochs_run": result.epochs_run,
        "best_val_loss": result.best_val_loss,
        "final_val_loss": result.history[-1].val_loss if result.history else None,
        "initial_loss": diag.initial_loss,
        "target_loss": result.target_loss,
        "baseline_loss": result.baseline_loss,
        "wall_seconds": result.wall_seconds,  # its share of the pack's time
        "pack_wall_seconds": result.pack_wall_seconds,
        "spectral_radius": diag.spectral_radius,
        "hidden_var_first": diag.hidden_var[0] if diag.hidden_var else None,
        "hidden_var_last": diag.hidden_var[-1] if diag.hidden_var else None,
        "hidden_sat_last": diag.hidden_sat[-1] if diag.hidden_sat else None,
        "grad_norm_first": diag.grad_norm[0] if diag.grad_norm else None,
        "grad_norm_last": diag.grad_norm[-1] if diag.grad_norm else None,
    }
    return [Metric(k, float(v), now, 0) for k, v in summary.items() if v is not None]


def trial_params(spec: TrialSpec) -> list[Param]:
    """Every field of the spec as a param, ``None`` as ``"None"``.

    Read from the fields themselves (all scalars), not through ``spec.to_dict()``: the
    same strings without copying the spec.
    """
    return params({f.name: _param_value(getattr(spec, f.name)) for f in fields(spec)})


def metrics(values: dict[str, float], step: int = 0) -> list[Metric]:
    """Metrics of one step (default 0), logged now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(str(k), float(v), now, step) for k, v in values.items()]


def params(values: dict[str, Any]) -> list[Param]:
    """Params with keys and values as strings."""
    from mlflow.entities import Param

    return [Param(str(k), str(v)) for k, v in values.items()]


def tags(values: dict[str, Any]) -> list[RunTag]:
    """Run tags with keys and values as strings."""
    from mlflow.entities import RunTag

    return [RunTag(str(k), str(v)) for k, v in values.items()]


def batches(
    metrics: Sequence[_T], params: Sequence[_T], tags: Sequence[_T]
) -> Iterator[tuple[list[_T], list[_T], list[_T]]]:
    """Split into log_batch calls within MLflow's per-call limits."""
    m, p, t = list(metrics), list(params), list(tags)
    while m or p or t:
        p_now, p = p[:MAX_PARAMS_PER_CALL], p[MAX_PARAMS_PER_CALL:]
        t_now, t = t[:MAX_TAGS_PER_CALL], t[MAX_TAGS_PER_CALL:]
        room = min(MAX_METRICS_PER_CALL, MAX_ENTITIES_PER_CALL - len(p_now) - len(t_now))
        m_now, m = m[:room], m[room:]
        yield m_now, p_now, t_now


def _param_value(value: Any) -> str:
    return "None" if value is None else str(value)
