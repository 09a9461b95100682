"""The trial outcome (``TrialResult.outcome``: converged > diverged > frozen > stalled >
censored) and the ``outcome`` and ``frozen_at_init`` columns of the study tables, on
hand-built results (tests/factories.py) at the rule's boundaries.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest
from factories import (
    BASELINE,
    down,
    ending,
    result,
    study,
)

from models.spec import OUTCOMES, STALL_FRACTION, TrialResult

# --------------------------------------------------------------------------- outcomes


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"converged": 5}, "converged"),
        ({"converged": 5, "diverged": 8}, "converged"),  # converged, then diverged
        ({"converged": 5, "diverged": 5}, "converged"),  # the same epoch: before any
        ({"converged": 6, "diverged": 5}, "diverged"),  # converged after diverging
        ({"diverged": 3}, "diverged"),
        ({"frozen": True, "diverged": 3}, "diverged"),  # an explosion is never hidden
        ({"frozen": True, "diverged": 1, "val_losses": [5.0]}, "diverged"),  # rose from 0.2
        # diverged by "stuck above the baseline" at a loss below the one at init (0.2): no
        # explosion, so the frozen diagnosis is the outcome, as before
        ({"frozen": True, "diverged": 1, "val_losses": [0.19]}, "frozen"),
        ({"diverged": 1, "val_losses": [0.19]}, "diverged"),  # not frozen: diverged as ever
        ({"frozen": True, "converged": 4}, "converged"),  # converging beats frozen
        ({"frozen": True}, "frozen"),
        ({"stalled": True}, "stalled"),
        ({}, "censored"),
        ({"val_losses": [math.nan, math.inf]}, "stalled"),  # no finite loss at all
    ],
)
def test_trial_outcome_precedence(kwargs: dict[str, Any], expected: str) -> None:
    r = result("xavier", **kwargs)
    assert r.outcome == expected
    assert r.converged == (expected == "converged")
    assert study([r]).trials["outcome"].tolist() == [expected]


def test_an_exploding_frozen_trial_is_diverged_with_its_diagnosis_kept() -> None:
    exploding = result("uniform01", frozen=True, diverged=1)
    assert exploding.outcome == "diverged" and exploding.frozen_at_init
    assert exploding.to_dict()["frozen_at_init"] is True
    back = TrialResult.from_json(exploding.to_json())
    assert back.outcome == "diverged" and back.frozen_at_init
    still = result("uniform01", frozen=True, seed=1)  # frozen, and the loss did not explode
    assert still.outcome == "frozen" and still.frozen_at_init
    trials = study([exploding, still]).trials
    assert trials["outcome"].tolist() == ["diverged", "frozen"]
    assert trials["frozen_at_init"].tolist() == [True, True]
    assert trials["diverged_epoch"].tolist() == [1, pd.NA]


def test_stalled_means_best_loss_at_or_above_the_stall_fraction_of_the_baseline() -> None:
    edge = STALL_FRACTION * BASELINE
    assert result(val_losses=[0.3, edge, 0.3]).outcome == "stalled"
    assert result(val_losses=[0.3, down(edge), 0.3]).outcome == "censored"


@pytest.mark.parametrize(
    ("input_grad", "recurrent_grad", "frozen"),
    [
        (0.0, 0.0, True),
        (0.0, 1e-30, False),  # a tiny gradient still reaches Whh: it can train
        (1e-30, 0.0, False),
        (math.nan, math.nan, False),  # not measured (a result from before it was)
    ],
)
def test_frozen_needs_exactly_zero_gradient_into_both_matrices(
    input_grad: float, recurrent_grad: float, frozen: bool
) -> None:
    r = result()
    r.diagnostics.input_grad_norm = input_grad
    r.diagnostics.recurrent_grad_norm = recurrent_grad
    assert r.diagnostics.frozen is frozen
    assert r.outcome == ("frozen" if frozen else "censored")
    assert study([r]).trials["frozen_at_init"].tolist() == [frozen]


def test_outcome_column_equals_trial_outcome_for_every_outcome() -> None:
    results = [ending(o, seed=i) for i, o in enumerate(OUTCOMES)]
    results += [result(converged=4, diverged=6, seed=9), result(frozen=True, diverged=2, seed=10)]
    trials = study(results).trials
    assert trials["outcome"].tolist() == [r.outcome for r in results]
    assert set(trials["outcome"]) == set(OUTCOMES)
    assert (trials["converged"] == (trials["outcome"] == "converged")).all()
    assert (trials["censored"] == ~trials["converged"]).all()
    assert trials["frozen_at_init"].tolist() == [r.diagnostics.frozen for r in results]
