"""What a finished (or stopped) study's results say about how it was run, as one-line
warnings for ``initstudy run`` and ``validate`` to print.

:func:`study_advice` reads the study's tables only (``pipeline.analysis.tables``: the
``trials`` table and the spec text stored with it) and says when the results leave a
question to chance:

- a choice listed in ``space:`` (e.g. init scheme ``he_normal``) that got no complete
  trial: nothing is measured for it, whatever a report says of the others;
- every complete trial ended without converging and the objective is flat (every trial
  scores the same): the sampler had nothing to learn from and no claim can be judged;
  the warning says what to change (the epoch budget, the learning rate, the target).

Like the rest of ``pipeline.analysis`` it knows nothing of Optuna, Ray or MLflow.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from pipeline.analysis.tables import StudyTables

__all__ = ["flat_objective", "study_advice", "unmeasured_choices"]


def study_advice(tables: StudyTables) -> list[str]:
    """Every warning about the study's results, one line each (empty: none)."""
    return unmeasured_choices(tables) + flat_objective(tables)


def unmeasured_choices(tables: StudyTables) -> list[str]:
    """One line per searched parameter with listed choices that got no complete trial."""
    doc = tables.spec_mapping
    space = doc.get("space")
    trials = tables.trials
    if not isinstance(space, dict) or trials.empty:
        return []
    grid = doc.get("sampler", "grid") == "grid"
    fix = (
        "rerun `initstudy run` to finish the grid (or see why its trials failed)"
        if grid
        else "raise n_trials, or use the grid sampler to run every choice"
    )
    out = []
    for name, choices in space.items():
        if not isinstance(choices, list) or name not in trials.columns:
            continue
        column = trials[name]
        missing = [c for c in choices if not _measured(column, c)]
        if missing:
            words = ", ".join(_show(c) for c in missing)
            some = "choice" if len(missing) == 1 else "choices"
            out.append(
                f"space.{name}: {some} {words} got no complete trial (of {len(trials)});"
                f" nothing is measured for {'it' if len(missing) == 1 else 'them'}: {fix}"
            )
    return out


def flat_objective(tables: StudyTables) -> list[str]:
    """One line when the objective is epochs to converge and no complete trial converged.

    Then every trial scores ``max_epochs + 1``: the objective is flat, a sampler cannot
    tell one trial from another and no claim about convergence can be judged. What to
    change depends on how the trials ended: too short or too slow (censored, stalled,
    frozen) or blown up (diverged).
    """
    trials = tables.trials
    objective = tables.spec_mapping.get("objective")
    metric = objective.get("metric") if isinstance(objective, dict) else None
    if metric not in (None, "epochs_to_converge") or trials.empty:
        return []
    if bool(trials["converged"].any()) or trials["value"].nunique() > 1:
        return []
    counts = trials["outcome"].astype("object").value_counts()
    how = ", ".join(f"{int(n)} {outcome}" for outcome, n in sorted(counts.items()))
    budget = int(trials["max_epochs"].max())
    lr = "space.lr" if "lr" in tables.searched else "trial.lr"
    if set(counts.index) == {"diverged"}:
        change = f"lower {lr} or the init scale, or set trial.clip"
    else:
        change = (
            f"raise trial.max_epochs (now {budget}), raise {lr},"
            " or loosen the target (trial.target_loss)"
        )
    value = float(trials["value"].iloc[0])
    return [
        f"no trial converged ({how} of {len(trials)}): the objective is flat"
        f" (every trial scores {_number(value)}), so the sampler learned nothing and no"
        f" claim can be judged; {change}"
    ]


def _measured(column: pd.Series, choice: Any) -> bool:
    """Whether a column holds the choice (None = a missing value; numbers by value)."""
    if choice is None:
        return bool(column.isna().any())
    values = column.dropna()
    if isinstance(choice, bool) or not isinstance(choice, int | float):
        return bool((values.astype("object") == choice).any())
    return any(math.isclose(float(v), float(choice), rel_tol=1e-9) for v in values)


def _show(value: Any) -> str:
    return "null" if value is None else str(value)


def _number(x: float) -> str:
    return str(int(x)) if x.is_integer() else f"{x:.4g}"
