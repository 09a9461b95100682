"""The reproduction rule: does a published ordering hold in a study?

A paper's result is often an ordering of arms, not a speedup: "an IRNN and an LSTM learn
the adding problem while a tanh RNN stays at the baseline" (Le, Jaitly & Hinton 2015),
"a tanh RNN and an LSTM sit at the memoryless baseline of the copy task" (Arjovsky,
Shah & Bengio 2016). A spec states one as a :class:`pipeline.claimspec.Reproduction`
(arms that must learn, arms that must stay at the baseline, the cells it must hold in,
optionally positive controls and the paper's protocol), and :func:`judge_reproduction`
gives "reproduced", "not reproduced" or "inconclusive" with the numbers of every arm.

Two things a study's settings could decide are kept out of the verdict. A study shorter
than the paper cannot show that an arm fails to learn unless that arm's learning has
flattened (:data:`~pipeline.analysis.judging.R_FLAT_TOLERANCE`): otherwise the cell is
"inconclusive at this budget", with the budget that would decide it. And an ordering in
which nothing learns (no arm that should learn does, positive controls included) says
nothing about the paper: "inconclusive: nothing learns under this protocol", never
"reproduced". Like the other rules it reads tables only.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.analysis.judging import (
    INCONCLUSIVE,
    MIN_N,
    NOT_REPRODUCED,
    R_FLAT_TOLERANCE,
    R_LEARN_RATE,
    R_STAY_FRACTION,
    REPRODUCED,
    Verdict,
    _label,
    _varying,
    fmt,
    select_rows,
)
from pipeline.claimspec import ARM_KEYS, PublishedProtocol, Reproduction, arm_label, where_text

if TYPE_CHECKING:
    from pipeline.analysis.judging import Options
    from pipeline.analysis.tables import StudyTables

__all__ = [
    "AT_THIS_BUDGET",
    "NOTHING_LEARNS",
    "REPRODUCTION_RULE",
    "judge_reproduction",
    "still_improving",
]

LEARNS = "learns"
STAYS = "stays at the baseline"
BETWEEN = "between"
TOO_FEW = "too few trials"

HOLDS = "holds"
FAILS = "fails"
AT_THIS_BUDGET = "inconclusive at this budget"
NOTHING_LEARNS = "inconclusive: nothing learns under this protocol"
UNDECIDED = "undecided (too few trials)"

REPRODUCTION_RULE = (
    "Per cell (the study's varying columns other than the arms' own, the seed and the lr, "
    "which a tuned protocol picks per arm), each arm is the trials matching all its column "
    f"values. An arm learns if at least {R_LEARN_RATE:g} of its trials converged (reached "
    "the task's target loss); it stays at the baseline if none converged and its median "
    f"best validation loss is at least {R_STAY_FRACTION:g}x the task's memoryless baseline "
    f"(the loss of a predictor that ignores the input history); otherwise it is between. "
    f"Each arm needs >= {MIN_N} trials. Positive control: a cell where no arm that should "
    "learn learns (the 'learn' arms, and the 'control' arms, looked up in the whole study at "
    "the cell's other values) is 'inconclusive: nothing learns under this protocol', never "
    "reproduced. Budget: a 'learn' arm that fails to learn fails the ordering only if its "
    "failure is settled: the study's budget (max_epochs x batches_per_epoch steps) is at "
    "least the paper's ('published: steps', or 'epochs' against max_epochs), or its "
    "learning has flattened, i.e. even if every trial that could still learn converged, "
    f"fewer than {R_LEARN_RATE:g} of its trials would have. A trial could still learn "
    "unless it converged, is frozen or diverged, or its best validation loss fell by less "
    f"than {R_FLAT_TOLERANCE:g} of its value over the last half of its epochs; a trial "
    f"still at the baseline (best loss >= {R_STAY_FRACTION:g}x) has not started to learn, "
    "and its flat curve is the plateau that precedes learning on these tasks, so it could "
    "still learn. An unsettled failure is 'inconclusive at this budget', with the budget "
    "that would decide it. A 'stay' arm that learns or leaves the baseline fails the "
    "ordering at any budget (a longer one can only let it learn more). The ordering holds in "
    "a cell if every 'learn' arm learns, every 'stay' arm stays and a positive control "
    "learns. Reproduced if it holds in every cell the claim's 'where' keeps; not reproduced "
    "if it fails in any of them; inconclusive otherwise (too few trials, at this budget, or "
    "nothing learns), with what would decide it. The paper's protocol ('published') is "
    "printed beside the study's."
)

_CELL_DIMS = (
    "task",
    "cell",
    "init",
    "init_recurrent",
    "hidden",
    "seq_len",
    "scale",
    "recurrent_scale",
    "optimizer",
    "clip",
    "batch_size",
    "max_epochs",
    "device_type",
)


def still_improving(val_losses: np.ndarray) -> bool:
    """Whether a validation-loss history has not flattened: its best loss over the whole
    run is more than :data:`R_FLAT_TOLERANCE` below its best over the first half (epochs
    ``1 .. ceil(E/2)``). Non-finite losses count as no loss; a history of fewer than two
    epochs cannot show flattening (True); one with no finite loss has nothing to improve
    (False)."""
    values = np.asarray(val_losses, dtype=float)
    if values.size < 2:
        return True
    finite = np.where(np.isfinite(values), values, np.inf)
    best = float(finite.min())
    if not math.isfinite(best):
        return False
    first = float(finite[: (values.size + 1) // 2].min())
    return not math.isfinite(first) or best < (1 - R_FLAT_TOLERANCE) * first


def _histories(epochs: pd.DataFrame) -> dict[int, np.ndarray]:
    if epochs.empty:
        return {}
    ordered = epochs.sort_values(["trial_number", "epoch"])
    return {
        int(n): g["val_loss"].to_numpy(dtype=float) for n, g in ordered.groupby("trial_number")
    }


def _could_still_learn(row: Any, history: np.ndarray) -> bool:
    """Whether a trial that did not converge might with a longer budget (see the rule)."""
    if row.outcome in ("converged", "frozen", "diverged"):
        return False
    best, baseline = float(row.best_val_loss), float(row.baseline_loss)
    if not math.isfinite(best) or not baseline > 0 or best / baseline >= R_STAY_FRACTION:
        return True  # on the baseline plateau: it has not started to learn
    return still_improving(history)


def _steps(rows: pd.DataFrame) -> int:
    """The budget in parameter updates: the largest max_epochs x batches_per_epoch."""
    if rows.empty:
        return 0
    return int((rows["max_epochs"].astype(int) * rows["batches_per_epoch"].astype(int)).max())


def _arm_state(rows: pd.DataFrame, histories: dict[int, np.ndarray]) -> dict[str, Any]:
    n = len(rows)
    converged = int((rows["outcome"] == "converged").sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = rows["best_val_loss"].astype(float) / rows["baseline_loss"].astype(float)
    ratio = ratio[np.isfinite(ratio)]
    median = float(ratio.median()) if len(ratio) else float("nan")
    if n < MIN_N:
        state = TOO_FEW
    elif converged / n >= R_LEARN_RATE:
        state = LEARNS
    elif converged == 0 and (not len(ratio) or median >= R_STAY_FRACTION):
        state = STAYS  # (no finite loss at all: it never left the start)
    else:
        state = BETWEEN
    improving = sum(
        _could_still_learn(row, histories.get(int(row.trial_number), np.array([])))
        for row in rows.itertuples()
    )
    lrs = sorted({float(v) for v in rows["lr"].dropna()}) if n else []
    return {
        "n": n,
        "converged": converged,
        "loss_over_baseline": median,
        "state": state,
        "lr": lrs[0] if len(lrs) == 1 else (lrs or None),
        "could_still_learn": int(improving),
        "flattened": bool(n and converged + improving < R_LEARN_RATE * n),
        "steps": _steps(rows),
        "epochs": int(rows["max_epochs"].max()) if n else 0,
        "batches_per_epoch": int(rows["batches_per_epoch"].max()) if n else 0,
    }


def _budget_reached(state: dict[str, Any], paper: PublishedProtocol | None) -> bool:
    """Whether the arm's budget is at least the paper's (False when the paper's is unknown)."""
    if paper is None:
        return False
    if paper.steps is not None:
        return bool(state["steps"] >= paper.steps)
    return paper.epochs is not None and state["epochs"] >= paper.epochs


def _controls(
    trials: pd.DataFrame, claim: Reproduction, first: Any, dims: list[str]
) -> list[pd.DataFrame]:
    """Each control arm's trials in the whole study, at the cell's values of the cell
    dimensions the control does not name itself."""
    out = []
    for arm in claim.control:
        at = {d: first[d] for d in dims if d not in arm and not pd.isna(first[d])}
        out.append(select_rows(select_rows(trials, arm), at))
    return out


def _cell_state(sides: list[tuple[str, dict[str, Any]]], paper: PublishedProtocol | None) -> str:
    """One cell's state from its arms' (side, state) pairs (see the rule)."""
    if any(side == "stay" and s["state"] in (LEARNS, BETWEEN) for side, s in sides):
        return FAILS
    should = [s for side, s in sides if side in ("learn", "control")]
    failing = [s for side, s in sides if side == "learn" and s["state"] in (STAYS, BETWEEN)]
    positive = any(s["state"] == LEARNS for s in should)
    if positive and any(s["flattened"] or _budget_reached(s, paper) for s in failing):
        return FAILS
    if any(s["state"] == TOO_FEW for _, s in sides):
        return UNDECIDED
    if not positive:
        return NOTHING_LEARNS
    return AT_THIS_BUDGET if failing else HOLDS


def _study_protocol(trials: pd.DataFrame) -> dict[str, Any]:
    def values(col: str) -> list[Any]:
        if col not in trials or trials.empty:
            return []
        out = sorted({v for v in trials[col].dropna().tolist()})
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in out]

    return {
        "optimizer": values("optimizer"),
        "clip": values("clip"),
        "hidden": values("hidden"),
        "seq_len": values("seq_len"),
        "steps": _steps(trials),
        "max_epochs": values("max_epochs"),
        "batches_per_epoch": values("batches_per_epoch"),
        "batch_size": values("batch_size"),
    }


def _protocol_text(study: dict[str, Any]) -> str:
    def join(vals: list[Any]) -> str:
        return "/".join(str(v) for v in vals) or "n/a"

    clip = f", clip {join(study['clip'])}" if study["clip"] else ", no clipping"
    return (
        f"{join(study['optimizer'])}{clip}, hidden {join(study['hidden'])}, T "
        f"{join(study['seq_len'])}, {study['steps']:,} steps ({join(study['max_epochs'])} "
        f"epochs x {join(study['batches_per_epoch'])} batches of {join(study['batch_size'])})"
    )


def _would_decide(
    reasons: set[str], budget_arms: list[dict[str, Any]], paper: PublishedProtocol | None
) -> str:
    hints = []
    if AT_THIS_BUDGET in reasons:
        steps = max((a["steps"] for a in budget_arms), default=0)
        per_epoch = max((a["batches_per_epoch"] for a in budget_arms), default=1) or 1
        if paper is not None and paper.steps is not None:
            epochs = math.ceil(paper.steps / per_epoch)
            hints.append(
                f"run {paper.steps:,} steps ({epochs} epochs of {per_epoch} batches), the "
                "paper's budget, or until the failing arms learn or flatten"
            )
        elif paper is not None and paper.epochs is not None:
            hints.append(f"run {paper.epochs} epochs, the paper's budget, or until they flatten")
        else:
            hints.append(
                f"a longer budget than {steps:,} steps (e.g. {2 * steps:,}) until the failing "
                "arms learn or flatten, or the paper's budget ('published: steps')"
            )
    if NOTHING_LEARNS in reasons:
        hints.append(
            "a protocol under which a positive control learns (a 'control' arm or a 'learn' "
            "arm: e.g. the paper's optimizer, a shorter length or a longer budget)"
        )
    if UNDECIDED in reasons:
        hints.append(f">= {MIN_N} trials in every arm of every cell")
    return " Would decide: " + "; ".join(hints) + "." if hints else ""


def judge_reproduction(tables: StudyTables, claim: Reproduction, options: Options) -> Verdict:
    """A published ordering, by :data:`REPRODUCTION_RULE`."""
    del options  # no statistics with knobs here
    trials = select_rows(tables.trials, claim.where)
    histories = _histories(tables.epochs)
    arm_cols = {k for arm in (*claim.learn, *claim.stay) for k in arm}
    dims = _varying(trials, [d for d in _CELL_DIMS if d not in arm_cols])
    rows: list[dict[str, Any]] = []
    cells: list[tuple[str, str]] = []
    if dims:
        groups = [g for _, g in trials.groupby(dims, dropna=False, sort=True)]
    else:
        groups = [trials] if len(trials) else []
    for group in groups:
        label = _label(group.iloc[0], dims) if dims else where_text(claim.where) or "all trials"
        sides: list[tuple[str, dict[str, Any]]] = []
        arms = [("learn", a, select_rows(group, a)) for a in claim.learn]
        arms += [("stay", a, select_rows(group, a)) for a in claim.stay]
        controls = _controls(tables.trials, claim, group.iloc[0], dims)
        arms += [("control", a, c) for a, c in zip(claim.control, controls, strict=True)]
        for side, arm, arm_rows in arms:
            state = _arm_state(arm_rows, histories)
            rows.append({"cell": label, "arm": arm_label(arm), "expected": side, **state})
            sides.append((side, state))
        cells.append((label, _cell_state(sides, claim.published)))
    details = pd.DataFrame(
        rows,
        columns=[
            "cell",
            "arm",
            "expected",
            "n",
            "converged",
            "loss_over_baseline",
            "state",
            "lr",
            "could_still_learn",
            "flattened",
            "steps",
            "epochs",
            "batches_per_epoch",
        ],
    )
    states = {state for _, state in cells}
    if not cells:
        verdict = INCONCLUSIVE
    elif FAILS in states:
        verdict = NOT_REPRODUCED
    elif states == {HOLDS}:
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    parts = []
    for label, cell_state in cells:
        texts = [
            f"{r['arm']}{' (control)' if r['expected'] == 'control' else ''} converged "
            f"{r['converged']}/{r['n']}, best loss {fmt(r['loss_over_baseline'])}x baseline: "
            f"{r['state']}"
            + (
                f" ({'flattened' if r['flattened'] else 'could still learn'}: "
                f"{r['could_still_learn']} of {r['n']} trials not settled at "
                f"{r['steps']:,} steps)"
                if r["expected"] == "learn" and r["state"] in (STAYS, BETWEEN)
                else ""
            )
            for r in rows
            if r["cell"] == label
        ]
        parts.append(f"{label}: " + "; ".join(texts) + f" -> {cell_state}")
    evidence = (". ".join(parts) if parts else "no trials in the cells the claim names") + "."
    study = _study_protocol(trials)
    paper = claim.published
    evidence += (
        f" Protocol: the paper's {paper.text if paper else 'not stated'}; this study's "
        f"{_protocol_text(study)}."
    )
    reason = None
    if verdict == INCONCLUSIVE and cells:
        reasons = states - {HOLDS}
        budget_arms = [
            r
            for r in rows
            if r["expected"] == "learn" and r["state"] in (STAYS, BETWEEN) and not r["flattened"]
        ]
        reason = next(s for s in (NOTHING_LEARNS, AT_THIS_BUDGET, UNDECIDED) if s in reasons)
        evidence = f"{reason[0].upper()}{reason[1:]}: {evidence}"
        evidence += _would_decide(reasons, budget_arms, paper)
    numbers = {
        "cells": [{"cell": label, "state": state} for label, state in cells],
        "arms": rows,
        "arm_columns": sorted(arm_cols & set(ARM_KEYS)),
        "inconclusive": reason,
        "protocol": {
            "paper": None
            if paper is None
            else {
                "optimizer": paper.optimizer,
                "hidden": list(paper.hidden),
                "seq_len": list(paper.seq_len),
                "steps": paper.steps,
                "epochs": paper.epochs,
                "batch_size": paper.batch_size,
                "note": paper.note,
            },
            "study": study,
        },
    }
    return Verdict(claim.id, claim.text, verdict, REPRODUCTION_RULE, evidence, details, numbers)
