"""The ``protocol:`` section of a study spec, and the two stages of a tuned protocol.

A fixed lr can decide a comparison by itself (each init scheme has its own best lr), so a
``tuned`` protocol measures each **arm** (one combination of the searched parameters
other than ``seed``) at its own lr, chosen on seeds it is not measured on:

* stage 1, ``tune`` (study ``NAME.tune``): every arm x every ``protocol.lr`` x every
  ``protocol.tuning_seeds``; :func:`tune_stage` is that study's spec. An arm whose pick
  falls at either end of the lrs it has tried is tuned again one step further out (the
  grid's mean log spacing), at most ``protocol.extensions`` times: the steps are the
  :func:`lr_ladder`'s, all known in advance, so every extension trial is an ordinary trial
  of the same study;
* stage 2, ``measure`` (study ``NAME``): every arm x every measurement seed (``space.seed``
  or ``trial.seed``), each at the lr the pre-registered rule picked from stage 1;
  :func:`measure_stage` is that study's spec.

The rule itself reads tables and lives in :mod:`pipeline.analysis.protocol`; running the
stages is :mod:`pipeline.protocol`'s job. This module only knows specs.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from models.fields import FIELDS
from pipeline.space import StrictModel, parse_space, value_type
from pipeline.specerrors import refuse

if TYPE_CHECKING:
    from pipeline.studyspec import StudySpec

__all__ = [
    "MAX_EXTENSIONS",
    "STAGES",
    "TUNE_SUFFIX",
    "Protocol",
    "arm_key",
    "check_protocol",
    "lr_ladder",
    "measure_stage",
]

STAGES: tuple[str, ...] = ("tune", "measure")
"""The stages of a tuned protocol, in the order they run (the ``initstudy.stage`` tag)."""
TUNE_SUFFIX = ".tune"
"""Stage 1's study is the study's name plus this."""

MAX_EXTENSIONS = 5
"""The most ``protocol.extensions`` a spec may ask for."""

_LR = value_type(FIELDS["lr"])
_SEED = value_type(FIELDS["seed"])


class Protocol(StrictModel):
    """How each arm's lr is set: ``fixed`` (the spec's lr) or ``tuned`` (see the module)."""

    kind: Literal["fixed", "tuned"] = "fixed"
    lr: list[_LR] | None = None  # type: ignore[valid-type]
    """Stage 1's lr grid (tuned only): at least 2 distinct values, each > 0."""
    tuning_seeds: list[_SEED] | None = None  # type: ignore[valid-type]
    """Stage 1's seeds (tuned only): distinct, none of them a measurement seed."""
    pick: Literal["km_median"] = "km_median"
    """The pre-registered rule that picks each arm's lr (``pipeline.analysis.protocol``)."""
    extensions: int = Field(default=2, ge=0, le=MAX_EXTENSIONS)
    """How many times an arm whose pick is at an end of its lrs is tuned one step further
    out (then a pick still at an end is flagged); 0: never."""

    @model_validator(mode="after")
    def _check(self) -> Protocol:
        for key in ("lr", "tuning_seeds"):
            values = getattr(self, key)
            if self.kind == "fixed":
                if values is not None:
                    refuse((key,), "is only for kind: tuned (kind is fixed)")
                continue
            least = 2 if key == "lr" else 1
            if values is None or len(values) < least:
                refuse((key,), f"kind tuned needs a list of at least {least} values", values)
            if len(set(values)) != len(values):
                refuse((key,), f"values must be distinct (got {values})", values)
        return self

    @property
    def tuned(self) -> bool:
        return self.kind == "tuned"


def check_protocol(spec: StudySpec) -> None:
    """The rules that tie ``protocol`` to the rest of a spec (run at load)."""
    protocol = spec.protocol
    if not protocol.tuned:
        return
    if not spec.is_grid:
        refuse(("protocol", "kind"), f"tuned needs the grid sampler (got {spec.sampler!r})")
    if spec.n_trials is not None:
        refuse(("n_trials",), "not with a tuned protocol: both stages run their whole grid")
    for section in ("space", "trial"):
        if "lr" in getattr(spec, section):
            refuse(
                (section, "lr"),
                "is set by protocol (kind: tuned); give the lr grid as"
                " protocol.lr and leave lr out of space and trial",
            )
    shared = sorted(set(protocol.tuning_seeds or ()) & set(spec.values("seed")))
    if shared:
        refuse(
            ("protocol", "tuning_seeds"),
            f"must not overlap the measurement seeds (space.seed or trial.seed); shared: {shared}",
        )
    if len(spec.name) + len(TUNE_SUFFIX) > 64:
        refuse(
            ("name",),
            f"must be at most {64 - len(TUNE_SUFFIX)} characters with a tuned"
            f" protocol (stage 1 is study NAME{TUNE_SUFFIX})",
        )


def stage_trials(spec: StudySpec) -> tuple[int, int]:
    """Trials of stage 1 and of stage 2 of a tuned spec (the grid without lr and seed axes,
    times the lrs and tuning seeds; the grid itself). Stage 1's extensions come on top:
    at most ``protocol.extensions`` x tuning seeds more per arm."""
    protocol = spec.protocol
    seeds = len(spec.values("seed"))
    arms = spec.grid_size // seeds if "seed" in spec.space else spec.grid_size
    return arms * len(protocol.lr or ()) * len(protocol.tuning_seeds or ()), spec.grid_size


def arm_params(spec: StudySpec) -> list[str]:
    """The parameters that make an arm: the searched ones other than seed (and lr)."""
    return [k for k in spec.searched() if k not in ("seed", "lr")]


def arm_key(arm: dict[str, Any]) -> str:
    """A canonical text for an arm's values (params or table cells: numpy or Python)."""
    norm: dict[str, Any] = {}
    for key, value in arm.items():
        is_na = value is None or (isinstance(value, float) and value != value)
        norm[key] = None if is_na else FIELDS[key].kind(value)
    return json.dumps(norm, sort_keys=True)


def lr_ladder(protocol: Protocol) -> list[float]:
    """Every lr stage 1 may train: the grid, and ``extensions`` steps beyond each end of it
    at the grid's mean log spacing (``(max / min) ** (1 / (n - 1))``), each rounded to 3
    significant digits; ascending. With no extensions: the grid as given."""
    grid = [float(lr) for lr in protocol.lr or ()]
    if protocol.extensions == 0 or len(grid) < 2:
        return grid
    low, high = min(grid), max(grid)
    step = (high / low) ** (1 / (len(grid) - 1))
    below = [_round(low / step**k) for k in range(protocol.extensions, 0, -1)]
    above = [_round(high * step**k) for k in range(1, protocol.extensions + 1)]
    ladder = [*below, *sorted(grid), *above]
    if len(set(ladder)) != len(ladder) or ladder != sorted(ladder):  # rounding collided
        below = [low / step**k for k in range(protocol.extensions, 0, -1)]
        ladder = [*below, *sorted(grid), *(high * step**k for k in range(1, len(above) + 1))]
    return ladder


def _round(value: float) -> float:
    return float(f"{value:.3g}")


def tune_stage(spec: StudySpec, extra: dict[str, list[float]] | None = None) -> StudySpec:
    """Stage 1's spec: ``lr`` and ``seed`` become grid axes (the lr grid, the tuning seeds).

    The lr axis is the whole :func:`lr_ladder` (so its values never change between runs),
    and the grid holds its points at the grid's lrs for every arm, plus those at ``extra``
    (lrs of the ladder, by :func:`arm_key`) for the arms given.
    """
    from pipeline.tunestage import TuneStage  # a StudySpec: studyspec imports this module

    protocol = spec.protocol
    axes = parse_space({"lr": lr_ladder(protocol), "seed": protocol.tuning_seeds})
    space = {k: v for k, v in spec.space.items() if k != "seed"} | axes
    trial = {k: v for k, v in spec.trial.items() if k != "seed"}
    update = {"name": spec.name + TUNE_SUFFIX, "space": space, "trial": trial}
    out = spec.model_copy(update={**update, "protocol": Protocol(), "n_trials": None})
    return TuneStage.of(out, list(protocol.lr or ()), extra or {})


def measure_stage(spec: StudySpec, chosen: dict[str, float]) -> StudySpec:
    """Stage 2's spec: the study's own grid, each arm (by :func:`arm_key`) at ``chosen``."""
    missing = sorted({arm_key(_arm(spec, p)) for p in spec.grid_points()} - set(chosen))
    if missing:
        raise ValueError(f"no lr chosen for arm(s) {missing}")
    out = spec.model_copy()
    out._stage, out._arm_lr = "measure", dict(chosen)
    return out


def as_stored(spec: StudySpec, stage: object, chosen: object) -> StudySpec:
    """The spec a stored study ran, from its stage and chosen-lr attributes (the spec text
    is the whole tuned spec for both stages): for ``sync`` and ``check``."""
    if stage == "tune":
        return tune_stage(spec)
    if stage == "measure" and isinstance(chosen, dict):
        return measure_stage(spec, chosen)
    return spec


def _arm(spec: StudySpec, params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in arm_params(spec)}


def arm_lr(spec: StudySpec, params: dict[str, Any]) -> float:
    """The lr stage 2 trains the arm of ``params`` at."""
    assert spec._arm_lr is not None
    return spec._arm_lr[arm_key(_arm(spec, params))]
