"""Whether a study's design can judge the claims it declares, told before anything trains.

:func:`design_problems` reads a spec (its ``space``, ``trial``, sampler and ``claims:``)
and says, for each declared comparison (``{faster, than, by}``) the study cannot judge,
why and what design would. It applies the rules the verdicts apply later:

* **A grid** is judged by the Kaplan-Meier speedup rule
  (:mod:`pipeline.analysis.speedup_rule`): in every cell (task, cell, hidden, seq_len and
  every searched setting) both compared schemes need :data:`MIN_N` trials at gain 1 (scale
  1, no recurrent override, unless the claim's ``where`` says otherwise). Where its cells
  have fewer, the verdict falls back to the AFT model, which needs :data:`MIN_N` trials of
  each scheme per regime (each listed hidden and seq_len value, the rest pooled).
* **A sampled study** (random, QMC, TPE) is judged by the AFT model
  (:mod:`pipeline.analysis.aft_study`): its trials are draws, so the check counts the
  trials each scheme is *expected* to get (``n_trials`` over the scheme's choices and over
  the choices the claim's ``where`` keeps). The model reads the speedup per regime (each
  listed hidden and seq_len value) when it depends on it, so each regime needs
  :data:`MIN_N` trials of each scheme as a Kaplan-Meier cell would, and, since draws
  scatter and TPE gives the scheme it finds better more of them, the check asks
  :data:`SAMPLED_MARGIN` times that in expectation; and TPE, which draws only its first
  ``n_startup_trials`` at random, :data:`MIN_N` within those.

Built-in claims listed under ``claims:`` are checked where it is cheap to tell: C4 needs
xavier and uniform01 among the schemes. A scheme that is not searched at all, a gain that
is never 1, a ``where`` that keeps nothing are all named.

This module reads spec data only (no trials, no Optuna, no tensors).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.fields import FIELDS, SETTINGS
from pipeline.analysis.aft import MAX_READ_VALUES, REGIME
from pipeline.analysis.judging import MIN_N, UNIFORM, XAVIER
from pipeline.claimspec import Comparison, parse_claims
from pipeline.space import Choice, Range

if TYPE_CHECKING:
    from pipeline.studyspec import StudySpec

__all__ = ["MIN_N", "SAMPLED_MARGIN", "DesignProblem", "design_problems"]

SAMPLED_MARGIN = 2
"""A sampled study is asked for this many times :data:`MIN_N` trials per scheme and regime
in expectation: its draws scatter (a random sampler's count is binomial) and TPE favours the
scheme it finds better, so an expectation of exactly the minimum fails about half the time."""
_CELL = ("task", "cell", "hidden", "seq_len")
"""The speedup rule's cells (``speedup_rule.SPEEDUP_BY``), searched settings added."""
_GAIN = ("scale", "recurrent_scale", "init_recurrent")
_SEARCHED_RANGE = object()
"""Stands for a value a sampled range draws (any; no cell of its own)."""


@dataclass(frozen=True)
class DesignProblem:
    """Why a study cannot judge one claim, and what design would."""

    claim: str
    """The claim's id (``U1``, ``C4``, ...)."""
    text: str
    """The claim in words."""
    why: str
    fix: str

    @property
    def line(self) -> str:
        """One line for people: ``claim U1 (...) cannot be judged: WHY; FIX``."""
        return f"claim {self.claim} ({self.text}) cannot be judged: {self.why}; {self.fix}"


def design_problems(spec: StudySpec) -> list[DesignProblem]:
    """One :class:`DesignProblem` per listed claim the design cannot judge (empty: none)."""
    if not spec.claims:
        return []
    out: list[DesignProblem] = []
    for claim in parse_claims(spec.claims):
        if isinstance(claim, Comparison):
            problem = _comparison(spec, claim)
        elif claim == "C4":
            c4 = Comparison("C4", XAVIER, UNIFORM, 2.0, 10.0)
            problem = _arms(spec, c4, "C4", "Xavier 2-10x faster than uniform[0,1]")
        else:
            problem = None
        if problem is not None:
            out.append(problem)
    return out


# --------------------------------------------------------------------------- the spec


def _values(spec: StudySpec, name: str) -> list[Any]:
    """What ``name`` takes: a grid's every value, a choice's choices, a sampled range one
    stand-in (:data:`_SEARCHED_RANGE`), a fixed field its value."""
    param = spec.space.get(name)
    if isinstance(param, Choice):
        return list(param.choices)
    if isinstance(param, Range):
        return spec.values(name) if spec.is_grid else [_SEARCHED_RANGE]
    return spec.values(name)


def _searched(spec: StudySpec, name: str) -> bool:
    return name in spec.searched()


def _arms(spec: StudySpec, c: Comparison, claim_id: str, text: str) -> DesignProblem | None:
    """Both schemes must be among the values of the compared column."""
    offered = [v for v in _values(spec, c.on) if v is not None]
    missing = [s for s in (c.faster, c.than) if s not in offered]
    if not missing:
        return None
    where = f"space.{c.on}" if _searched(spec, c.on) else f"{c.on} (fixed to {offered[0]})"
    if not _searched(spec, c.on):
        why = f"{c.on} is not searched: every trial uses {offered[0] if offered else 'none'}"
    else:
        why = f"{where} has no {' and no '.join(missing)}"
    fix = f"search {c.on} over [{c.faster}, {c.than}] (as a grid axis with >= {MIN_N} seeds)"
    return DesignProblem(claim_id, text, why, fix)


def _weights(spec: StudySpec, names: Sequence[str]) -> tuple[list[dict[str, Any]], float]:
    """Every combination of ``names``' values and the trials (a grid's) or expected trials
    (a sampled study's) at each: the planned trials spread evenly over the combinations."""
    axes = {n: _values(spec, n) for n in names}
    combos = [dict(zip(axes, vs, strict=True)) for vs in itertools.product(*axes.values())]
    total = spec.grid_size if spec.is_grid else (spec.n_trials or 0)
    return combos, total / max(1, len(combos))


def _matches(value: Any, allowed: Iterable[Any]) -> bool:
    for a in allowed:
        if isinstance(a, int | float) and isinstance(value, int | float):
            if not isinstance(value, bool) and math.isclose(float(value), float(a)):
                return True
        elif value == a:
            return True
    return False


def _kept(spec: StudySpec, c: Comparison, row: dict[str, Any], model: bool) -> bool:
    """Whether a planned trial enters the claim's comparison: the compared column set, gain 1
    (the AFT ``model`` also keeps a searched scale, a covariate there), the ``where``."""
    for key, allowed in c.where.items():
        if key not in row:
            continue
        value = row[key]
        if value is _SEARCHED_RANGE:
            param = spec.space[key]
            if not (isinstance(param, Range) and param.type == "int"):
                return False  # a float range never draws a listed value exactly
            inside = [a for a in allowed if param.low <= a <= param.high]
            if not inside:
                return False
        elif not _matches(value, allowed):
            return False
    scheme = row[c.on]
    if scheme not in (c.faster, c.than):
        return False
    if c.on == "init" and "init_recurrent" not in c.where and row["init_recurrent"] is not None:
        return False
    if c.on == "init_recurrent" and not model:
        return True  # Whh's scheme compared: the gain is the study's
    scale, rec = row["scale"], row["recurrent_scale"]
    rec = scale if rec is None else rec
    gain_free = "scale" in c.where or (model and _searched(spec, "scale"))
    if not gain_free and (scale is _SEARCHED_RANGE or not _matches(scale, (1.0,))):
        return False
    if model:
        if "recurrent_scale" not in c.where and not _searched(spec, "recurrent_scale"):
            return rec is scale or _matches(rec, (scale,))
        return True
    if "recurrent_scale" not in c.where and "scale" not in c.where:
        return rec is not _SEARCHED_RANGE and _matches(rec, (1.0,))
    return True


def _where_fraction(spec: StudySpec, c: Comparison) -> float:
    """The share of a sampled int range's draws a ``where`` on it keeps (1: none)."""
    share = 1.0
    for key, allowed in c.where.items():
        param = spec.space.get(key)
        if isinstance(param, Range) and param.type == "int" and not spec.is_grid:
            inside = {int(a) for a in allowed if param.low <= a <= param.high}
            share *= len(inside & set(param.values())) / max(1, param.count())
    return share


# --------------------------------------------------------------------------- the rules


def _comparison(spec: StudySpec, c: Comparison) -> DesignProblem | None:
    problem = _arms(spec, c, c.id, c.text)
    if problem is not None:
        return problem
    if spec.is_grid and _grid_cells(spec, c):
        return None
    return _model(spec, c)


def _names(spec: StudySpec, c: Comparison, extra: Iterable[str]) -> list[str]:
    where = [k for k in c.where if k in FIELDS]  # (device_type is not planned)
    names = {c.on, "init", "init_recurrent", *_GAIN, *_CELL, *where, *extra}
    return sorted(names)


def _grid_cells(spec: StudySpec, c: Comparison) -> bool:
    """Whether the Kaplan-Meier rule judges the claim on a grid: some cell holds both schemes
    at gain 1 and every such cell :data:`MIN_N` trials of each (a grid is a full product, so
    its cells hold equally many; else the AFT model judges it)."""
    settings = [s for s in SETTINGS if _searched(spec, s) and s != "data_seed"]
    combos, each = _weights(spec, _names(spec, c, settings))
    cell_keys = [*_CELL, *settings]
    counts: dict[tuple[Any, ...], dict[str, float]] = {}
    for row in combos:
        if _kept(spec, c, row, model=False):
            arm = counts.setdefault(tuple(row[k] for k in cell_keys), {})
            arm[row[c.on]] = arm.get(row[c.on], 0.0) + each
    shared = [min(v.values()) for v in counts.values() if len(v) == 2]
    return bool(shared) and min(shared) >= MIN_N


def _model(spec: StudySpec, c: Comparison) -> DesignProblem | None:
    """The AFT model: :data:`MIN_N` trials of each scheme per regime (x
    :data:`SAMPLED_MARGIN` in expectation for a sampled study)."""
    regime = [
        r for r in REGIME if r not in c.where and 1 < len(_values(spec, r)) <= MAX_READ_VALUES
    ]
    combos, each = _weights(spec, _names(spec, c, ()))
    each *= _where_fraction(spec, c)
    counts: dict[tuple[Any, ...], dict[str, float]] = {}
    for row in combos:
        if _kept(spec, c, row, model=True):
            arm = counts.setdefault(tuple(row[r] for r in regime), {})
            arm[row[c.on]] = arm.get(row[c.on], 0.0) + each
    need = MIN_N if spec.is_grid else MIN_N * SAMPLED_MARGIN
    low = min(
        (counts.get(k, {}).get(s, 0.0) for k in counts or [()] for s in (c.faster, c.than)),
        default=0.0,
    )
    total = spec.n_trials or 0
    start = min(spec.startup_trials or total, total)  # TPE's random draws
    if counts and low >= need and (spec.is_grid or low * start / max(1, total) >= MIN_N):
        return None
    if not counts:
        why = (
            "no planned trial of either scheme passes the claim's filter (gain 1, no Whh "
            f"override, where: {c.where or 'none'})"
        )
        fix = "set scale 1 (or search it), or widen the claim's where"
        return DesignProblem(c.id, c.text, why, fix)
    per = f" per {' x '.join(regime)} value" if regime else ""
    if spec.is_grid:
        why = f"the grid gives each scheme {low:g} trials{per}, fewer than {MIN_N}"
        return DesignProblem(c.id, c.text, why, f"add seeds (>= {MIN_N} per cell)")
    whys, fixes = [], []
    if low < need:
        tpe = ", and TPE favours the scheme it finds better" if spec.sampler == "tpe" else ""
        whys.append(
            f"a {spec.sampler} study of {total} trials is expected to give each scheme about"
            f" {low:.3g} trials{per}, fewer than the {need} asked ({SAMPLED_MARGIN} x the AFT"
            f" model's {MIN_N}: draws scatter{tpe})"
        )
        if low > 0:
            fixes.append(f"n_trials >= {math.ceil(total * need / low - 1e-9)}")
    share = low / max(1, total)  # expected trials of the rarest arm per trial drawn
    if start < total and share * start < MIN_N:
        whys.append(
            f"TPE draws only its first {start} trials at random and may give a scheme it finds"
            f" slower none after them; those give each scheme about {share * start:.3g}"
            f" trials{per}, fewer than {MIN_N}"
        )
        if share > 0:
            fixes.append(f"sampler_options.n_startup_trials >= {math.ceil(MIN_N / share - 1e-9)}")
    axes = " and ".join([c.on, *regime])
    grid = f"give {axes} as grid axes (sampler: grid) with >= {MIN_N} seeds"
    fix = f"give {' and '.join(fixes)}, or {grid}" if fixes else grid
    return DesignProblem(c.id, c.text, "; ".join(whys), fix)
