"""What :mod:`pipeline.tracking` writes besides the entities of :mod:`pipeline.mlflowio`:
the times of a trial's run, the state of a live (streaming) trial run, and the experiment's
description.

Pure functions and plain data: nothing here contacts MLflow (or imports it).

Times. MLflow shows a run's duration as ``end_time - start_time`` (milliseconds). A trial
run's are its training's, not the logging's: ``start = result.extra["started_at"]`` (unix
seconds, the start of the trial's pack on the worker) and ``end = start +
result.wall_seconds``; a result without ``started_at`` (older ones) ends now and starts
``wall_seconds`` earlier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import yaml

from models.spec import TrialResult

NOTE_TAG = "mlflow.note.content"
"""MLflow's tag holding the markdown description of an experiment (or a run)."""
NOTE_MARK = "<!-- written by initstudy; edit freely, then remove this line to keep edits -->"
"""Ends a description initstudy wrote: only such a one (or none) is replaced on open."""


@dataclass
class LiveRun:
    """A trial run this tracker created RUNNING (:meth:`pipeline.tracking.Tracker.start_trials`)
    and has not finished yet."""

    run_id: str
    artifact_uri: str
    start_ms: int
    """The run's start_time (MLflow cannot change it afterwards)."""
    sent: set[int] = field(default_factory=set)
    """Epochs whose per-epoch metrics are logged already (never sent twice)."""
    params: list[Any] = field(default_factory=list)
    """The run's params, until they ride along with its first batch of metrics (a run
    costs no MLflow call more for being live)."""
    created: Any = None
    """With background writes: the future of the job creating the run (``run_id`` and
    ``artifact_uri`` are empty until it has run); None once created here."""


def ms(seconds: float) -> int:
    """Unix seconds as MLflow's milliseconds."""
    return round(seconds * 1000)


def training_span(result: TrialResult, now: float) -> tuple[float, float]:
    """The trial's training as (start, end) unix seconds (see the module docstring)."""
    wall = result.wall_seconds if math.isfinite(result.wall_seconds) else 0.0
    wall = max(0.0, float(wall))
    started = result.extra.get("started_at")
    if isinstance(started, int | float) and not isinstance(started, bool):
        begin = float(started)
        if math.isfinite(begin) and begin > 0:
            return begin, begin + wall
    return now - wall, now


def experiment_note(study: str, spec_text: str, params: dict[str, str]) -> str:
    """The experiment's description (markdown, shown on its page in the MLflow UI).

    From the driver's study params (``sampler``, ``n_trials``, ``objective``, ``claim``) and
    the spec's text (its ``description``; the others when a param is missing).
    """
    try:
        raw = yaml.safe_load(spec_text) if spec_text else None
    except yaml.YAMLError:
        raw = None
    spec: dict[str, Any] = raw if isinstance(raw, dict) else {}

    def value(name: str) -> str:
        got = params.get(name)
        if got in (None, "") and spec.get(name) is not None:
            got = str(spec[name])
        return _one_line(str(got or ""))

    objective = params.get("objective") or (spec.get("objective") or {}).get("metric", "")
    lines = [f"### initstudy study `{_one_line(study)}`", ""]
    claim = value("claim")
    lines += [f"**Claim:** {claim}" if claim else "**Claim:** none (exploration)", ""]
    lines += [
        "| sampler | trials planned | objective |",
        "|---|---|---|",
        f"| {value('sampler') or '?'} | {value('n_trials') or '?'} | "
        f"{_one_line(str(objective)) or '?'} (minimised) |",
        "",
    ]
    description = spec.get("description")
    if isinstance(description, str) and description.strip():
        lines += [description.strip(), ""]
    lines += [
        "**Runs.** The parent run (tag `initstudy.kind = study`) spans the study and holds "
        "`spec.yaml`, the verdicts (tags `initstudy.verdict.<claim>`), the summary "
        "(metrics `trials_<outcome>`, `best_value`, `best_trial`) and the report "
        "(`report/`). Each trial is a child run named "
        "`<number>-<init>[+<recurrent init>]-T<seq_len>-H<hidden>-lr<lr>-s<seed>` "
        "(the cell and gains when they are not the defaults), tagged `initstudy.kind = "
        "trial`, `initstudy.trial_key`, `initstudy.trial_number` and `initstudy.outcome`. "
        "Params: every TrialSpec field. Metrics: per epoch (step = epoch: `train_loss`, "
        "`val_loss`, `grad_norm`, `hidden_var`, `hidden_sat`) and one summary each "
        "(`converged_epoch`, `best_val_loss`, `epochs_run`, `wall_seconds`, ...). "
        "A run's duration is its training time; sort by `metrics.converged_epoch` to rank "
        "the trials.",
        "",
        NOTE_MARK,
    ]
    return "\n".join(lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())
