"""The pre-registered rule of a tuned protocol: each arm's lr, from stage 1's trials.

``pick: km_median`` (the only rule): per arm, the lr with the lowest Kaplan-Meier median
epochs-to-converge over the tuning seeds (:func:`pipeline.analysis.survival.km_median`
on :func:`~pipeline.analysis.survival.time_to_event`). Ties, "no lr reached a median"
included, go to the lowest median ``best_val_loss``, then to the smaller lr. The rule is
a pure function of the ``trials`` table, so a resumed study recomputes the same choice
from the stored results. No Optuna, Ray or MLflow here.

A grid must not decide the answer by its ends: :func:`extension_lrs` says, per arm, which
lrs beyond the grid stage 1 must also train. While an arm's pick is the smallest or
largest lr it has tried, the next lr of :func:`~pipeline.protocolspec.lr_ladder` in that
direction is added and the arm re-picked, at most ``protocol.extensions`` times. A final
pick still at an end of the arm's searched range is flagged (:attr:`ArmPick.at_edge`),
whatever its median: the arm's best lr may lie further out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import pandas as pd

from pipeline.analysis.survival import km_median, time_to_event
from pipeline.protocolspec import Protocol, arm_key, lr_ladder

if TYPE_CHECKING:
    from pipeline.analysis.tables import StudyTables

__all__ = [
    "EDGE_FLAG",
    "ArmPick",
    "LrScore",
    "Tuning",
    "extension_lrs",
    "pick_lr",
    "shared_lr_verdicts",
    "tuning",
    "tuning_table",
]


EDGE_FLAG = "best lr at the edge of the searched range"
"""The flag of an arm whose final pick is the smallest or largest lr it tried."""


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
    extended: tuple[float, ...] = ()
    """The lrs tried beyond the protocol's grid (its extensions), ascending."""

    @property
    def key(self) -> str:
        return arm_key(self.arm)

    @property
    def at_edge(self) -> bool:
        """A pick at the smallest or largest lr tried (reached median or not): the arm's
        best lr may lie outside its searched range, so a wider one could change it."""
        lrs = [s.lr for s in self.scores]
        return len(lrs) > 1 and self.lr in (min(lrs), max(lrs))

    @property
    def searched(self) -> str:
        """The arm's searched lr range, and how far it was extended."""
        lrs = [s.lr for s in self.scores]
        text = f"{min(lrs):g}-{max(lrs):g}" if lrs else "none"
        if self.extended:
            text += " (extended to " + ", ".join(f"{lr:g}" for lr in self.extended) + ")"
        return text

    @property
    def flag(self) -> str | None:
        """:data:`EDGE_FLAG` with the range, for a pick at an end of it; else None."""
        return f"{EDGE_FLAG} (lr {self.searched})" if self.at_edge else None


def pick_lr(
    trials: pd.DataFrame,
    arm_params: list[str],
    rule: str = "km_median",
    base: Sequence[float] | None = None,
) -> list[ArmPick]:
    """Each arm's lr by the pre-registered rule, arms in the table's sorted order.

    Args:
        trials: stage 1's ``trials`` table (columns ``lr``, ``converged_epoch``,
            ``diverged_epoch``, ``max_epochs``, ``best_val_loss`` and ``arm_params``).
        arm_params: the columns that make an arm.
        rule: the protocol's ``pick`` (only ``km_median``).
        base: the protocol's lr grid; an arm's other lrs are its extensions (None: none).
    """
    if rule != "km_median":
        raise ValueError(f"unknown pick rule {rule!r}; known: km_median")
    return [_pick(arm, rows, base) for arm, rows in _arms(trials, arm_params)]


def _pick(arm: dict[str, Any], rows: pd.DataFrame, base: Sequence[float] | None) -> ArmPick:
    scores = [_score(float(lr), group) for lr, group in rows.groupby("lr", sort=True)]
    best = min(scores, key=LrScore.rank)
    reached = any(s.median is not None for s in scores)
    grid = set(base) if base is not None else {s.lr for s in scores}
    extended = tuple(s.lr for s in scores if s.lr not in grid)
    return ArmPick(arm=arm, lr=best.lr, reached=reached, scores=scores, extended=extended)


def extension_lrs(
    trials: pd.DataFrame, arm_params: list[str], protocol: Protocol
) -> dict[str, list[float]]:
    """The lrs beyond the protocol's grid that stage 1 must train, by arm (only arms with
    any), from stage 1's trials so far.

    Per arm, starting from the grid: while the rule's pick on the lrs tried is the
    smallest (largest) of them, the ladder's next lr below (above) is tried too, at most
    ``protocol.extensions`` times. An lr with no trials yet stops the walk there (it is
    trained first, then the walk goes on), so running stage 1 until this stops growing
    extends every arm as far as its picks ask.
    """
    if protocol.pick != "km_median":
        raise ValueError(f"unknown pick rule {protocol.pick!r}; known: km_median")
    ladder, base = lr_ladder(protocol), sorted(protocol.lr or ())
    out: dict[str, list[float]] = {}
    for arm, rows in _arms(trials, arm_params):
        lrs = rows["lr"].astype(float)
        tried, extra = list(base), []
        for _ in range(protocol.extensions):
            if not set(tried) <= set(lrs):
                break  # an lr not trained yet: its trials come first
            pick = _pick(arm, rows[lrs.isin(tried)], base)
            step = _next_lr(ladder, tried, pick.lr)
            if step is None:
                break
            extra.append(step)
            tried.append(step)
        if extra:
            out[arm_key(arm)] = extra
    return out


def _next_lr(ladder: list[float], tried: list[float], chosen: float) -> float | None:
    """The ladder's next lr beyond the end of ``tried`` that ``chosen`` is at (None: an
    interior pick, or the ladder ends there)."""
    low, high = min(tried), max(tried)
    if chosen == high and high in ladder and ladder.index(high) + 1 < len(ladder):
        return ladder[ladder.index(high) + 1]
    if chosen == low and low in ladder and ladder.index(low) > 0:
        return ladder[ladder.index(low) - 1]
    return None


def tuning_table(picks: list[ArmPick]) -> pd.DataFrame:
    """The tuning curve: one row per arm, the KM median epochs per lr, and the choice."""
    rows, lrs = [], sorted({s.lr for p in picks for s in p.scores})
    for p in picks:
        row: dict[str, Any] = {k: str(v) for k, v in p.arm.items()}
        medians = {s.lr: s.median_text for s in p.scores}
        row |= {f"lr {lr:g}": medians.get(lr, "not tried") for lr in lrs}
        row |= {"chosen lr": f"{p.lr:g}", "any median": "yes" if p.reached else "no"}
        row["range searched"] = p.searched
        row[EDGE_FLAG] = "yes" if p.at_edge else "no"
        rows.append(row)
    return pd.DataFrame(rows)


def at_lr(tables: StudyTables, lr: float) -> StudyTables:
    """Stage 1's tables restricted to the trials at one lr (as if it were shared)."""
    trials = tables.trials[tables.trials["lr"].astype(float) == lr]
    keep = set(trials["trial_number"])
    epochs = tables.epochs[tables.epochs["trial_number"].isin(keep)]
    steps = tables.steps[tables.steps["trial_number"].isin(keep)]
    return replace(tables, trials=trials, epochs=epochs, steps=steps)


def shared_lr_verdicts(
    tables: StudyTables, claims: Any = None, lrs: Sequence[float] | None = None
) -> pd.DataFrame:
    """How the verdicts would read at a shared lr: stage 1's claims judged at each lr
    (one row per lr, one column per claim; ``lrs``: these only, e.g. the grid without the
    extensions, which not every arm tried). Stage 1 has few seeds, so expect inconclusive."""
    from pipeline.analysis.verdicts import judge

    rows = []
    present = set(tables.trials["lr"].astype(float))
    for lr in sorted(present if lrs is None else present & set(lrs)):
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


def tuning(
    tables: StudyTables,
    arm_params: list[str],
    rule: str = "km_median",
    base: Sequence[float] | None = None,
) -> Tuning:
    """The report's tuned-protocol section, from stage 1's tables (``base``: the protocol's
    lr grid, to tell the extensions apart)."""
    picks = pick_lr(tables.trials, arm_params, rule, base)
    seeds = int(tables.trials["seed"].nunique()) if len(tables.trials) else 0
    shared = shared_lr_verdicts(tables, tables.claims, base)
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
