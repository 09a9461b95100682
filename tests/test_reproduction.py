"""The reproduction rule (published orderings) and its ``claims:`` entry, on synthetic
studies whose outcomes are known."""

from __future__ import annotations

from typing import Any

import pytest
from factories import BASELINE, result, study

from models.spec import TrialResult
from pipeline.analysis.judging import MIN_N, NOT_REPRODUCED, R_STAY_FRACTION, REPRODUCED
from pipeline.analysis.verdicts import INCONCLUSIVE, judge
from pipeline.claimspec import ClaimError, Reproduction, parse_claims

IRNN = {"cell": "rnn_relu", "init": "identity"}
TANH = {"cell": "rnn_tanh", "init": "xavier"}


def trials(arm: dict[str, Any], n: int, seq_len: int = 10, **ending: Any) -> list[TrialResult]:
    return [
        result(arm["init"], cell=arm["cell"], seq_len=seq_len, seed=s, **ending) for s in range(n)
    ]


def at_baseline(arm: dict[str, Any], n: int, seq_len: int = 10) -> list[TrialResult]:
    """Trials whose loss never leaves the baseline (none converges)."""
    return trials(arm, n, seq_len, stalled=True)


def learning(arm: dict[str, Any], n: int, seq_len: int = 10) -> list[TrialResult]:
    return trials(arm, n, seq_len, converged=3)


def claim(**kwargs: Any) -> Reproduction:
    entry = {"id": "le2015", "source": "Le 2015", "learn": [IRNN], "stay": [TANH], **kwargs}
    (parsed,) = parse_claims([entry])
    assert isinstance(parsed, Reproduction)
    return parsed


def verdict(results: list[TrialResult], **kwargs: Any) -> Any:
    (v,) = judge(study(results), [claim(**kwargs)])
    return v


def test_the_ordering_holding_in_every_cell_is_reproduced() -> None:
    v = verdict(learning(IRNN, 5) + at_baseline(TANH, 5))
    assert v.verdict == REPRODUCED
    arms = {a["arm"]: a for a in v.numbers["arms"]}
    assert arms["rnn_relu/identity"]["state"] == "learns"
    assert arms["rnn_tanh/xavier"]["state"] == "stays at the baseline"
    assert arms["rnn_tanh/xavier"]["loss_over_baseline"] >= R_STAY_FRACTION
    assert "rnn_relu/identity converged 5/5" in v.evidence


def test_a_stay_arm_that_learns_is_not_reproduced() -> None:
    v = verdict(learning(IRNN, 5) + learning(TANH, 5))
    assert v.verdict == NOT_REPRODUCED


def test_a_learn_arm_that_only_leaves_the_baseline_is_between_and_not_reproduced() -> None:
    # censored: the loss falls to 0.1 (0.6x the baseline), flat, never reaching the target;
    # the LSTM learns, so the protocol can teach something (a positive control)
    lstm = {"cell": "lstm", "init": "xavier"}
    v = verdict(trials(IRNN, 5) + at_baseline(TANH, 5) + learning(lstm, 5), learn=[IRNN, lstm])
    assert v.verdict == NOT_REPRODUCED
    learn = {a["arm"]: a["state"] for a in v.numbers["arms"] if a["expected"] == "learn"}
    assert learn == {"rnn_relu/identity": "between", "lstm/xavier": "learns"}


def test_too_few_trials_in_an_arm_is_inconclusive_and_says_what_would_decide() -> None:
    v = verdict(learning(IRNN, MIN_N - 1) + at_baseline(TANH, 5))
    assert v.verdict == INCONCLUSIVE
    assert f">= {MIN_N} trials" in v.evidence


def test_where_keeps_only_the_named_cells() -> None:
    # at length 10 the tanh RNN learns (the ordering fails), at length 50 it stays
    results = (
        learning(IRNN, 5, 10)
        + learning(TANH, 5, 10)
        + learning(IRNN, 5, 50)
        + at_baseline(TANH, 5, 50)
    )
    assert verdict(results).verdict == NOT_REPRODUCED  # every cell: fails at 10
    kept = verdict(results, where={"seq_len": 50})
    assert kept.verdict == REPRODUCED
    assert kept.evidence.startswith("seq_len 50: ")  # the cell is named by its where
    cells = verdict(results).numbers["cells"]
    assert [c["state"] for c in cells] == ["fails", "holds"]


def test_a_stay_only_claim_needs_no_learn_arm_but_a_positive_control() -> None:
    lstm = {"cell": "lstm", "init": "xavier"}
    v = verdict(at_baseline(TANH, 5) + learning(lstm, 5), learn=[], control=[lstm])
    assert v.verdict == REPRODUCED
    assert "stays at the baseline" in v.claim
    # without a control nothing shows the protocol can teach anything: never reproduced
    assert verdict(at_baseline(TANH, 5), learn=[]).verdict == INCONCLUSIVE


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"learn": [], "stay": []}, "at least one arm"),
        ({"learn": [{"cell": "lstm", "colour": 1}]}, "unknown column"),
        ({"learn": [{"init": "nope"}]}, "must be an init scheme name"),
        ({"learn": [IRNN], "stay": [IRNN]}, "listed twice"),
        ({"learn": "lstm"}, "must be a list of arms"),
        ({"learn": [IRNN], "source": ""}, "non-empty text"),
        ({"learn": [IRNN], "paper": "x"}, "unknown key"),
    ],
)
def test_bad_reproduction_entries_name_what_is_wrong(entry: dict[str, Any], words: str) -> None:
    with pytest.raises(ClaimError, match=words):
        parse_claims([entry], ("identity", "xavier"))


def test_the_baseline_used_is_the_tasks_memoryless_loss() -> None:
    v = verdict(learning(IRNN, 5) + at_baseline(TANH, 5))
    stay = next(a for a in v.numbers["arms"] if a["expected"] == "stay")
    assert stay["loss_over_baseline"] == pytest.approx(1.0)  # stalled at BASELINE exactly
    assert BASELINE > 0
