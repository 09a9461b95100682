"""The reproduction rule's budget and positive-control parts (issue 24), on synthetic studies:
a failing arm short of the paper's budget is "inconclusive at this budget" unless its
learning has flattened, and a cell where nothing that should learn learns is never
"reproduced"."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from factories import BASELINE, TARGET, result, study

from models.spec import TrialResult
from pipeline.analysis.judging import (
    INCONCLUSIVE,
    NOT_REPRODUCED,
    R_FLAT_TOLERANCE,
    R_STAY_FRACTION,
    REPRODUCED,
)
from pipeline.analysis.reproduction_rule import (
    AT_THIS_BUDGET,
    NOTHING_LEARNS,
    REPRODUCTION_RULE,
    still_improving,
)
from pipeline.analysis.verdicts import judge
from pipeline.claimspec import ClaimError, PublishedProtocol, Reproduction, parse_claims

ROOT = Path(__file__).resolve().parents[1]
IRNN = {"cell": "rnn_relu", "init": "identity"}
LSTM = {"cell": "lstm", "init": "xavier"}
TANH = {"cell": "rnn_tanh", "init": "xavier"}
EPOCHS = 40  # the builder's max_epochs; 50 batches per epoch: 2,000 steps
STEPS = EPOCHS * 50


def arm(spec: dict[str, Any], n: int = 5, seq_len: int = 10, **kw: Any) -> list[TrialResult]:
    return [
        result(spec["init"], cell=spec["cell"], seq_len=seq_len, seed=s, **kw) for s in range(n)
    ]


def plateau(spec: dict[str, Any], **kw: Any) -> list[TrialResult]:
    """On the baseline for the whole budget: flat, but it has not started to learn."""
    return arm(spec, stalled=True, **kw)


def flat_between(spec: dict[str, Any], **kw: Any) -> list[TrialResult]:
    """Left the baseline, then flat at 0.6x it for the whole budget."""
    return arm(spec, val_losses=[0.1] * EPOCHS, **kw)


def improving(spec: dict[str, Any], **kw: Any) -> list[TrialResult]:
    """Left the baseline and still falling at the end (0.15 -> 0.06, never the target)."""
    return arm(spec, val_losses=list(np.linspace(0.15, 0.06, EPOCHS)), **kw)


def learns(spec: dict[str, Any], **kw: Any) -> list[TrialResult]:
    return arm(spec, converged=3, **kw)


def claim(**kw: Any) -> Reproduction:
    entry = {"id": "le2015", "source": "Le 2015", "learn": [IRNN, LSTM], "stay": [TANH], **kw}
    (parsed,) = parse_claims([entry])
    assert isinstance(parsed, Reproduction)
    return parsed


def verdict(results: list[TrialResult], **kw: Any) -> Any:
    (v,) = judge(study(results), [claim(**kw)])
    return v


PAPER = {"optimizer": "sgd", "hidden": 100, "seq_len": [150, 400], "steps": 100_000}


# --------------------------------------------------------------------------- budget


def test_a_budget_limited_failing_arm_is_inconclusive_at_this_budget() -> None:
    # the IRNN sits on the baseline at 2,000 steps; the paper trained 100,000
    v = verdict(plateau(IRNN) + learns(LSTM) + plateau(TANH), published=PAPER)
    assert v.verdict == INCONCLUSIVE
    assert v.numbers["inconclusive"] == AT_THIS_BUDGET
    assert v.evidence.startswith("Inconclusive at this budget: ")
    assert "run 100,000 steps (2000 epochs of 50 batches), the paper's budget" in v.evidence
    irnn = next(a for a in v.numbers["arms"] if a["arm"] == "rnn_relu/identity")
    assert irnn["flattened"] is False and irnn["could_still_learn"] == 5
    assert irnn["steps"] == STEPS


def test_an_arm_still_improving_is_inconclusive_at_this_budget() -> None:
    v = verdict(improving(IRNN) + learns(LSTM) + plateau(TANH))
    assert v.verdict == INCONCLUSIVE
    assert v.numbers["cells"][0]["state"] == AT_THIS_BUDGET
    # the paper's budget not stated: a longer one is what would decide
    assert f"a longer budget than {STEPS:,} steps (e.g. {2 * STEPS:,})" in v.evidence


def test_a_flattened_failing_arm_at_a_short_budget_is_not_reproduced() -> None:
    v = verdict(flat_between(IRNN) + learns(LSTM) + plateau(TANH), published=PAPER)
    assert v.verdict == NOT_REPRODUCED
    irnn = next(a for a in v.numbers["arms"] if a["arm"] == "rnn_relu/identity")
    assert irnn["state"] == "between" and irnn["flattened"] is True
    assert irnn["steps"] < PAPER["steps"]
    assert "flattened: 0 of 5 trials not settled at 2,000 steps" in v.evidence


@pytest.mark.parametrize(
    ("paper_steps", "expected"), [(STEPS, NOT_REPRODUCED), (STEPS + 1, INCONCLUSIVE)]
)
def test_a_budget_at_least_the_papers_settles_a_failure(paper_steps: int, expected: str) -> None:
    v = verdict(plateau(IRNN) + learns(LSTM) + plateau(TANH), published={"steps": paper_steps})
    assert v.verdict == expected, v.evidence


@pytest.mark.parametrize(
    ("epochs", "expected"), [(EPOCHS, NOT_REPRODUCED), (EPOCHS + 1, INCONCLUSIVE)]
)
def test_the_papers_epochs_are_compared_with_max_epochs(epochs: int, expected: str) -> None:
    v = verdict(plateau(IRNN) + learns(LSTM) + plateau(TANH), published={"epochs": epochs})
    assert v.verdict == expected, v.evidence


def test_flattened_means_too_few_trials_could_still_learn_to_reach_the_learn_rate() -> None:
    # 2 of 5 still improving, none converged: even if both converged, 2/5 < half: settled
    runs = improving(IRNN, n=2) + arm(IRNN, val_losses=[0.1] * EPOCHS, n=5)[2:]
    v = verdict(runs + learns(LSTM) + plateau(TANH))
    assert v.verdict == NOT_REPRODUCED, v.evidence
    # 3 of 5 still improving: they could lift it to 3/5 >= half: not settled
    runs = improving(IRNN, n=3) + arm(IRNN, val_losses=[0.1] * EPOCHS, n=5)[3:]
    assert verdict(runs + learns(LSTM) + plateau(TANH)).verdict == INCONCLUSIVE


def test_frozen_and_diverged_trials_cannot_still_learn() -> None:
    runs = arm(IRNN, frozen=True, n=3) + arm(IRNN, diverged=4, n=5)[3:]
    v = verdict(runs + learns(LSTM) + plateau(TANH))
    irnn = next(a for a in v.numbers["arms"] if a["arm"] == "rnn_relu/identity")
    assert irnn["could_still_learn"] == 0
    assert v.verdict == NOT_REPRODUCED


def test_a_stay_arm_that_learns_fails_at_any_budget() -> None:
    v = verdict(learns(IRNN) + learns(LSTM) + learns(TANH), published=PAPER)
    assert v.verdict == NOT_REPRODUCED


@pytest.mark.parametrize(
    ("losses", "expected"),
    [
        ([1.0, 1.0, 1.0, 1.0], False),  # flat
        ([1.0, 1.0, 1.0, 1 - R_FLAT_TOLERANCE], False),  # a gain of exactly the tolerance
        ([1.0, 1.0, 1.0, 0.97], True),  # more than the tolerance
        ([1.0, 0.5, 0.5, 0.5], False),  # learnt in the first half, flat since
        ([1.0, 1.0, 0.9], True),  # first half = epochs 1-2 of 3
        ([np.inf, np.nan, 1.0, 1.0], True),  # no finite loss in the first half
        ([np.nan, np.inf], False),  # no finite loss at all
        ([1.0], True),  # one epoch cannot show flattening
    ],
)
def test_still_improving_compares_the_best_loss_over_the_last_half(
    losses: list[float], expected: bool
) -> None:
    assert still_improving(np.array(losses)) is expected


# --------------------------------------------------------------------------- positive control


def test_a_cell_where_nothing_that_should_learn_learns_is_never_reproduced() -> None:
    # every arm at the baseline: the stay arm "holds", but nothing could have learnt
    v = verdict(plateau(IRNN) + plateau(LSTM) + plateau(TANH), published={"steps": STEPS})
    assert v.verdict == INCONCLUSIVE
    assert v.numbers["inconclusive"] == NOTHING_LEARNS
    assert v.evidence.startswith("Inconclusive: nothing learns under this protocol: ")
    assert "a protocol under which a positive control learns" in v.evidence


def test_flattened_learn_arms_with_nothing_learning_are_not_a_refutation() -> None:
    v = verdict(flat_between(IRNN) + flat_between(LSTM) + plateau(TANH))
    assert v.verdict == INCONCLUSIVE
    assert v.numbers["cells"][0]["state"] == NOTHING_LEARNS


def test_a_stay_only_claim_is_reproduced_only_with_a_learning_control() -> None:
    # the control (LSTM at length 10) lies outside the claim's cells (length 30)
    control = {"cell": "lstm", "seq_len": 10}
    stay = plateau(TANH, seq_len=30) + plateau(LSTM, seq_len=30)
    kw = {"learn": [], "stay": [TANH, LSTM], "where": {"seq_len": 30}}
    assert verdict(stay, **kw).verdict == INCONCLUSIVE  # no control at all
    with_control = verdict(stay + learns(LSTM, seq_len=10), control=[control], **kw)
    assert with_control.verdict == REPRODUCED, with_control.evidence
    assert "lstm/10 (control) converged 5/5" in with_control.evidence
    dead_control = verdict(stay + plateau(LSTM, seq_len=10), control=[control], **kw)
    assert dead_control.verdict == INCONCLUSIVE
    assert dead_control.numbers["inconclusive"] == NOTHING_LEARNS


def test_a_control_is_looked_up_at_each_cells_own_values() -> None:
    # cells by hidden size: the LSTM control learns at hidden 16 only
    kw = {"learn": [], "stay": [TANH], "control": [LSTM]}
    runs = plateau(TANH, hidden=16) + learns(LSTM, hidden=16)
    runs += plateau(TANH, hidden=32) + plateau(LSTM, hidden=32)
    v = verdict(runs, **kw)
    assert [c["state"] for c in v.numbers["cells"]] == ["holds", NOTHING_LEARNS]
    assert v.verdict == INCONCLUSIVE


def test_the_rule_text_names_the_budget_and_the_control() -> None:
    assert "inconclusive: nothing learns under this protocol" in REPRODUCTION_RULE
    assert "inconclusive at this budget" in REPRODUCTION_RULE
    assert f"{R_FLAT_TOLERANCE:g} of its value over the last half" in REPRODUCTION_RULE
    assert f"best loss >= {R_STAY_FRACTION:g}x" in REPRODUCTION_RULE


# --------------------------------------------------------------------------- protocol


def test_the_papers_protocol_is_printed_beside_the_studys() -> None:
    v = verdict(flat_between(IRNN) + learns(LSTM) + plateau(TANH), published=PAPER)
    assert (
        "Protocol: the paper's sgd, hidden 100, T 150/400, 100,000 steps; this study's adam, "
        "no clipping, hidden 16, T 10, 2,000 steps (40 epochs x 50 batches of 32)."
    ) in v.evidence
    protocol = v.numbers["protocol"]
    assert protocol["paper"]["steps"] == 100_000 and protocol["study"]["steps"] == STEPS
    plain = verdict(flat_between(IRNN) + learns(LSTM) + plateau(TANH))
    assert "Protocol: the paper's not stated; this study's adam" in plain.evidence


def test_published_parses_every_field() -> None:
    c = claim(
        published={
            "optimizer": "sgd",
            "hidden": [100],
            "seq_len": 150,
            "steps": 10,
            "epochs": 2,
            "batch_size": 16,
            "note": "at least",
        }
    )
    assert c.published == PublishedProtocol("sgd", (100,), (150,), 10, 2, 16, "at least")
    assert c.published.text == "sgd, hidden 100, T 150, 10 steps, 2 epochs, batch 16 (at least)"


@pytest.mark.parametrize(
    ("published", "words"),
    [
        ("sgd", "must be a mapping of the paper's protocol"),
        ({}, "must be a mapping of the paper's protocol"),
        ({"lr": 0.1}, "unknown key; allowed: optimizer, hidden"),
        ({"steps": 0}, "must be a positive integer"),
        ({"steps": 1.0e5}, "must be a positive integer"),
        ({"steps": True}, "must be a positive integer"),
        ({"hidden": [100, -1]}, "positive integer or a list"),
        ({"seq_len": []}, "positive integer or a list"),
        ({"optimizer": ""}, "non-empty text"),
        ({"note": "x" * 121}, "<= 120 characters"),
    ],
)
def test_bad_published_entries_name_what_is_wrong(published: Any, words: str) -> None:
    entry = {"learn": [IRNN], "published": published}
    with pytest.raises(ClaimError, match=words) as err:
        parse_claims([entry])
    assert err.value.path[:2] == (0, "published")


def test_a_control_listed_as_a_learn_arm_too_is_refused() -> None:
    with pytest.raises(ClaimError, match="listed twice"):
        parse_claims([{"learn": [IRNN], "control": [IRNN]}])


def test_the_suites_reproduction_claims_parse_with_their_papers_protocols() -> None:
    found = {}
    for path in sorted((ROOT / "studies" / "reproduce").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        for item in parse_claims(raw.get("claims") or ["C1"]):
            if isinstance(item, Reproduction):
                found[item.id] = item
    assert found, "no reproduction claim in studies/reproduce"
    for item in found.values():
        assert item.published is not None, f"{item.id}: the paper's protocol is not stated"
        assert item.learn or item.control, f"{item.id}: no arm that should learn"


def test_the_target_and_baseline_of_the_builders() -> None:
    # the synthetic arms above rely on these: 0.1 is between, the plateau is the baseline
    assert TARGET < 0.06 < 0.1 < R_STAY_FRACTION * BASELINE
