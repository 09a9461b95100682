"""The pre-registered rule of a tuned protocol: each arm's lr, from stage 1's trials.

``pick: km_median`` (the only rule): per arm, the lr with the lowest Kaplan-Meier median
epochs-to-converge over the tuning seeds (:func:`pipeline.analysis.survival.km_median`
on :func:`~pipeline.analysis.survival.time_to_event`). Ties, "no lr reached a median"
included, go to the lowest median ``best_val_loss``, then to the smaller lr. The rule is
a pure function of the ``trials`` table, so a resumed study recomputes the same choice
from the stored results. No Optuna, Ray or MLflow here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.analysis.survival import km_median, time_to_event
from pipeline.protocolspec import arm_key

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

__all__ = [
    "ArmPick",
    "LrScore",
    "Tuning",
    "pick_lr",
    "shared_lr_verdicts",
    "tuning",
    "tuning_table",
]


@dataclass(frozen=True)
class LrScore:
    """One lr of one arm in stage 1."""

    lr: float
    n: int
    median: float | None
    """KM median epochs-to-converge; None = not reached within the budget."""
    median_text: str
    val_loss: float
    """Median best_val_loss over the tuning seeds (NaN: none finite)."""

    def rank(self) -> tuple[float, float, float]:
        """The rule's order: KM median, then median best_val_loss, then lr (lowest first)."""
        loss = self.val_loss if math.isfinite(self.val_loss) else math.inf
        return (math.inf if self.median is None else self.median, loss, self.lr)


@dataclass(frozen=True)
class ArmPick:
    """The rule's choice for one arm."""

    arm: dict[str, Any]
    """The arm's values (the searched parameters other than seed)."""
    lr: float
    """The chosen lr."""
    reached: bool
    """Whether any lr reached a KM median (if not, the choice fell to the tie-breaks)."""
    scores: list[LrScore]
    """Every lr tried, in the order of the lr values."""

    @property
    def key(self) -> str:
        return arm_key(self.arm)

    @property
    def at_edge(self) -> bool:
        """A reached pick at the smallest or largest lr tried: the arm's best lr may lie
        outside the grid, so a wider grid could change the measurement."""
        lrs = [s.lr for s in self.scores]
        return self.reached and len(lrs) > 1 and self.lr in (min(lrs), max(lrs))


def pick_lr(trials: pd.DataFrame, arm_params: list[str], rule: str = "km_median") -> list[ArmPick]:
    """Each arm's lr by the pre-registered rule, arms in the table's sorted order.

    Args:
        trials: stage 1's ``trials`` table (columns ``lr``, ``converged_epoch``,
            ``diverged_epoch``, ``max_epochs``, ``best_val_loss`` and ``arm_params``).
        arm_params: the columns that make an arm.
        rule: the protocol's ``pick`` (only ``km_median``).
    """
    if rule != "km_median":
        raise ValueError(f"unknown pick rule {rule!r}; known: km_median")
    picks = []
    for arm, rows in _arms(trials, arm_params):
        scores = [_score(float(lr), group) for lr, group in rows.groupby("lr", sort=True)]
        best = min(scores, key=LrScore.rank)
        reached = any(s.median is not None for s in scores)
        picks.append(ArmPick(arm=arm, lr=best.lr, reached=reached, scores=scores))
    return picks


def tuning_table(picks: list[ArmPick]) -> pd.DataFrame:
    """The tuning curve: one row per arm, the KM median epochs per lr, and the choice."""
    rows = []
    for p in picks:
        row: dict[str, Any] = {k: str(v) for k, v in p.arm.items()}
        row |= {f"lr {s.lr:g}": s.median_text for s in p.scores}
        row |= {"chosen lr": f"{p.lr:g}", "any median": "yes" if p.reached else "no"}
        row["at the grid's edge"] = "yes" if p.at_edge else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def at_lr(tables: StudyTables, lr: float) -> StudyTables:
    """Stage 1's tables restricted to the trials at one lr (as if it were shared)."""
    trials = tables.trials[tables.trials["lr"].astype(float) == lr]
    keep = set(trials["trial_number"])
    epochs = tables.epochs[tables.epochs["trial_number"].isin(keep)]
    steps = tables.steps[tables.steps["trial_number"].isin(keep)]
    return replace(tables, trials=trials, epochs=epochs, steps=steps)


def shared_lr_verdicts(tables: StudyTables, claims: Any = None) -> pd.DataFrame:
    """How the verdicts would read at a shared lr: stage 1's claims judged at each lr
    (one row per lr, one column per claim). Stage 1 has few seeds, so expect inconclusive."""
    from pipeline.analysis.verdicts import judge

    rows = []
    for lr in sorted(set(tables.trials["lr"].astype(float))):
        verdicts = judge(at_lr(tables, lr), claims, n_boot=500)
        rows.append({"lr": f"{lr:g}"} | {v.claim_id: v.verdict for v in verdicts})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Tuning:
    """A tuned study's report section: the picks, the tuning curve, the shared-lr verdicts."""

    study: str
    """Stage 1's study."""
    picks: list[ArmPick]
    curve: pd.DataFrame
    shared: pd.DataFrame
    seeds: int
    """Tuning seeds per lr and arm."""
    budget: int = 0
    """Stage 1's epoch budget (max_epochs)."""


def tuning(tables: StudyTables, arm_params: list[str], rule: str = "km_median") -> Tuning:
    """The report's tuned-protocol section, from stage 1's tables."""
    picks = pick_lr(tables.trials, arm_params, rule)
    seeds = int(tables.trials["seed"].nunique()) if len(tables.trials) else 0
    shared = shared_lr_verdicts(tables, tables.claims)
    budget = int(tables.trials["max_epochs"].max()) if len(tables.trials) else 0
    return Tuning(tables.study, picks, tuning_table(picks), shared, seeds, budget)


def _arms(trials: pd.DataFrame, arm_params: list[str]) -> list[tuple[dict[str, Any], Any]]:
    if not arm_params:
        return [({}, trials)]
    keyed = trials.assign(**{c: trials[c].astype(object) for c in arm_params})
    out = []
    for values, rows in keyed.groupby(arm_params, sort=True, dropna=False):
        vals = values if isinstance(values, tuple) else (values,)
        out.append((dict(zip(arm_params, vals, strict=True)), rows))
    return out


def _score(lr: float, rows: pd.DataFrame) -> LrScore:
    durations, events = time_to_event(rows)
    km = km_median(durations, events)
    loss = pd.to_numeric(rows["best_val_loss"], errors="coerce").astype(float)
    finite = loss[loss.map(math.isfinite)]
    val = float(finite.median()) if len(finite) else math.nan
    return LrScore(lr=lr, n=len(rows), median=km.median, median_text=km.text, val_loss=val)
