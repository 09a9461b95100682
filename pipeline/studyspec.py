"""Study specs: the YAML files under ``studies/``, validated once, at load.

A study spec says which trials a study runs and how Optuna picks them. Loading
checks everything a person can get wrong (unknown keys, wrong types, bad ranges,
unknown scheme/task/cell/optimizer names, a grid that cannot be a grid) and
raises one :class:`SpecError` whose message is a single line naming the file,
the dotted field path, what is wrong and what is allowed::

    studies/x.yaml: space.scale.low: must be <= high (got low=2.0, high=1.0)

Nothing is started or written by loading. This module knows pydantic and Optuna's
sampler/distribution classes; it knows nothing of tensors, Ray or MLflow (the
registries in ``models`` are imported only to check names). Its parts live beside it:
``pipeline.specfile`` reads the file, ``pipeline.space`` has the type of every
TrialSpec field's values (from ``models.fields.FIELDS``, the rules ``initstudy trial``
checks too) and the ``space:`` models, ``pipeline.specerrors`` words every error.

The format (``yaml.safe_load``)::

    # Question: does xavier converge faster than uniform01 on short adding problems?
    # Run: initstudy run studies/smoke.yaml
    name: smoke                 # [A-Za-z0-9_.-]{1,64}
    description: "..."          # optional
    claim: "xavier converges 2-10x faster than uniform01"   # optional, hashed onto every run
    sampler: grid               # grid (default) | random | qmc | tpe
    n_trials: null              # required for random/qmc/tpe; grid: default (and maximum) = grid
    sampler_seed: 0
    sampler_options: {}         # optional, not grid: e.g. {n_startup_trials: 4} for tpe
    objective: {metric: epochs_to_converge}   # or best_val_loss
    trial: {task: adding, hidden: 32}         # fixed TrialSpec fields (defaults: TrialSpec's)
    space:                                    # searched parameters
      init: [xavier, uniform01]               # list = categorical choices
      scale: {low: 0.5, high: 2.0, log: true} # range; optional step, log, type
      lr: 0.001                               # scalar = fixed value
    protocol:                                 # optional; absent = {kind: fixed}
      kind: tuned                             # fixed (the spec's lr) | tuned
      lr: [1.0e-3, 3.0e-3, 1.0e-2]            # tuned: stage 1's lr grid, >= 2 values > 0
      tuning_seeds: [100, 101, 102]           # tuned: stage 1's seeds, distinct
      pick: km_median                         # the pre-registered rule (the only one)

Rules worth knowing:

* Searchable parameters (keys of ``space``): ``SEARCHABLE``. A key may be in
  ``trial`` or in ``space``, not both. Each value obeys its field's rule in
  ``models.fields.FIELDS`` (type, bounds, registry name), wherever it is given.
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
* **sampler_options**: the random/qmc/tpe sampler's options (``pipeline.samplerspec``,
  which makes the sampler); left out, the spec hash is as before they existed.
* **protocol** (``pipeline.protocolspec``): ``tuned`` runs two studies, ``NAME.tune``
  (every arm, i.e. every combination of the searched parameters but ``seed``, at every
  ``protocol.lr`` on every tuning seed) and ``NAME`` (every arm on the measurement seeds,
  ``space.seed`` or ``trial.seed``, at the lr ``pick`` chose). It needs the grid sampler;
  ``lr`` may then not be in ``space`` or ``trial``, and ``tuning_seeds`` may not overlap
  the measurement seeds. :attr:`StudySpec.n_trials_planned` counts both stages; the spec
  hash covers the protocol (a ``fixed`` one is left out, so older studies resume).
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
from pathlib import Path
from typing import Annotated, Any, Literal

import optuna
from annotated_types import Ge, Le
from optuna.distributions import BaseDistribution, CategoricalDistribution
from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from models.fields import FIELDS, SEARCHABLE, size_problem
from models.spec import TrialSpec
from pipeline.claimspec import ClaimError, parse_claims
from pipeline.protocolspec import Protocol, arm_lr, check_protocol, stage_trials
from pipeline.samplerspec import (
    SAMPLERS,
    SamplerOptions,
    check_sampler_options,
    distribution,
    make_sampler,
    options_hash_part,
    sampler_warnings,
    startup_trials,
    take_options_seed,
)
from pipeline.space import (
    Choice,
    Fixed,
    Range,
    SpaceParam,
    StrictModel,
    known_names,
    parse_space,
    parse_trial,
    within,
)
from pipeline.specerrors import SpecError, problem, refuse, short, spec_error
from pipeline.specfile import read_spec_file

__all__ = [
    "DIVERGED_LOSS",
    "MAX_GRID",
    "MAX_TRIALS",
    "SAMPLERS",
    "SEARCHABLE",
    "Choice",
    "Fixed",
    "Objective",
    "Range",
    "SamplerOptions",
    "SpecError",
    "StudySpec",
    "is_study_name",
    "load_study_spec",
    "parse_study_spec",
]

MAX_GRID = 100_000
"""Largest grid accepted; beyond that, use a random/qmc/tpe sampler with n_trials."""
MAX_TRIALS = 1_000_000
"""Largest ``n_trials`` accepted (with every field bounded, size estimates stay finite)."""
DIVERGED_LOSS = 1e30
"""best_val_loss score of a diverged trial (Optuna refuses infinite values)."""

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
STUDY_NAME_RULE = "1-64 letters, digits, '_', '.' or '-' (no path separators, not . or ..)"
"""What :func:`is_study_name` accepts, in words (for error messages)."""

_TRIAL_FIELDS: dict[str, Any] = {name: field.default for name, field in FIELDS.items()}


def is_study_name(name: object) -> bool:
    """Whether ``name`` may name a study: it becomes a folder name, an MLflow experiment and
    part of URLs, so only ``[A-Za-z0-9_.-]{1,64}``, and never ``.`` or ``..``."""
    return isinstance(name, str) and bool(_NAME_RE.fullmatch(name)) and name not in {".", ".."}


class Objective(StrictModel):
    """What Optuna minimises for each trial (see the module docstring for the scoring)."""

    metric: Literal["epochs_to_converge", "best_val_loss"] = "epochs_to_converge"


class StudySpec(StrictModel):
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
    n_trials: Annotated[int, Ge(1), Le(MAX_TRIALS)] | None = None
    """Trials to run; required unless grid (grid: default = whole grid, at most the grid)."""
    sampler_seed: Annotated[int, within(FIELDS["seed"])] = 0
    """Seed of the sampler (``sampler_options.seed`` is the same setting)."""
    sampler_options: SamplerOptions | None = None
    """Options of the random/qmc/tpe sampler (``pipeline.samplerspec``); None: none given."""
    objective: Objective = Objective()
    """What each trial is scored by."""
    trial: dict[str, Any] = Field(default_factory=dict)
    """Fixed TrialSpec fields (only those given; the rest are TrialSpec defaults)."""
    space: dict[str, SpaceParam] = Field(default_factory=dict)
    """Searched (Choice, Range) and fixed (Fixed) parameters, by name."""
    protocol: Protocol = Protocol()
    """How each arm's lr is set (``pipeline.protocolspec``); in the hash unless fixed."""
    _stage: str | None = PrivateAttr(None)
    """``tune`` / ``measure`` for a stage of a tuned protocol (``pipeline.protocolspec``)."""
    _arm_lr: dict[str, float] | None = PrivateAttr(None)
    """Stage 2: each arm's chosen lr, by ``protocolspec.arm_key``."""

    @model_validator(mode="before")
    @classmethod
    def _take_options_seed(cls, data: Any) -> Any:
        return take_options_seed(data)

    @field_validator("name", mode="before")
    @classmethod
    def _check_name(cls, value: Any) -> Any:
        if not is_study_name(value):
            raise problem(f"must be {STUDY_NAME_RULE} (got {short(value)})")
        return value

    @field_validator("claims", mode="before")
    @classmethod
    def _check_claims(cls, raw: Any) -> Any:
        if raw is None:
            return None
        try:
            parse_claims(raw, known_names("INIT_SCHEMES"))
        except ClaimError as exc:
            refuse(exc.path, exc.msg, raw)
        return raw

    @field_validator("trial", mode="before")
    @classmethod
    def _check_trial(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise problem(f"must be a mapping of TrialSpec fields (got {short(raw)})")
        return parse_trial(raw)

    @field_validator("space", mode="before")
    @classmethod
    def _check_space(cls, raw: Any) -> Any:
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise problem(
                f"must be a mapping of parameter -> list | range | value (got {short(raw)})"
            )
        return parse_space(raw)

    @model_validator(mode="after")
    def _check_whole(self) -> StudySpec:
        for key in self.space:
            if key in self.trial:
                refuse(
                    ("space", key), "is also set in trial; set it in trial or in space, not both"
                )
        if self.is_grid:
            for key, param in self.space.items():
                if isinstance(param, Range) and param.type == "float":
                    refuse(
                        ("space", key),
                        "the grid sampler needs lists or int ranges (int ranges are expanded"
                        " to all values); got a float range: list the values, or use a"
                        " random/qmc/tpe sampler",
                    )
            size = self.grid_size
            if size > MAX_GRID:
                refuse(
                    ("space",), f"grid has {size} cells, more than {MAX_GRID}; use fewer values"
                )
            if self.n_trials is not None and self.n_trials > size:
                refuse(
                    ("n_trials",),
                    f"must be <= the grid size {size} for the grid sampler (got {self.n_trials});"
                    " leave it out to run the whole grid",
                )
        elif self.n_trials is None:
            refuse(("n_trials",), f"required for sampler {self.sampler!r} (an integer >= 1)")
        check_sampler_options(self.sampler, self.sampler_options)
        check_protocol(self)
        largest = {n: max(self.values(n)) for n in ("batch_size", "seq_len", "hidden", "val_size")}
        too_large = size_problem(largest)  # the largest trial the study may run
        if too_large is not None:
            refuse(("trial", too_large[0]), too_large[1])
        self._check_with_models()
        return self

    def _check_with_models(self) -> None:
        """Cross-field rules owned by ``models.check_spec``, on one representative trial.

        Each field's own rule was checked already (the same rule ``check_spec`` applies);
        what can still fail here is a rule that ties fields together.
        """
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
            if not msg or field not in FIELDS:
                field, msg = "", str(exc)
            section = "space" if field in self.space else "trial"
            refuse((section, field) if field else (section,), msg)

    # ----------------------------------------------------------------- derived views

    @property
    def is_grid(self) -> bool:
        """True for the grid sampler."""
        return self.sampler == "grid"

    @property
    def startup_trials(self) -> int | None:
        """Trials the sampler draws at random before it models results (TPE's
        ``n_startup_trials``); None for a sampler that never models results."""
        return startup_trials(self.sampler, self.sampler_options)

    def warnings(self) -> list[str]:
        """One line per way the spec leaves its study to chance (empty: none), e.g. a TPE
        study whose n_trials are all within TPE's random start."""
        return sampler_warnings(self.sampler, self.n_trials_planned, self.sampler_options)

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
    def stage(self) -> str | None:
        """The stage of a tuned protocol this spec runs (None: the whole spec)."""
        return self._stage

    @property
    def chosen_lr(self) -> dict[str, float] | None:
        """Stage 2 of a tuned protocol: each arm's lr, by ``protocolspec.arm_key``."""
        return None if self._arm_lr is None else dict(self._arm_lr)

    @property
    def n_trials_planned(self) -> int:
        """Trials the study runs: ``n_trials``, or the whole grid; a tuned spec that is not
        one stage counts both stages' trials."""
        if self.protocol.tuned and self._stage is None:
            return sum(stage_trials(self))
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
        ``steps x (STEP_SECONDS x (1 + G) / 2 + MAC_SECONDS x batch_size x G x hidden x
        (hidden + 1))`` seconds, with ``steps`` the time steps of the sequence (seq_len;
        seq_len + 20 for copy) and G the cell's gate blocks (1 Elman, 3 GRU, 4 LSTM): the
        cost model of :mod:`pipeline.plan`, which also orders the packs. It is within about
        2x of ``models.train_trial`` for hidden 8-512 (smaller models are overhead-bound,
        larger ones BLAS-bound). Validation passes, input and output projections (a charlm
        vocabulary) and packing are left out. A grid is summed over its cells; a sampled
        study counts every trial at the costliest values it allows.
        """
        from pipeline import plan  # plan imports this module's type for its signature

        return plan.study_seconds(self)

    def grid(self) -> dict[str, list[Any]]:
        """The search space for ``optuna.samplers.GridSampler``: searched parameters only,
        sorted by name, int ranges expanded (fixed scalars: :meth:`trial_spec` merges them).

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
        """Every grid cell as a params dict (searched parameters only), in the product's
        order over the sorted names (the last varies fastest), values as given."""
        grid = self.grid()
        names = list(grid)
        return [
            dict(zip(names, combo, strict=True)) for combo in itertools.product(*grid.values())
        ]

    def trains(self, point: dict[str, Any]) -> bool:
        """Whether this run trains grid point ``point``: all do (a tuning stage keeps fewer)."""
        return True

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
                out[key] = distribution(param)
        return out

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        """A fresh, seeded sampler for this spec, with its ``sampler_options``.

        The grid sampler returned never calls ``study.stop()`` once the grid is exhausted
        (Optuna's does, which raises in ``tell`` outside ``study.optimize``); with ask/tell
        the driver stops after :attr:`n_trials_planned` trials.
        """
        grid = self.grid() if self.is_grid else None
        return make_sampler(self.sampler, self.sampler_seed, self.sampler_options, grid)

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
            values[key] = float(value) if is_number and FIELDS[key].kind is float else value
        if self._arm_lr is not None:
            values["lr"] = arm_lr(self, params)
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
        """sha256 (16 hex) of the canonical JSON of the validated spec (all fields); the
        free-text ``description`` is hashed as if absent, so editing it does not block a
        resume."""
        # claims are judged, not run; a fixed protocol is left out, as before it existed
        # sampler_options: only those given, and none at all when none is (older specs)
        exclude = {"claims", "sampler_options"}
        exclude |= set() if self.protocol.tuned else {"protocol"}
        dumped = self.model_dump(mode="json", exclude=exclude)
        dumped["description"] = None  # as a spec without one always hashed
        options = options_hash_part(self.sampler_options)
        if options is not None:
            dumped["sampler_options"] = options
        text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def claim_hash(self) -> str:
        """sha256 (16 hex) of the claim text ("" when there is none)."""
        return hashlib.sha256((self.claim or "").encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- loading


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
        raise spec_error(exc, source) from None


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate a study spec YAML file. Creates nothing on disk.

    Raises:
        SpecError: missing/unreadable file, bad YAML, or an invalid spec (one line).
    """
    return parse_study_spec(read_spec_file(path), str(path))
