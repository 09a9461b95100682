"""Optuna's interactive plots of a study, from its trials table, as plotly figure JSON.

:func:`interactive_plots` builds an in-memory Optuna study from the ``trials`` table (the
searched parameters, as :func:`pipeline.results.param_importances` does, seeds left out:
a seed is a replicate, not a hyperparameter) and draws Optuna's parallel-coordinate,
slice, contour and parameter-importance plots (``optuna.visualization``, which needs
plotly). A plot the study cannot support is a note saying why, never an error.
:func:`plotly_js` is the plotly.js library the page inlines, so it works offline.

This module reads tables only; :mod:`pipeline.analysis.interactive` writes the page.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import optuna
from optuna.importance import BaseImportanceEvaluator

from pipeline.analysis.tables import StudyTables
from pipeline.results import _evaluator, params_study, varying_params
from pipeline.studyspec import Objective

__all__ = ["PLOTS", "InteractivePlots", "interactive_plots", "plotly_js"]

PLOTS: dict[str, str] = {
    "parallel_coordinate": "Parallel coordinates: every trial's parameters and objective",
    "slice": "Slice: the objective against each searched parameter",
    "contour": "Contour: the objective over pairs of the most important parameters",
    "param_importances": "Parameter importances",
}
"""The plots, by name, with their titles (the order the page shows them)."""

MAX_CONTOUR_PARAMS = 3
"""The contour plot's parameters: at most this many, the most important first."""

REPLICATES = ("seed", "data_seed")
"""Parameters that are replicates, never drawn as hyperparameters."""


@dataclass(frozen=True)
class InteractivePlots:
    """The plots drawn (name, title, plotly figure JSON) and the notes on those not drawn."""

    plots: list[tuple[str, str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """One per plot not drawn: "<title>: not drawn: <why>"."""
    objective: str = "objective"


def plotly_js() -> str:
    """plotly.js (minified, a few MB), the library the page runs, from the plotly package."""
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _study(tables: StudyTables) -> tuple[optuna.Study | None, list[str], str]:
    """The in-memory study of the searched parameters that vary, the parameters kept (most
    first), or None and why not."""
    trials = tables.trials
    if len(trials) < 2:
        return None, [], f"{len(trials)} complete trial(s), needs 2"
    kept, _, objective = varying_params(tables)
    kept = {p: d for p, d in kept.items() if p not in REPLICATES}
    if not kept:
        return None, [], "no searched parameter takes two values"
    if objective.map(math.isfinite).sum() < 2:
        return None, [], "fewer than 2 trials with a finite objective"
    study = params_study(trials, kept, objective, tables.study)
    return study, list(kept), ""


class _Known(BaseImportanceEvaluator):
    """Importances computed already (the report's): the plot draws them, not a second fit."""

    def __init__(self, values: Mapping[str, float]) -> None:
        self.values = dict(values)

    def evaluate(
        self,
        study: optuna.Study,
        params: Collection[str] | None = None,
        *,
        target: Callable[[optuna.trial.FrozenTrial], float] | None = None,
    ) -> dict[str, float]:
        keep = self.values if params is None else {p: self.values.get(p, 0.0) for p in params}
        return dict(sorted(keep.items(), key=lambda kv: -kv[1]))


def interactive_plots(
    tables: StudyTables, importances: Mapping[str, float] | None = None, *, seed: int = 0
) -> InteractivePlots:
    """Optuna's plots of the study's searched parameters (:data:`PLOTS`), as plotly JSON.

    The objective is the study spec's (``StudySpec.score``); trials without a finite
    objective are left out. Importances use :func:`pipeline.results.param_importances`'s
    evaluator (seeded, so the page is reproducible), or draw ``importances`` when given
    (the report's, :func:`pipeline.results.param_importances`: one fit, not two); the
    contour plot shows the :data:`MAX_CONTOUR_PARAMS` most important parameters.
    """
    from optuna import visualization as vis

    objective = tables.spec_mapping.get("objective")
    metric = objective.get("metric") if isinstance(objective, dict) else None
    name = metric if isinstance(metric, str) else Objective().metric
    study, params, why = _study(tables)
    if study is None:
        return InteractivePlots([], [f"{t}: not drawn: {why}" for t in PLOTS.values()], name)
    make, _ = _evaluator(seed)
    if importances:
        known = {p: float(v) for p, v in importances.items() if p in params}
        if sum(known.values()) > 0:
            make = partial(_Known, known)
    ranked = list(params)
    order: list[tuple[str, Callable[[], Any]]] = [
        ("param_importances", lambda: vis.plot_param_importances(
            study, evaluator=make(), params=params, target_name=name)),
        ("parallel_coordinate", lambda: vis.plot_parallel_coordinate(
            study, params=ranked, target_name=name)),
        ("slice", lambda: vis.plot_slice(study, params=ranked, target_name=name)),
        ("contour", lambda: vis.plot_contour(
            study, params=ranked[:MAX_CONTOUR_PARAMS], target_name=name)),
    ]  # fmt: skip
    drawn: dict[str, str] = {}
    notes: list[str] = []
    for plot, draw in order:
        if plot == "contour" and len(params) < 2:
            notes.append(f"{PLOTS[plot]}: not drawn: needs two searched parameters")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # experimental-API and sparse-data warnings
                figure = draw()
        except (ValueError, RuntimeError, ZeroDivisionError, TypeError, KeyError) as exc:
            notes.append(f"{PLOTS[plot]}: not drawn: {' '.join(str(exc).split())}")
            continue
        if plot == "param_importances":
            ranked = _ranked(figure, params)
        figure.update_layout(title=None, template="plotly_white")
        if plot == "contour":  # a matrix of panels: room for each
            figure.update_layout(height=220 * min(len(params), MAX_CONTOUR_PARAMS) + 120)
        drawn[plot] = figure.to_json()
    plots = [(p, PLOTS[p], drawn[p]) for p in PLOTS if p in drawn]
    return InteractivePlots(plots, notes, name)


def _ranked(figure: Any, params: list[str]) -> list[str]:
    """The parameters, most important first, as the importance plot's bars list them."""
    try:
        shown = [str(p) for p in figure.data[0].y][::-1]  # horizontal bars, least first
    except (AttributeError, IndexError, TypeError):
        return params
    return [p for p in shown if p in params] + [p for p in params if p not in shown]
