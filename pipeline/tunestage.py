"""Stage 1 of a tuned protocol as a study spec whose grid depends on what it found.

:func:`pipeline.protocolspec.tune_stage` makes it. Its lr axis is the whole
:func:`~pipeline.protocolspec.lr_ladder` (Optuna stores a categorical parameter as its
index among the choices, so the choices must be the same on every run of the study), but
its grid holds the ladder's points only at the protocol's own lrs, for every arm, and at
the extension lrs an arm's picks asked for (``extra``, by arm). The spec hash is the
plain spec's: the extension trials are ordinary trials of the one stage-1 study.
"""

from __future__ import annotations

from typing import Any

from pydantic import PrivateAttr

from pipeline.protocolspec import arm_key, arm_params
from pipeline.studyspec import StudySpec

__all__ = ["TuneStage"]


class TuneStage(StudySpec):
    """Stage 1's spec: the protocol's lr grid for every arm, plus each arm's extensions."""

    _base_lr: list[float] = PrivateAttr(default_factory=list)
    """The protocol's own lrs (every arm trains at these)."""
    _extra_lr: dict[str, list[float]] = PrivateAttr(default_factory=dict)
    """The extension lrs, by :func:`~pipeline.protocolspec.arm_key`."""

    @classmethod
    def of(cls, spec: StudySpec, base: list[float], extra: dict[str, list[float]]) -> TuneStage:
        """``spec`` (stage 1's plain spec, its lr axis the ladder) with these lrs."""
        fields = {name: getattr(spec, name) for name in type(spec).model_fields}
        out = cls.model_construct(_fields_set=set(spec.model_fields_set), **fields)
        out._stage = "tune"
        out._base_lr = list(base)
        out._extra_lr = {key: list(lrs) for key, lrs in extra.items()}
        return out

    @property
    def extra_lr(self) -> dict[str, list[float]]:
        """The extension lrs of this run, by arm."""
        return {key: list(lrs) for key, lrs in self._extra_lr.items()}

    def grid_points(self) -> list[dict[str, Any]]:
        """The ladder's grid points this run trains: each arm at the protocol's lrs and
        at its own extension lrs (in the plain grid's order)."""
        return [p for p in super().grid_points() if self.trains(p)]

    def trains(self, point: dict[str, Any]) -> bool:
        """Whether ``point`` is at the protocol's lrs or at its arm's extension lrs."""
        arm = arm_key({k: point[k] for k in arm_params(self)})
        return point["lr"] in self._base_lr or point["lr"] in self._extra_lr.get(arm, ())

    @property
    def n_trials_planned(self) -> int:
        return len(self.grid_points())
