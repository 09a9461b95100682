"""A study's summary: its best trial and the objective against each searched parameter.

:func:`study_summary` reads the ``trials`` table and the study spec's text
(``StudyTables.spec_text``) and returns a :class:`StudySummary`:

- the best trial (lowest objective, the lowest trial number on a tie, as Optuna's
  ``best_trial``): its number, searched parameters, objective value and outcome;
- per searched parameter, a table of the objective over its values (:class:`ParamEffect`):
  n trials, median and best objective, converged fraction; a parameter with more than
  :data:`MAX_LEVELS` distinct values (a float range such as lr) is binned into
  :data:`N_BINS` bins, log-spaced for a log range or one spanning a factor 10 or more.

The searched parameters are the spec's ``space:`` entries that are not fixed values (the
parameters ``StudySpec.distributions()`` gives Optuna), read here with
:func:`pipeline.space.parse_space`; a tuned protocol's lr, searched by the protocol rather
than ``space:``, is added when it varies. A searched parameter that is not a column of the
trials table is skipped (and named in :attr:`StudySummary.skipped`). Without a readable spec
the searchable fields that vary across the trials are used.

The objective is the spec's ``objective.metric``: ``epochs_to_converge`` (the ``value``
column) or ``best_val_loss`` (infinite for a trial that diverged or has no finite loss:
Optuna's ``DIVERGED_LOSS``, which never wins). Parameter importance needs Optuna and is
:func:`pipeline.results.param_importances`. This module reads tables; it knows nothing of
Optuna, MLflow or Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import ValidationError

from models.fields import FIELDS, SEARCHABLE
from pipeline.space import Choice, Range, parse_space

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

__all__ = [
    "MAX_LEVELS",
    "N_BINS",
    "BestTrial",
    "ParamEffect",
    "SearchedParam",
    "StudySummary",
    "best_trial",
    "display_tables",
    "objective_of",
    "param_effect",
    "searched_params",
    "study_summary",
    "value_text",
]

MAX_LEVELS = 8
"""A numeric parameter with at most this many distinct values gets a row per value."""
N_BINS = 5
"""Bins of a parameter with more distinct values than :data:`MAX_LEVELS`."""
METRICS = ("epochs_to_converge", "best_val_loss")
"""The objectives a study spec may name (``pipeline.studyspec.Objective``)."""
NOT_PARAMS = frozenset({"data_seed"})
"""Searchable fields the fallback (no readable spec) never counts as searched."""

Kind = Literal["categorical", "int", "float"]


@dataclass(frozen=True)
class SearchedParam:
    """One searched parameter: its name, kind and whether its range is log-scaled."""

    name: str
    kind: Kind
    log: bool = False
    choices: tuple[Any, ...] = ()
    """A categorical parameter's choices in the spec's order (empty: sorted values)."""


@dataclass(frozen=True)
class BestTrial:
    """The study's best trial."""

    number: int
    params: dict[str, Any]
    """The searched parameters' values (plain Python values; None for a missing one)."""
    value: float
    outcome: str


@dataclass(frozen=True)
class ParamEffect:
    """The objective over one searched parameter's values."""

    param: SearchedParam
    binned: bool
    """Whether the rows are bins of the values (else one row per value)."""
    table: pd.DataFrame
    """Columns: the parameter's name (value or bin, as text), ``n``, ``median``, ``best``,
    ``converged`` (fraction 0-1), one row per value or non-empty bin, in order."""
    points: pd.DataFrame
    """One row per trial: ``x`` (the value), ``level`` (its row of :attr:`table`),
    ``objective``, ``converged``: what the objective-vs-parameter figure draws."""


@dataclass(frozen=True)
class StudySummary:
    """What the ``results`` command and the report's "Study summary" section show."""

    study: str
    metric: str
    """The objective: ``epochs_to_converge`` or ``best_val_loss`` (lower is better)."""
    n_trials: int
    max_epochs: int | None
    best: BestTrial | None
    """None: no complete trials."""
    params: list[SearchedParam]
    effects: list[ParamEffect]
    """One per searched parameter that is a column of the trials table."""
    skipped: list[str] = field(default_factory=list)
    """Searched parameters left out, each "name (why)"."""

    def best_line(self) -> str:
        """One line on the best trial, e.g. ``best trial: #2 (init=xavier, seed=1):
        epochs_to_converge 6, converged``."""
        if self.best is None:
            return "best trial: none (no complete trials)"
        b = self.best
        params = ", ".join(f"{k}={value_text(v)}" for k, v in b.params.items())
        shown = f" ({params})" if params else ""
        return f"best trial: #{b.number}{shown}: {self.metric} {value_text(b.value)}, {b.outcome}"


def value_text(value: Any) -> str:
    """A value as the summary prints it: floats to 4 significant digits, None as "none"."""
    if value is None or value is pd.NA:
        return "none"
    if isinstance(value, float):
        if math.isinf(value):
            return "diverged" if value > 0 else "-inf"
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _native(value: Any) -> Any:
    """A table cell as a plain Python value (NA and NaN as None)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


def _spec(spec_text: str) -> dict[str, Any] | None:
    try:
        raw = yaml.safe_load(spec_text) if spec_text else None
    except yaml.YAMLError:
        return None
    return raw if isinstance(raw, dict) else None


def _metric(raw: dict[str, Any] | None) -> str:
    objective = (raw or {}).get("objective")
    metric = objective.get("metric") if isinstance(objective, dict) else None
    return str(metric) if metric in METRICS else METRICS[0]


def _varies(trials: pd.DataFrame, name: str) -> bool:
    return name in trials.columns and trials[name].astype(object).nunique(dropna=False) > 1


def _kind_of(trials: pd.DataFrame, name: str) -> Kind:
    kind = FIELDS[name].kind if name in FIELDS else str
    if kind is bool or kind is str:
        return "categorical"
    return "int" if kind is int else "float"


def searched_params(spec_text: str, trials: pd.DataFrame) -> tuple[list[SearchedParam], list[str]]:
    """The study's searched parameters that are columns of ``trials``, and those skipped.

    Returns:
        ``(params, skipped)``: params in the spec's order; skipped as "name (why)".
    """
    raw = _spec(spec_text)
    space: dict[str, Any] | None = None
    if raw is not None and isinstance(raw.get("space") or {}, dict):
        try:
            space = parse_space(raw.get("space") or {})
        except (ValidationError, ValueError, TypeError):
            space = None
    params: list[SearchedParam] = []
    if space is None:  # no readable spec: what varies
        for name in SEARCHABLE:
            if name not in NOT_PARAMS and _varies(trials, name):
                params.append(SearchedParam(name, _kind_of(trials, name)))
        return params, []
    for name, entry in space.items():
        if isinstance(entry, Choice):
            params.append(SearchedParam(name, "categorical", choices=tuple(entry.choices)))
        elif isinstance(entry, Range):
            params.append(SearchedParam(name, entry.type, log=bool(entry.log)))
    names = {p.name for p in params}
    if "lr" not in names and _varies(trials, "lr"):  # a tuned protocol's lr
        params.append(SearchedParam("lr", "float", log=True))
    missing = [p.name for p in params if p.name not in trials.columns]
    skipped = [f"{name} (not a column of the trials table)" for name in missing]
    return [p for p in params if p.name in trials.columns], skipped


def objective_of(trials: pd.DataFrame, metric: str) -> pd.Series:
    """The objective per trial (lower is better): ``value`` for epochs_to_converge;
    ``best_val_loss`` for best_val_loss, infinite where the trial diverged or has none."""
    if metric == "best_val_loss":
        loss = pd.to_numeric(trials["best_val_loss"], errors="coerce").astype(float)
        bad = trials["diverged"].astype(bool) | ~np.isfinite(loss)
        return loss.where(~bad, math.inf)
    return pd.to_numeric(trials["value"], errors="coerce").astype(float)


def best_trial(
    trials: pd.DataFrame, params: list[SearchedParam], metric: str = METRICS[0]
) -> BestTrial | None:
    """The trial with the lowest objective (the lowest trial number on a tie); None when
    there are no trials."""
    if trials.empty:
        return None
    frame = trials.assign(_objective=objective_of(trials, metric))
    frame = frame.sort_values(["_objective", "trial_number"], kind="stable", na_position="last")
    row = frame.iloc[0]
    return BestTrial(
        number=int(row["trial_number"]),
        params={p.name: _native(row[p.name]) for p in params},
        value=float(row["_objective"]),
        outcome=str(row["outcome"]),
    )


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    low, high = float(values.min()), float(values.max())
    if low > 0 and (log or high / low >= 10):
        return np.geomspace(low, high, N_BINS + 1)
    return np.linspace(low, high, N_BINS + 1)


def _bin_labels(edges: np.ndarray) -> list[str]:
    last = len(edges) - 2
    return [
        f"[{edges[i]:.3g}, {edges[i + 1]:.3g}{']' if i == last else ')'}"
        for i in range(len(edges) - 1)
    ]


def param_effect(trials: pd.DataFrame, param: SearchedParam, objective: pd.Series) -> ParamEffect:
    """The objective over one parameter's values (or bins): see :class:`ParamEffect`."""
    name = param.name
    values = trials[name].astype(object).map(_native)
    numeric = param.kind != "categorical" and values.notna().all()
    distinct = values.nunique(dropna=False)
    binned = bool(numeric and distinct > MAX_LEVELS)
    if binned:
        x = values.astype(float).to_numpy()
        edges = _edges(x, param.log)
        labels = _bin_labels(edges)
        index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(labels) - 1)
        levels = pd.Series([labels[i] for i in index], index=trials.index)
        order = [label for label in labels if label in set(levels)]
    else:
        present = list(dict.fromkeys(values))
        if param.choices:
            order_values = [c for c in param.choices if c in present]
            order_values += [v for v in present if v not in order_values]
        else:
            order_values = sorted(
                present, key=lambda v: (v is None, type(v).__name__, 0 if v is None else v)
            )
        levels = values.map(value_text)
        order = [value_text(v) for v in order_values]
    frame = pd.DataFrame(
        {
            "level": levels,
            "objective": objective.to_numpy(),
            "converged": trials["converged"].astype(bool).to_numpy(),
        },
        index=trials.index,
    )
    grouped = frame.groupby("level", sort=False)
    rows = [
        {
            name: level,
            "n": len(g := grouped.get_group(level)),
            "median": float(g["objective"].median()),
            "best": float(g["objective"].min()),
            "converged": float(g["converged"].mean()),
        }
        for level in order
    ]
    table = pd.DataFrame(rows, columns=[name, "n", "median", "best", "converged"])
    points = frame.assign(x=values).reset_index(drop=True)
    return ParamEffect(param, binned, table, points[["x", "level", "objective", "converged"]])


def study_summary(tables: StudyTables) -> StudySummary:
    """The study's :class:`StudySummary`, from its trials table and spec text."""
    trials = tables.trials
    metric = _metric(_spec(tables.spec_text))
    params, skipped = searched_params(tables.spec_text, trials)
    objective = objective_of(trials, metric)
    effects = [] if trials.empty else [param_effect(trials, p, objective) for p in params]
    budget = int(trials["max_epochs"].max()) if len(trials) else None
    return StudySummary(
        study=tables.study,
        metric=metric,
        n_trials=len(trials),
        max_epochs=budget,
        best=best_trial(trials, params, metric),
        params=params,
        effects=effects,
        skipped=skipped,
    )


def display_tables(summary: StudySummary) -> list[tuple[str, pd.DataFrame]]:
    """(heading, table of text) per searched parameter, as the report and the ``results``
    command print them: value or bin, n, median and best objective, converged share."""
    out = []
    for effect in summary.effects:
        name, table = effect.param.name, effect.table
        heading = f"{summary.metric} by {name}" + (" (binned)" if effect.binned else "")
        display = pd.DataFrame(
            {
                name: table[name],
                "n": table["n"],
                f"median {summary.metric}": [value_text(v) for v in table["median"]],
                f"best {summary.metric}": [value_text(v) for v in table["best"]],
                "converged": [f"{100 * v:.0f}%" for v in table["converged"]],
            }
        )
        out.append((heading, display))
    return out
