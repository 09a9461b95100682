"""Study specs: the YAML files under ``studies/``, validated once, at load.

A study spec says which trials a study runs and how Optuna picks them. Loading
checks everything a person can get wrong (unknown keys, wrong types, bad ranges,
unknown scheme/task/cell/optimizer names, a grid that cannot be a grid) and
raises one :class:`SpecError` whose message is a single line naming the file,
the dotted field path, what is wrong and what is allowed::

    studies/x.yaml: space.scale.low: must be <= high (got low=2.0, high=1.0)

Nothing is started or written by loading. This module knows YAML, pydantic and
Optuna's sampler/distribution classes; it knows nothing of tensors, Ray or MLflow
(the registries in ``models`` are imported only to check names).

The format (``yaml.safe_load``)::

    # Question: does xavier converge faster than uniform01 on short adding problems?
    # Run: initstudy run studies/smoke.yaml
    name: smoke                 # [A-Za-z0-9_.-]{1,64}
    description: "..."          # optional
    claim: "xavier converges 2-10x faster than uniform01"   # optional, hashed onto every run
    sampler: grid               # grid (default) | random | qmc | tpe
    n_trials: null              # required for random/qmc/tpe; grid: default (and maximum) = grid
    sampler_seed: 0
    objective: {metric: epochs_to_converge}   # or best_val_loss
    trial: {task: adding, hidden: 32}         # fixed TrialSpec fields (defaults: TrialSpec's)
    space:                                    # searched parameters
      init: [xavier, uniform01]               # list = categorical choices
      scale: {low: 0.5, high: 2.0, log: true} # range; optional step, log, type
      lr: 0.001                               # scalar = fixed value

Rules worth knowing:

* Searchable parameters (keys of ``space``): ``SEARCHABLE``. A key may be in
  ``trial`` or in ``space``, not both.
* A range's type (int or float) is the parameter's type: ``seq_len``,
  ``hidden`` and ``seed`` take int ranges, ``scale``, ``lr`` and ``clip`` take
  float ranges (int bounds are read as floats). ``type:``, if given, must agree.
  A ``step`` must divide ``high - low``; ``step`` and ``log`` do not combine.
* The grid sampler takes lists and int ranges (int ranges are expanded to every
  value); a float range is an error there. Grids are capped at ``MAX_GRID``
  cells.
* **data_seed**: unless ``trial`` fixes ``data_seed``, each trial's data seed is
  its ``seed``. Trials that share a replicate seed therefore see the same data
  stream whatever their init scheme: comparisons between schemes are paired.
* Cross-field rules owned by ``models.check_spec`` (e.g. ``corpus`` only with
  ``charlm``) are checked at load on one representative trial (first choices,
  range lows).
* Every float must be finite. YAML 1.1 reads ``1e-3`` as text; write ``1.0e-3``
  or ``0.001`` (the error message says so).

Objective scoring (:meth:`StudySpec.score`, always minimised): divergence is a
result, never a failed trial, so every trial is told to Optuna with a value.

* ``epochs_to_converge``: the converged epoch; a trial that never converged
  (censored) or diverged before converging scores ``max_epochs + 1``.
* ``best_val_loss``: the best finite validation loss; a diverged trial, or one
  without any finite loss, scores ``DIVERGED_LOSS`` (1e30; Optuna refuses inf).

Using a spec with Optuna's ask/tell::

    study = optuna.create_study(direction=spec.direction, sampler=spec.make_sampler(), ...)
    trial = study.ask(spec.distributions())       # works for every sampler, grid included
    trial_spec = spec.trial_spec(trial.params)
    ...
    study.tell(trial, spec.score(summary))
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import statistics
import warnings
from dataclasses import fields
from functools import cache
from pathlib import Path
from types import NoneType
from typing import Any, Literal, get_args, get_type_hints

import optuna
import yaml
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from pydantic import (
    BaseModel,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from models.spec import TrialSpec
from pipeline.claimspec import ClaimError, parse_claims

__all__ = [
    "DIVERGED_LOSS",
    "MAX_GRID",
    "SEARCHABLE",
    "Choice",
    "Fixed",
    "Objective",
    "Range",
    "SpecError",
    "StudySpec",
    "is_study_name",
    "load_study_spec",
    "parse_study_spec",
]

SEARCHABLE: tuple[str, ...] = (
    "init",
    "init_recurrent",
    "scale",
    "recurrent_scale",
    "seq_len",
    "hidden",
    "cell",
    "lr",
    "optimizer",
    "clip",
    "seed",
)
"""Parameters a study may search over (the allowed keys of ``space``)."""

SAMPLERS: tuple[str, ...] = ("grid", "random", "qmc", "tpe")
MAX_GRID = 100_000
"""Largest grid accepted; beyond that, use a random/qmc/tpe sampler with n_trials."""
DIVERGED_LOSS = 1e30
"""best_val_loss score of a diverged trial (Optuna refuses infinite values)."""
MAX_SEED = 2**32 - 1
MAX_SPEC_BYTES = 1_000_000
"""Largest spec file read (a spec is a page of YAML)."""
MAX_SPEC_VALUES = 100_000
"""Most values (scalars, lists, mappings) a spec may hold once YAML aliases are expanded."""

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STUDY_NAME_RULE = "1-64 letters, digits, '_', '.' or '-' (no path separators, not . or ..)"
"""What :func:`is_study_name` accepts, in words (for error messages)."""

STEP_SECONDS = 1.0e-4
"""Estimate: fixed seconds per time step of one training batch (forward, backward, update)
for an Elman cell on one CPU core; a cell with G gate blocks costs (1 + G) / 2 times it."""
MAC_SECONDS = 2.5e-10
"""Estimate: seconds per multiply-add of the recurrent product, batch x G x hidden^2 per
time step, forward and backward together, on one CPU core."""
_NUMBER_TEXT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

_TRIAL_FIELDS: dict[str, Any] = {f.name: f.default for f in fields(TrialSpec)}
_HINTS: dict[str, Any] = {
    name: hint for name, hint in get_type_hints(TrialSpec).items() if name in _TRIAL_FIELDS
}
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(hint, config=ConfigDict(strict=True)) for name, hint in _HINTS.items()
}
_POSITIVE_INT = {
    "seq_len",
    "hidden",
    "batch_size",
    "batches_per_epoch",
    "max_epochs",
    "val_size",
    "patience",
}
_POSITIVE_FLOAT = {"lr", "clip", "target_loss"}
_SEED_FIELDS = {"seed", "data_seed"}
_REGISTRIES = {
    "init": "INIT_SCHEMES",
    "init_recurrent": "INIT_SCHEMES",
    "task": "TASKS",
    "cell": "CELLS",
    "optimizer": "OPTIMIZERS",
}
_TYPE_WORDS = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    NoneType: "null",
}

_Loc = tuple[str | int, ...]


class SpecError(ValueError):
    """A study spec is invalid. ``str()`` is one line: ``source: field.path: problem``."""


class _FieldError(ValueError):
    """Raised inside validators; carries the path below the validator's location."""

    def __init__(self, path: _Loc, msg: str) -> None:
        super().__init__(msg)
        self.path = path
        self.msg = msg


# --------------------------------------------------------------------------- helpers


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_study_name(name: object) -> bool:
    """Whether ``name`` may name a study: it becomes a folder name, an MLflow experiment and
    part of URLs, so only ``[A-Za-z0-9_.-]{1,64}``, and never ``.`` or ``..``."""
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name)) and name not in {".", ".."}


def _join(path: _Loc) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "<top>"


def _is_float_field(name: str) -> bool:
    hint = _HINTS[name]
    return float in (get_args(hint) or (hint,))


def _is_int_field(name: str) -> bool:
    hint = _HINTS[name]
    return int in (get_args(hint) or (hint,))


@cache
def _known_names(field: str) -> tuple[str, ...]:
    """Registered names for ``field`` (init, init_recurrent, task, cell, optimizer)."""
    import models  # lazy: models pulls in torch; loading a spec only needs the names

    return tuple(sorted(getattr(models, _REGISTRIES[field])))


def _check_field(name: str, value: Any) -> Any:
    """Check one TrialSpec field value; return it normalised (ints become floats for floats).

    Raises:
        _FieldError: with an empty path; the caller knows where the value sits.
    """
    hint = _HINTS[name]
    try:
        value = _ADAPTERS[name].validate_python(value)
    except ValidationError:
        words = " or ".join(_TYPE_WORDS.get(t, str(t)) for t in (get_args(hint) or (hint,)))
        msg = f"must be {words} (got {_short(value)})"
        if isinstance(value, str) and _NUMBER_TEXT_RE.fullmatch(value):
            msg += "; YAML reads a number like 1e-3 as text, write 1.0e-3 or 0.001"
        raise _FieldError((), msg) from None
    if value is None:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise _FieldError((), f"must be finite (got {value!r})")
    if name in _POSITIVE_INT and value < 1:
        raise _FieldError((), f"must be >= 1 (got {value!r})")
    if name in _POSITIVE_FLOAT and value <= 0:
        raise _FieldError((), f"must be > 0 (got {value!r})")
    if name in ("scale", "recurrent_scale") and value < 0:
        raise _FieldError((), f"must be >= 0 (got {value!r})")
    if name in _SEED_FIELDS and not 0 <= value <= MAX_SEED:
        raise _FieldError((), f"must be in [0, 2**32 - 1] (got {value!r})")
    if name == "divergence_factor" and value <= 1:
        raise _FieldError((), f"must be > 1 (got {value!r})")
    if name in _REGISTRIES:
        known = _known_names(name)
        if value not in known:
            raise _FieldError((), f"unknown name {value!r}; known: {', '.join(known)}")
    return value


def _at(path: _Loc, name: str, value: Any) -> Any:
    """``_check_field`` with the error re-raised at ``path``."""
    try:
        return _check_field(name, value)
    except _FieldError as exc:
        raise _FieldError(path, exc.msg) from None


# --------------------------------------------------------------------------- models


class _Strict(BaseModel):
    """Base: frozen, strict, unknown keys refused with the list of allowed ones."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key not in cls.model_fields:
                    allowed = ", ".join(cls.model_fields)
                    raise _FieldError((str(key),), f"unknown key; allowed: {allowed}")
        return data


class Choice(_Strict):
    """A categorical parameter: one of ``choices`` (for grids: every one of them)."""

    choices: list[str | int | float | None]


class Range(_Strict):
    """A numeric range ``[low, high]``, optionally stepped or log-scaled."""

    type: Literal["int", "float"]
    low: int | float
    high: int | float
    step: int | float | None = None
    log: bool = False

    def values(self) -> list[int]:
        """Every value of an int range, low to high (the grid expansion)."""
        step = int(self.step or 1)
        return list(range(int(self.low), int(self.high) + 1, step))

    def count(self) -> int:
        """Number of values of an int range, without expanding it."""
        return (int(self.high) - int(self.low)) // int(self.step or 1) + 1

    def distribution(self) -> BaseDistribution:
        if self.type == "int":
            return IntDistribution(
                int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return FloatDistribution(
            float(self.low),
            float(self.high),
            log=self.log,
            step=None if self.step is None else float(self.step),
        )


class Fixed(_Strict):
    """A parameter fixed to one value (same as putting it in ``trial``)."""

    value: str | int | float | None


class Objective(_Strict):
    """What Optuna minimises for each trial (see the module docstring for the scoring)."""

    metric: Literal["epochs_to_converge", "best_val_loss"] = "epochs_to_converge"


SpaceParam = Choice | Range | Fixed
_RANGE_KEYS = ("low", "high", "step", "log", "type")


def _parse_choice(key: str, raw: list[Any]) -> Choice:
    if not raw:
        raise _FieldError((key,), "choice list is empty; give at least one value")
    values: list[Any] = []
    for i, item in enumerate(raw):
        value = _at((key, i), key, item)
        if any(type(v) is type(value) and v == value for v in values):
            raise _FieldError((key, i), f"duplicate choice {value!r}; choices must be distinct")
        values.append(value)
    return Choice(choices=values)


def _parse_range(key: str, raw: dict[Any, Any]) -> Range:
    for k in raw:
        if k not in _RANGE_KEYS:
            raise _FieldError((key, str(k)), f"unknown key; allowed: {', '.join(_RANGE_KEYS)}")
    kind: Literal["int", "float"]
    if _is_float_field(key):
        kind = "float"
    elif _is_int_field(key):
        kind = "int"
    else:
        raise _FieldError((key,), f"{key} takes a list of choices or a single value, not a range")
    if "type" in raw and raw["type"] != kind:
        raise _FieldError(
            (key, "type"), f"{key} is {kind}-valued; type must be {kind!r} (got {raw['type']!r})"
        )
    for bound in ("low", "high"):
        if bound not in raw:
            raise _FieldError((key, bound), "required in a range (low and high)")
        if raw[bound] is None:
            raise _FieldError((key, bound), "must be a number, not null")
    low = _at((key, "low"), key, raw["low"])
    high = _at((key, "high"), key, raw["high"])
    if low > high:
        raise _FieldError((key, "low"), f"must be <= high (got low={low!r}, high={high!r})")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise _FieldError((key, "log"), f"must be true or false (got {_short(log)})")
    if log and low <= 0:
        raise _FieldError((key, "low"), f"a log range needs low > 0 (got {low!r})")
    step = raw.get("step")
    if step is not None:
        if kind == "int":
            if isinstance(step, bool) or not isinstance(step, int):
                raise _FieldError((key, "step"), f"must be an integer (got {_short(step)})")
        else:
            if isinstance(step, bool) or not isinstance(step, int | float):
                raise _FieldError((key, "step"), f"must be a number (got {_short(step)})")
            step = float(step)
            if not math.isfinite(step):
                raise _FieldError((key, "step"), f"must be finite (got {step!r})")
        if step <= 0:
            raise _FieldError((key, "step"), f"must be > 0 (got {step!r})")
        if log and step != 1:
            raise _FieldError((key, "step"), "cannot be combined with log: true")
        if kind == "int":
            if (high - low) % step:
                raise _FieldError(
                    (key, "step"),
                    f"must divide high - low (got low={low}, high={high}, step={step})",
                )
        else:
            n = (high - low) / step
            if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)):
                raise _FieldError(
                    (key, "step"),
                    f"must divide high - low (got low={low}, high={high}, step={step})",
                )
        if log:
            step = None  # step 1 with log on an int range is IntDistribution's default
    return Range(type=kind, low=low, high=high, step=step, log=log)


def _parse_space(raw: Any) -> dict[str, SpaceParam]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _FieldError(
            (), f"must be a mapping of parameter -> list | range | value (got {_short(raw)})"
        )
    out: dict[str, SpaceParam] = {}
    for key, entry in raw.items():
        if key not in SEARCHABLE:
            raise _FieldError(
                (str(key),), f"not a searchable parameter; allowed: {', '.join(SEARCHABLE)}"
            )
        if isinstance(entry, list):
            out[key] = _parse_choice(key, entry)
        elif isinstance(entry, dict):
            out[key] = _parse_range(key, entry)
        else:
            out[key] = Fixed(value=_at((key,), key, entry))
    return out


class StudySpec(_Strict):
    """A validated study spec: use :func:`load_study_spec` or :func:`parse_study_spec`."""

    name: str
    """Study name: letters, digits, ``_ . -``, 1-64 characters (used in paths and URLs)."""
    description: str | None = None
    """Free text."""
    claim: str | None = None
    """The claim under test; its hash is stamped on every run (``TrialSpec.key(claim)``)."""
    claims: list[Any] | None = None
    """Claims to judge: built-in ids and comparisons (``pipeline.claimspec``); None: every
    built-in claim the study's data can measure. Not part of the spec hash."""
    sampler: Literal["grid", "random", "qmc", "tpe"] = "grid"
    """Optuna sampler."""
    n_trials: int | None = None
    """Trials to run; required unless grid (grid: default = whole grid, at most the grid)."""
    sampler_seed: int = 0
    """Seed of the sampler."""
    objective: Objective = Objective()
    """What each trial is scored by."""
    trial: dict[str, Any] = {}
    """Fixed TrialSpec fields (only those given; the rest are TrialSpec defaults)."""
    space: dict[str, SpaceParam] = {}
    """Searched (Choice, Range) and fixed (Fixed) parameters, by name."""

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> Any:
        if not is_study_name(value):
            raise _FieldError((), f"must be {STUDY_NAME_RULE} (got {_short(value)})")
        return value

    @field_validator("claims", mode="before")
    @classmethod
    def _check_claims(cls, raw: Any) -> Any:
        if raw is None:
            return None
        try:
            parse_claims(raw, _known_names("init"))
        except ClaimError as exc:
            raise _FieldError(exc.path, exc.msg) from None
        return raw

    @field_validator("n_trials")
    @classmethod
    def _check_n_trials(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise _FieldError((), f"must be >= 1 (got {value})")
        return value

    @field_validator("sampler_seed")
    @classmethod
    def _check_sampler_seed(cls, value: int) -> int:
        if not 0 <= value <= MAX_SEED:
            raise _FieldError((), f"must be in [0, 2**32 - 1] (got {value})")
        return value

    @field_validator("trial", mode="before")
    @classmethod
    def _check_trial(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise _FieldError((), f"must be a mapping of TrialSpec fields (got {_short(raw)})")
        out = {}
        for key, value in raw.items():
            if key not in _TRIAL_FIELDS:
                raise _FieldError(
                    (str(key),), f"unknown TrialSpec field; allowed: {', '.join(_TRIAL_FIELDS)}"
                )
            out[key] = _at((key,), key, value)
        return out

    @field_validator("space", mode="before")
    @classmethod
    def _check_space(cls, raw: Any) -> Any:
        return _parse_space(raw)

    @model_validator(mode="after")
    def _check_whole(self) -> StudySpec:
        for key in self.space:
            if key in self.trial:
                raise _FieldError(
                    ("space", key), "is also set in trial; set it in trial or in space, not both"
                )
        if self.is_grid:
            for key, param in self.space.items():
                if isinstance(param, Range) and param.type == "float":
                    raise _FieldError(
                        ("space", key),
                        "the grid sampler needs lists or int ranges (int ranges are expanded"
                        " to all values); got a float range: list the values, or use a"
                        " random/qmc/tpe sampler",
                    )
            size = self.grid_size
            if size > MAX_GRID:
                raise _FieldError(
                    ("space",), f"grid has {size} cells, more than {MAX_GRID}; use fewer values"
                )
            if self.n_trials is not None and self.n_trials > size:
                raise _FieldError(
                    ("n_trials",),
                    f"must be <= the grid size {size} for the grid sampler (got {self.n_trials});"
                    " leave it out to run the whole grid",
                )
        elif self.n_trials is None:
            raise _FieldError(
                ("n_trials",), f"required for sampler {self.sampler!r} (an integer >= 1)"
            )
        self._check_with_models()
        return self

    def _check_with_models(self) -> None:
        """Cross-field rules owned by ``models.check_spec``, on one representative trial."""
        import models

        first: dict[str, Any] = {}
        for key in self.searched():
            param = self.space[key]
            if isinstance(param, Choice):
                first[key] = param.choices[0]
            elif isinstance(param, Range):
                first[key] = param.low
        try:
            models.check_spec(self.trial_spec(first))
        except ValueError as exc:
            field, _, msg = str(exc).partition(": ")
            if not msg or field not in _TRIAL_FIELDS:
                field, msg = "", str(exc)
            section = "space" if field in self.space else "trial"
            raise _FieldError((section, field) if field else (section,), msg) from None

    # ----------------------------------------------------------------- derived views

    @property
    def is_grid(self) -> bool:
        """True for the grid sampler."""
        return self.sampler == "grid"

    @property
    def direction(self) -> Literal["minimize"]:
        """Optuna direction: every objective here is minimised."""
        return "minimize"

    @property
    def max_epochs(self) -> int:
        """The epoch budget of every trial (fixed: max_epochs is not searchable)."""
        return int(self.trial.get("max_epochs", _TRIAL_FIELDS["max_epochs"]))

    def searched(self) -> list[str]:
        """Names of the searched parameters (Choice and Range entries), sorted."""
        return sorted(k for k, p in self.space.items() if not isinstance(p, Fixed))

    def fixed(self) -> dict[str, Any]:
        """Every fixed value: the ``trial`` section plus ``space`` scalars."""
        out = dict(self.trial)
        out.update({k: p.value for k, p in self.space.items() if isinstance(p, Fixed)})
        return out

    @property
    def grid_size(self) -> int:
        """Number of grid cells (product of choice counts and int-range lengths)."""
        size = 1
        for key in self.searched():
            param = self.space[key]
            if isinstance(param, Choice):
                size *= len(param.choices)
            elif isinstance(param, Range) and param.type == "int":
                size *= param.count()
            else:
                raise ValueError(f"space.{key} is a float range; it has no grid")
        return size

    @property
    def n_trials_planned(self) -> int:
        """Trials the study runs: ``n_trials``, or the whole grid."""
        return self.n_trials if self.n_trials is not None else self.grid_size

    def values(self, name: str) -> list[Any]:
        """The values a TrialSpec field takes in this study, in the order given.

        A fixed field gives one value (its TrialSpec default if the spec does not set it); a
        choice its choices; an int range on the grid every value; any other range its two
        bounds ``[low, high]`` (enough for the extremes of a monotone quantity).
        """
        param = self.space.get(name)
        if isinstance(param, Choice):
            return list(param.choices)
        if isinstance(param, Range):
            if self.is_grid and param.type == "int":
                return list(param.values())
            return [param.low, param.high]
        return [self.fixed().get(name, _TRIAL_FIELDS[name])]

    def estimated_cpu_seconds(self) -> float:
        """A rough upper estimate of the study's training time on one CPU core, in seconds.

        Every trial is counted at its full budget (``max_epochs x batches_per_epoch``
        batches; early convergence or divergence only makes it shorter), each batch
        ``steps x (STEP_SECONDS x (1 + G) / 2 + MAC_SECONDS x batch_size x G x hidden^2)``
        seconds, with ``steps`` the time steps of the sequence (seq_len; seq_len + 20 for
        copy) and G the cell's gate blocks (1 Elman, 3 GRU, 4 LSTM). The constants were
        measured with ``models.train_trial`` on one torch thread of a 2-core x86-64 VM;
        the formula is within about 2x of it for hidden 8-512 (smaller models are
        overhead-bound, larger ones BLAS-bound). Validation passes, input and output
        projections (a charlm vocabulary) and packing are left out. A grid is summed over
        its cells; a sampled study counts every trial at the costliest values it allows.
        """
        from models import CELLS
        from models.tasks import COPY_LENGTH

        fixed = self.fixed()
        batch = int(fixed.get("batch_size", _TRIAL_FIELDS["batch_size"]))
        batches = self.max_epochs * int(
            fixed.get("batches_per_epoch", _TRIAL_FIELDS["batches_per_epoch"])
        )
        extra_steps = 2 * COPY_LENGTH if self.values("task") == ["copy"] else 0
        steps = [int(v) + extra_steps for v in self.values("seq_len")]
        gates = [CELLS[str(c)].gates for c in self.values("cell")]
        squares = [int(h) ** 2 for h in self.values("hidden")]
        # The cost is a product of independent factors, so for a grid (a full product: every
        # value equally often) the mean cost is the product of the means, and for a sampled
        # study the costliest trial that of the largest values.
        pick = statistics.fmean if self.is_grid else max
        per_step = STEP_SECONDS * (1 + pick(gates)) / 2
        per_step += MAC_SECONDS * batch * pick(gates) * pick(squares)
        per_trial = pick(steps) * per_step
        return self.n_trials_planned * batches * per_trial

    def grid(self) -> dict[str, list[Any]]:
        """The search space for ``optuna.samplers.GridSampler``: searched parameters only.

        Fixed scalars are not in it (they are merged by :meth:`trial_spec`); int ranges are
        expanded. Keys are sorted.

        Raises:
            ValueError: if the space holds a float range.
        """
        out: dict[str, list[Any]] = {}
        for key in self.searched():
            param = self.space[key]
            if isinstance(param, Choice):
                out[key] = list(param.choices)
            elif isinstance(param, Range) and param.type == "int":
                out[key] = list(param.values())
            else:
                raise ValueError(f"space.{key} is a float range; it has no grid")
        return out

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid cell as a params dict (searched parameters only).

        Order: the product over the sorted parameter names (the last name varies fastest),
        values in the order given. This is also GridSampler's order before it shuffles.
        """
        grid = self.grid()
        names = list(grid)
        return [
            dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())
        ]

    def distributions(self) -> dict[str, BaseDistribution]:
        """Distributions of the searched parameters, for ``study.ask(fixed_distributions=...)``.

        Choices become CategoricalDistribution (None allowed among them), int ranges
        IntDistribution, float ranges FloatDistribution (with log/step). For a grid spec
        every searched parameter is a CategoricalDistribution of its grid values, so the
        same ``ask`` call works with the GridSampler. Keys are sorted.
        """
        if self.is_grid:
            return {k: CategoricalDistribution(v) for k, v in self.grid().items()}
        out: dict[str, BaseDistribution] = {}
        for key in self.searched():
            param = self.space[key]
            if isinstance(param, Choice):
                out[key] = CategoricalDistribution(param.choices)
            elif isinstance(param, Range):
                out[key] = param.distribution()
        return out

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """A fresh, seeded sampler for this spec.

        The grid sampler returned never calls ``study.stop()`` once the grid is exhausted
        (Optuna's does, which raises in ``tell`` outside ``study.optimize``); with ask/tell
        the driver stops after :attr:`n_trials_planned` trials.
        """
        seed = self.sampler_seed
        if self.sampler == "grid":
            return _AskTellGridSampler(self.grid(), seed=seed)
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if self.sampler == "qmc":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.samplers.QMCSampler(
                    seed=seed, scramble=True, warn_independent_sampling=False
                )
        return optuna.samplers.TPESampler(seed=seed)

    def trial_spec(self, params: dict[str, Any]) -> TrialSpec:
        """The TrialSpec for one set of sampled parameters.

        Precedence: TrialSpec defaults < ``trial`` section < fixed ``space`` scalars <
        ``params``. Unless ``trial`` sets ``data_seed``, ``data_seed`` = the trial's ``seed``.

        Args:
            params: a value for every searched parameter (e.g. ``optuna_trial.params``).

        Raises:
            ValueError: if ``params`` misses a searched parameter or has any other key.
        """
        searched = set(self.searched())
        if set(params) != searched:
            missing = sorted(searched - set(params))
            extra = sorted(set(params) - searched)
            raise ValueError(
                f"params must name exactly the searched parameters {sorted(searched)};"
                f" missing {missing}, unexpected {extra}"
            )
        values = self.fixed()
        for key, value in params.items():
            is_number = isinstance(value, int) and not isinstance(value, bool)
            values[key] = float(value) if is_number and _is_float_field(key) else value
        if "data_seed" not in self.trial:
            values["data_seed"] = values.get("seed", _TRIAL_FIELDS["seed"])
        return TrialSpec(**values)

    def seeds_per_cell(self) -> int | None:
        """Replicates per cell: the number of seed choices (or grid seed values), else None."""
        param = self.space.get("seed")
        if isinstance(param, Choice):
            return len(param.choices)
        if isinstance(param, Range) and self.is_grid:
            return param.count()
        return None

    def score(self, result_summary: dict[str, Any]) -> float:
        """The objective value of one finished trial (minimised).

        Args:
            result_summary: ``{"converged_epoch": int | None, "diverged_epoch": int | None,
                "best_val_loss": float}``.

        Returns:
            epochs_to_converge: the converged epoch if the trial converged before any
            divergence, else ``max_epochs + 1`` (censored or diverged). best_val_loss: the
            best validation loss, or ``DIVERGED_LOSS`` if the trial diverged or has no
            finite loss.
        """
        converged = result_summary.get("converged_epoch")
        diverged = result_summary.get("diverged_epoch")
        if self.objective.metric == "epochs_to_converge":
            if converged is not None and (diverged is None or converged <= diverged):
                return float(converged)
            return float(self.max_epochs + 1)
        loss = result_summary.get("best_val_loss")
        if diverged is not None or loss is None or not math.isfinite(loss):
            return DIVERGED_LOSS
        return float(loss)

    def spec_hash(self) -> str:
        """sha256 (16 hex) of the canonical JSON of the validated spec (all fields)."""
        dumped = self.model_dump(mode="json", exclude={"claims"})  # judged, not run
        text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def claim_hash(self) -> str:
        """sha256 (16 hex) of the claim text ("" when there is none)."""
        return hashlib.sha256((self.claim or "").encode()).hexdigest()[:16]


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: no ``study.stop()`` (it raises outside ``optimize``)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


# --------------------------------------------------------------------------- loading


def _translate(exc: ValidationError, source: str) -> SpecError:
    err = exc.errors()[0]
    path: _Loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, _FieldError):
        path += cause.path
        msg = cause.msg
    elif err["type"] == "missing":
        msg = "required"
    else:
        text = err["msg"]
        msg = f"{text[:1].lower()}{text[1:]} (got {_short(err.get('input'))})"
    return SpecError(f"{source}: {_join(path)}: {msg}".replace("\n", " "))


def parse_study_spec(data: object, source: str = "<spec>") -> StudySpec:
    """Validate an already-parsed spec (a dict as from YAML).

    Args:
        data: the spec mapping.
        source: what to name in error messages (a file name).

    Raises:
        SpecError: the first problem found, as one line.
    """
    if not isinstance(data, dict):
        got = "an empty document" if data is None else type(data).__name__
        raise SpecError(f"{source}: <top>: must be a mapping of study fields (got {got})")
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise _translate(exc, source) from None


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec YAML file. Creates nothing on disk.

    Raises:
        SpecError: missing/unreadable file, bad YAML, or an invalid spec (one line).
    """
    source = str(path)
    try:
        with Path(path).open("rb") as file:
            raw = file.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{source}: file not found") from None
    except IsADirectoryError:
        raise SpecError(f"{source}: is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES} bytes; not a study spec")
    if b"\x00" in raw:
        raise SpecError(f"{source}: binary file (it contains a NUL byte); a spec is YAML text")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{source}: not UTF-8 text (byte offset {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{source}: invalid YAML{where}: {problem}".replace("\n", " ")) from None
    except RecursionError:
        raise SpecError(f"{source}: invalid YAML: nested too deeply") from None
    _check_expansion(data, source)
    return parse_study_spec(data, source)


def _check_expansion(data: object, source: str) -> None:
    """Refuse YAML whose aliases expand to a huge (an alias bomb) or a recursive document.

    ``yaml.safe_load`` shares aliased nodes, so such a document is small in memory, but
    anything that walks it (validation, error messages) would see every expanded value.

    Raises:
        SpecError: more than :data:`MAX_SPEC_VALUES` values once expanded, a node that
            contains itself, or nesting too deep to walk.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: object) -> int:
        if not isinstance(node, dict | list):
            return 1
        ident = id(node)
        if ident in sizes:
            return sizes[ident]
        if ident in open_nodes:
            raise SpecError(f"{source}: invalid YAML: an alias refers to a node that contains it")
        open_nodes.add(ident)
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child)
            if total > MAX_SPEC_VALUES:
                break
        open_nodes.discard(ident)
        sizes[ident] = total
        return total

    try:
        total = size(data)
    except RecursionError:
        raise SpecError(f"{source}: invalid YAML: nested too deeply") from None
    if total > MAX_SPEC_VALUES:
        raise SpecError(
            f"{source}: invalid YAML: more than {MAX_SPEC_VALUES} values once aliases are"
            " expanded (an alias bomb?)"
        )
