"""A study spec's sampler: ``sampler``, ``sampler_seed`` and ``sampler_options``, and the
Optuna sampler they make.

``sampler_options`` (optional) passes options to the sampler; each applies to some
samplers only, and one given to a sampler that does not take it is refused (one line
naming the samplers that do)::

    sampler: tpe
    sampler_options:
      seed: 0                 # random, qmc, tpe: the sampler's seed (= sampler_seed)
      n_startup_trials: 10    # tpe: trials drawn at random before TPE models results
      multivariate: false     # tpe: model the parameters jointly
      constant_liar: true     # tpe: count running trials as bad, so parallel asks differ
      scramble: true          # qmc: scramble the sequence

The grid sampler takes none (its seed, the order of the shuffled grid, is
``sampler_seed``). ``seed`` and ``sampler_seed`` are one setting: give either, or both
with the same value. A spec without ``sampler_options`` (or with an empty one) has the
spec hash it had before the options existed, so stored studies resume.

:func:`sampler_warnings` says when a spec leaves its study to chance: a TPE study whose
``n_trials`` is within TPE's random start is random search.

:func:`distribution` is Optuna's distribution of a ``space:`` range. This module knows
pydantic and Optuna's samplers and distributions; it knows nothing of tensors, Ray or
MLflow.
"""

from __future__ import annotations

import warnings
from typing import Annotated, Any

import optuna
from annotated_types import Ge, Le
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution

from models.fields import FIELDS
from pipeline.space import Range, StrictModel, within
from pipeline.specerrors import refuse

__all__ = [
    "SAMPLERS",
    "TPE_STARTUP",
    "SamplerOptions",
    "check_sampler_options",
    "distribution",
    "make_sampler",
    "options_hash_part",
    "replicate_seed",
    "sampler_warnings",
    "startup_trials",
    "take_options_seed",
    "without_replicate",
]

SAMPLERS: tuple[str, ...] = ("grid", "random", "qmc", "tpe")
TPE_STARTUP = 10
"""Optuna's default ``n_startup_trials`` of TPE: trials drawn at random before it models."""
QMC_SCRAMBLE = True
"""``scramble`` of the QMC sampler unless the spec sets it (as before the option existed)."""

TAKES: dict[str, tuple[str, ...]] = {
    "seed": ("random", "qmc", "tpe"),
    "n_startup_trials": ("tpe",),
    "multivariate": ("tpe",),
    "constant_liar": ("tpe",),
    "scramble": ("qmc",),
}
"""Each option -> the samplers that take it."""


class SamplerOptions(StrictModel):
    """``sampler_options``: every option None unless the spec sets it (see the module)."""

    unknown_key = "unknown sampler option"

    seed: Annotated[int, within(FIELDS["seed"])] | None = None
    """The sampler's seed (the same setting as ``sampler_seed``)."""
    n_startup_trials: Annotated[int, Ge(0), Le(1_000_000)] | None = None
    """TPE: trials drawn at random before TPE models results (Optuna's default 10)."""
    multivariate: bool | None = None
    """TPE: model the parameters jointly (default False)."""
    constant_liar: bool | None = None
    """TPE: treat running trials as bad results, so trials asked together differ
    (default True)."""
    scramble: bool | None = None
    """QMC: scramble the low-discrepancy sequence (default True)."""

    def given(self) -> dict[str, Any]:
        """The options the spec sets, by name."""
        return self.model_dump(exclude_none=True)


def take_options_seed(data: Any) -> Any:
    """Before validation: ``sampler_seed`` takes ``sampler_options.seed`` when only that is
    given; both given with different values is refused at ``sampler_options.seed``.

    A seed that is not a valid integer is left to the options' own validation, so its
    error names ``sampler_options.seed``.
    """
    if not isinstance(data, dict) or not isinstance(data.get("sampler_options"), dict):
        return data
    seed = data["sampler_options"].get("seed")
    valid = isinstance(seed, int) and not isinstance(seed, bool)
    if not valid or FIELDS["seed"].out_of_bounds(seed):
        return data
    if "sampler_seed" not in data:
        return {**data, "sampler_seed": seed}
    other = data["sampler_seed"]
    if other != seed:
        refuse(
            ("sampler_options", "seed"),
            f"is sampler_seed by another name; sampler_seed is {other!r} and"
            f" sampler_options.seed {seed!r}: give one of them, or the same value",
            seed,
        )
    return data


def check_sampler_options(sampler: str, options: SamplerOptions | None) -> None:
    """Refuse an option the chosen sampler does not take (one line naming which do)."""
    if options is None:
        return
    for key in options.given():
        takers = TAKES[key]
        if sampler == "grid":
            refuse(
                ("sampler_options", key),
                "the grid sampler takes no sampler_options (its seed is sampler_seed);"
                f" {key} is for sampler {' or '.join(takers)}",
            )
        if sampler not in takers:
            refuse(
                ("sampler_options", key),
                f"only sampler {' or '.join(takers)} takes {key} (sampler is {sampler!r})",
            )


def options_hash_part(options: SamplerOptions | None) -> dict[str, Any] | None:
    """What ``sampler_options`` adds to the spec hash: the options given, or None (left
    out of the hash) when none is, so older specs keep their hash."""
    given = {} if options is None else options.given()
    return given or None


def startup_trials(sampler: str, options: SamplerOptions | None) -> int | None:
    """Trials the sampler draws at random before it models results: TPE's
    ``n_startup_trials`` (default :data:`TPE_STARTUP`); None for a sampler that never
    models results (grid, random, qmc)."""
    if sampler != "tpe":
        return None
    given = None if options is None else options.n_startup_trials
    return TPE_STARTUP if given is None else given


def make_sampler(
    sampler: str,
    seed: int,
    options: SamplerOptions | None,
    grid: dict[str, list[Any]] | None = None,
) -> optuna.samplers.BaseSampler:
    """A fresh, seeded Optuna sampler: ``grid`` (needs the grid's values), ``random``,
    ``qmc`` or ``tpe``, with the spec's options (their defaults where not given).

    The grid sampler returned never calls ``study.stop()`` once the grid is exhausted
    (Optuna's does, which raises in ``tell`` outside ``study.optimize``).
    """
    opts = options or SamplerOptions()
    if sampler == "grid":
        if grid is None:
            raise ValueError("the grid sampler needs the grid")
        return _AskTellGridSampler(grid, seed=seed)
    if sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():  # the options below are experimental in some versions
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if sampler == "qmc":
            scramble = QMC_SCRAMBLE if opts.scramble is None else opts.scramble
            return optuna.samplers.QMCSampler(
                seed=seed, scramble=scramble, warn_independent_sampling=False
            )
        if sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed,
                n_startup_trials=startup_trials(sampler, opts) or 0,
                multivariate=bool(opts.multivariate),
                constant_liar=True if opts.constant_liar is None else opts.constant_liar,
            )
    raise ValueError(f"unknown sampler {sampler!r}; allowed: {', '.join(SAMPLERS)}")


def distribution(param: Range) -> BaseDistribution:
    """Optuna's distribution of a range."""
    if param.type == "int":
        step = int(param.step or 1)
        return IntDistribution(int(param.low), int(param.high), log=param.log, step=step)
    step_f = None if param.step is None else float(param.step)
    return FloatDistribution(float(param.low), float(param.high), log=param.log, step=step_f)


REPLICATE = "seed"
"""The parameter that is a replicate, never searched: no sampler sees it and no trial
stores a distribution of it (a grid lists each of its values once per cell; a sampled
study gives trial ``n`` the ``n``-th seed in turn, :func:`replicate_seed`)."""


def replicate_seed(seeds: Range | list[Any], number: int) -> int:
    """The seed of a sampled study's trial ``number``: the study's seeds in turn (a
    choice's in the order given, a range's from ``low``), so every seed is used equally
    often and the draw is independent of the sampler and of the results; the same on a
    resume, since it depends on the trial's number only."""
    if isinstance(seeds, Range):
        step = int(seeds.step or 1)
        return int(seeds.low) + (number % seeds.count()) * step
    return int(seeds[number % len(seeds)])


def without_replicate(distributions: dict[str, BaseDistribution]) -> dict[str, BaseDistribution]:
    """The distributions a sampler is given and a trial stores: all but the seed's."""
    return {name: d for name, d in distributions.items() if name != REPLICATE}


def sampler_warnings(sampler: str, n_trials: int, options: SamplerOptions | None) -> list[str]:
    """One line per way the sampler leaves the study to chance (empty: none).

    A TPE study of ``n_trials`` <= its ``n_startup_trials`` never leaves TPE's random start:
    it is random search.
    """
    startup = startup_trials(sampler, options)
    if startup is None or n_trials > startup:
        return []
    return [
        f"{sampler} with n_trials {n_trials} <= n_startup_trials {startup} is random search;"
        " raise n_trials or set sampler_options.n_startup_trials"
    ]


class _AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell: no ``study.stop()`` (it raises outside ``optimize``)."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None
