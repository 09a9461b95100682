"""The reproduction rule: does a published ordering hold in a study?

A paper's result is often an ordering of arms, not a speedup: "an IRNN and an LSTM learn
the adding problem while a tanh RNN stays at the baseline" (Le, Jaitly & Hinton 2015),
"a tanh RNN and an LSTM sit at the memoryless baseline of the copy task" (Arjovsky,
Shah & Bengio 2016). A spec states one as a :class:`pipeline.claimspec.Reproduction`
(arms that must learn, arms that must stay at the baseline, the cells it must hold in),
and :func:`judge_reproduction` gives "reproduced" or "not reproduced" with the numbers of
every arm. Like the other rules it reads tables only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.analysis.judging import (
    INCONCLUSIVE,
    MIN_N,
    NOT_REPRODUCED,
    R_LEARN_RATE,
    R_STAY_FRACTION,
    REPRODUCED,
    Verdict,
    _label,
    _varying,
    fmt,
    select_rows,
)
from pipeline.claimspec import ARM_KEYS, Reproduction, arm_label, where_text

if TYPE_CHECKING:
    from pipeline.analysis.judging import Options
    from pipeline.analysis.tables import StudyTables

__all__ = ["REPRODUCTION_RULE", "judge_reproduction"]

LEARNS = "learns"
STAYS = "stays at the baseline"
BETWEEN = "between"
TOO_FEW = "too few trials"

REPRODUCTION_RULE = (
    "Per cell (the study's varying columns other than the arms' own, the seed and the lr, "
    "which a tuned protocol picks per arm), each arm is the trials matching all its column "
    f"values. An arm learns if at least {R_LEARN_RATE:g} of its trials converged (reached "
    "the task's target loss); it stays at the baseline if none converged and its median "
    f"best validation loss is at least {R_STAY_FRACTION:g}x the task's memoryless baseline "
    f"(the loss of a predictor that ignores the input history); otherwise it is between. "
    f"Each arm needs >= {MIN_N} trials. The ordering holds in a cell if every 'learn' arm "
    "learns and every 'stay' arm stays. Reproduced if it holds in every cell the claim's "
    "'where' keeps; not reproduced if it fails in any of them; inconclusive if an arm is "
    "missing or has too few trials and no cell fails."
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


def _arm_state(rows: pd.DataFrame) -> dict[str, Any]:
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
    lrs = sorted({float(v) for v in rows["lr"].dropna()}) if n else []
    return {
        "n": n,
        "converged": converged,
        "loss_over_baseline": median,
        "state": state,
        "lr": lrs[0] if len(lrs) == 1 else (lrs or None),
    }


def judge_reproduction(tables: StudyTables, claim: Reproduction, options: Options) -> Verdict:
    """A published ordering, by :data:`REPRODUCTION_RULE`."""
    del options  # no statistics with knobs here
    trials = select_rows(tables.trials, claim.where)
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
        states = []
        for side, arms in (("learn", claim.learn), ("stay", claim.stay)):
            for arm in arms:
                state = _arm_state(select_rows(group, arm))
                rows.append({"cell": label, "arm": arm_label(arm), "expected": side, **state})
                states.append((side, state["state"]))
        failed = any(
            (side == "learn" and s in (STAYS, BETWEEN))
            or (side == "stay" and s in (LEARNS, BETWEEN))
            for side, s in states
        )
        decided = all(s != TOO_FEW for _, s in states)
        cells.append((label, "fails" if failed else "holds" if decided else "undecided"))
    details = pd.DataFrame(
        rows,
        columns=["cell", "arm", "expected", "n", "converged", "loss_over_baseline", "state", "lr"],
    )
    if not cells:
        verdict = INCONCLUSIVE
    elif any(state == "fails" for _, state in cells):
        verdict = NOT_REPRODUCED
    elif all(state == "holds" for _, state in cells):
        verdict = REPRODUCED
    else:
        verdict = INCONCLUSIVE
    parts = []
    for label, cell_state in cells:
        texts = [
            f"{r['arm']} converged {r['converged']}/{r['n']}, best loss "
            f"{fmt(r['loss_over_baseline'])}x baseline: {r['state']}"
            for r in rows
            if r["cell"] == label
        ]
        parts.append(f"{label}: " + "; ".join(texts) + f" -> {cell_state}")
    evidence = (". ".join(parts) if parts else "no trials in the cells the claim names") + "."
    if verdict == INCONCLUSIVE and cells:
        evidence += f" Would decide: >= {MIN_N} trials in every arm of every cell."
    numbers = {
        "cells": [{"cell": label, "state": state} for label, state in cells],
        "arms": rows,
        "arm_columns": sorted(arm_cols & set(ARM_KEYS)),
    }
    return Verdict(claim.id, claim.text, verdict, REPRODUCTION_RULE, evidence, details, numbers)
