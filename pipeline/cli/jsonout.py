"""``--json`` for ``status``, ``list``, ``validate`` and ``check``: one JSON object on
stdout, for scripts.

The keys are stable (a key is only ever added, never renamed or removed; docs/cli.md lists
them) and each command's object is built here, beside the table it mirrors. With
``--json`` nothing else goes to stdout: an error is still one ``error:`` line on stderr with
the command's exit code (stdout empty), and warnings still go to stderr too.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from pipeline.check import CheckReport
    from pipeline.storage import StudyCounts
    from pipeline.studyspec import StudySpec

JsonFlag = typer.Option(
    "--json", metavar="", help="Print one JSON object (stable keys; see docs/cli.md)."
)
"""The ``--json`` flag every command that has one shares."""

COUNT_KEYS = (
    "planned",
    "complete",
    "converged",
    "censored",
    "stalled",
    "frozen",
    "diverged",
    "running",
    "waiting",
    "failed",
    "remaining",
)
"""``status --json``'s ``trials`` keys (``remaining``: planned trials not complete)."""
STATUS_KEYS = ("study", "trials", "interrupted")
LIST_KEYS = ("study", "stage", "planned", "complete", "running", "failed")
CHECK_KEYS = ("study", "ok", "trials", "runs", "grid_points", "problems")
VALIDATE_KEYS = (
    "spec",
    "study",
    "sampler",
    "trials",
    "stages",
    "estimated_cpu_seconds",
    "needs_yes",
    "searched",
    "warnings",
    "seeds_per_cell",
    "power",
    "design",
    "comparisons",
)
POWER_KEYS = ("text", "seeds_needed", "enough")
COMPARISON_POWER_KEYS = ("claim", "faster", "than", "text", "seeds_needed", "enough")
"""``validate --json``'s ``comparisons`` entries: a power estimate per declared comparison."""


def emit(document: dict[str, Any]) -> None:
    """Print ``document`` as JSON on stdout (NaN and infinity become null)."""
    typer.echo(json.dumps(_finite(document), indent=2, sort_keys=False))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def counts(c: StudyCounts) -> dict[str, int]:
    """A study's trial counts by :data:`COUNT_KEYS`."""
    return {key: int(getattr(c, key)) for key in COUNT_KEYS}


def status(study: str, c: StudyCounts, driven: bool) -> dict[str, Any]:
    """``status --json``: the counts, and ``interrupted``: true when trials are RUNNING with
    no live driver (Ctrl-C, a killed driver; rerun ``run`` to resume them)."""
    return {"study": study, "trials": counts(c), "interrupted": not driven}


def list_row(study: str, stage: str, c: StudyCounts) -> dict[str, Any]:
    """One study of ``list --json``'s ``studies``; ``stage`` null when it has none."""
    return {
        "study": study,
        "stage": stage or None,
        "planned": c.planned,
        "complete": c.complete,
        "running": c.running,
        "failed": c.failed,
    }


def check(report: CheckReport) -> dict[str, Any]:
    """``check --json``: ``ok`` when ``problems`` is empty (the exit code says it too)."""
    return {
        "study": report.study,
        "ok": report.ok,
        "trials": report.trials,
        "runs": report.runs,
        "grid_points": report.grid_points,
        "problems": list(report.problems),
    }


def stages(spec: StudySpec) -> list[dict[str, object]]:
    """A tuned protocol's two studies and their trials, for ``validate --json``."""
    from pipeline.protocolspec import TUNE_SUFFIX, stage_trials

    tune, measure = stage_trials(spec)
    return [
        {"stage": "tune", "study": spec.name + TUNE_SUFFIX, "trials": tune},
        {"stage": "measure", "study": spec.name, "trials": measure},
    ]
