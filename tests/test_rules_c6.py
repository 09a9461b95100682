"""C6 (b) "He suits ReLU" and (c) "Xavier is the safe default for tanh" as paired
comparisons within each cell (issue 24), on synthetic studies: who converges first (exact
sign test) decides, with the speedup and its interval beside it; no difference found never
supports "suits better", and a significant difference the other way refutes that part."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pytest
from factories import OPTS, T, chi_norms, result, study

from models.spec import TrialResult
from pipeline.analysis import verdicts as vd
from pipeline.analysis.rules_training import BETTER, NO_DIFFERENCE, WORSE, paired_cells
from pipeline.analysis.verdicts import (
    INCONCLUSIVE,
    NOT_MEASURED,
    PARTLY,
    REFUTED,
    SUPPORTED,
    Verdict,
)

TEN = 10


def runs(init: str, epochs: Sequence[int | None], cell: str, **kw: Any) -> list[TrialResult]:
    """One trial per seed 0, 1, ...: converged at the given epoch, or censored (None)."""
    return [
        result(init, cell=cell, seed=s, **({"converged": e} if e is not None else {}), **kw)
        for s, e in enumerate(epochs)
    ]


def relu(
    he: Sequence[int | None], rival: Sequence[int | None], *, rival_init: str = "xavier", **kw: Any
) -> list[TrialResult]:
    return runs("he_normal", he, "rnn_relu", **kw) + runs(rival_init, rival, "rnn_relu", **kw)


def c6(results: list[TrialResult]) -> Verdict:
    return vd.judge_c6(study(results), OPTS)


def states(v: Verdict) -> dict[str, str]:
    return {c["check"][:3]: c["state"] for c in v.numbers["checks"]}


# --------------------------------------------------------------------------- (b)


def test_both_arms_converging_with_p_1_never_supports_he_suits_relu() -> None:
    # He 10/10 vs Xavier 10/10 at the same epochs: every pair tied, sign test p = 1
    v = c6(relu([5] * TEN, [5] * TEN))
    (comparison,) = v.numbers["comparisons"]
    assert comparison["sign_p"] == 1.0 and comparison["ties"] == TEN
    assert comparison["state"] == NO_DIFFERENCE
    assert states(v) == {"(b)": "inconclusive"}
    assert v.verdict == INCONCLUSIVE  # never supported, not even partly
    assert "no difference found" in v.evidence


def test_a_split_with_p_1_is_no_difference_either() -> None:
    he = [4, 4, 4, 4, 4, 6, 6, 6, 6, 6]
    xavier = [6, 6, 6, 6, 6, 4, 4, 4, 4, 4]
    v = c6(relu(he, xavier))
    assert v.numbers["comparisons"][0]["sign_p"] == 1.0
    assert states(v) == {"(b)": "inconclusive"}
    assert v.verdict not in (SUPPORTED, PARTLY)


def test_the_issues_case_xavier_first_in_8_of_10_pairs_refutes_he_suits_relu() -> None:
    # both converge 10/10 (a rate rule said "holds"); Xavier is first in 8 pairs, 2 tied
    he = [13] * 8 + [10, 10]
    xavier = [10] * 8 + [10, 10]
    v = c6(relu(he, xavier))
    (comparison,) = v.numbers["comparisons"]
    assert (comparison["first"], comparison["rival_first"], comparison["ties"]) == (0, 8, 2)
    assert comparison["sign_p"] == pytest.approx(2 / 2**8)
    assert comparison["state"] == WORSE
    assert states(v) == {"(b)": "fails"}
    assert v.verdict == REFUTED
    assert "xavier converges first significantly" in v.evidence
    assert comparison["speedup"] == pytest.approx(10 / 13)  # the speedup beside it
    assert "speedup of he_normal over xavier 0.77x [" in v.evidence


def test_he_first_significantly_holds() -> None:
    v = c6(relu([4] * 9 + [8], [8] * 9 + [4]))  # 9 of 10, p = 0.021
    assert v.numbers["comparisons"][0]["state"] == BETTER
    assert states(v) == {"(b)": "holds"}
    assert v.verdict == PARTLY  # (a) and (c) not measured


@pytest.mark.parametrize(
    ("he", "xavier", "state"),
    [
        ([4] * 8 + [8] * 2, [8] * 8 + [4] * 2, "inconclusive"),  # 8 of 10: p = 0.11
        ([4] * 9 + [8], [8] * 9 + [4], "holds"),  # 9 of 10: p = 0.021
        ([4] * 5, [8] * 5, "inconclusive"),  # 5 of 5 pairs: p = 0.0625
        ([4] * 6, [8] * 6, "holds"),  # 6 of 6 pairs: p = 0.031
    ],
)
def test_significance_is_the_sign_tests_at_alpha(
    he: list[int], xavier: list[int], state: str
) -> None:
    assert states(c6(relu(he, xavier))) == {"(b)": state}


def test_he_never_converging_against_a_converging_xavier_fails() -> None:
    v = c6(relu([None] * TEN, [5] * TEN))
    assert states(v) == {"(b)": "fails"}


def test_each_cell_is_judged_on_its_own_pairs() -> None:
    # hidden 16: He first in every pair; hidden 32: no difference -> inconclusive overall
    results = relu([4] * TEN, [8] * TEN, hidden=16) + relu([6] * TEN, [6] * TEN, hidden=32)
    v = c6(results)
    cells = {c["cell"]: c["state"] for c in v.numbers["comparisons"]}
    assert cells == {"rnn_relu, hidden 16": BETTER, "rnn_relu, hidden 32": NO_DIFFERENCE}
    assert states(v) == {"(b)": "inconclusive"}
    # and a significant reverse difference in one cell refutes the part
    results = relu([4] * TEN, [8] * TEN, hidden=16) + relu([8] * TEN, [4] * TEN, hidden=32)
    assert states(c6(results)) == {"(b)": "fails"}


def test_identity_is_the_rival_when_there_is_no_xavier() -> None:
    v = c6(relu([8] * TEN, [4] * TEN, rival_init="identity"))
    assert v.numbers["comparisons"][0]["rival"] == "identity"
    assert states(v) == {"(b)": "fails"}


def test_too_few_pairs_is_not_measured_and_says_what_is_needed() -> None:
    v = c6(relu([4] * (vd.MIN_N - 1), [8] * (vd.MIN_N - 1)))
    assert v.verdict == NOT_MEASURED
    assert f">= {vd.MIN_N} trials of he_normal and xavier" in v.evidence


def test_paired_cells_pairs_by_seed() -> None:
    # the same epochs, shuffled across seeds: He first in some pairs, Xavier in others
    tables = study(relu([4, 5, 6, 7, 8, 9], [9, 8, 7, 6, 5, 4]))
    cells, why = paired_cells(tables.trials, "he_normal", "xavier", OPTS)
    assert why is None
    assert (cells[0]["first"], cells[0]["rival_first"]) == (3, 3)


# --------------------------------------------------------------------------- (c)


def tanh(xavier: Sequence[int | None], **others: Sequence[int | None]) -> list[TrialResult]:
    out = runs("xavier", xavier, "rnn_tanh")
    for scheme, epochs in others.items():
        out += runs(scheme, epochs, "rnn_tanh")
    return out


def test_xavier_first_against_every_other_scheme_holds() -> None:
    v = c6(tanh([4] * TEN, he_normal=[8] * TEN, glorot_uniform=[None] * TEN))
    assert {c["rival"]: c["state"] for c in v.numbers["comparisons"]} == {
        "glorot_uniform": BETTER,
        "he_normal": BETTER,
    }
    assert states(v) == {"(c)": "holds"}


def test_no_difference_against_one_scheme_does_not_support_the_default() -> None:
    v = c6(tanh([4] * TEN, he_normal=[4] * TEN, glorot_uniform=[8] * TEN))
    assert states(v) == {"(c)": "inconclusive"}
    assert v.verdict == INCONCLUSIVE


def test_another_scheme_first_significantly_refutes_the_default() -> None:
    v = c6(tanh([8] * TEN, he_normal=[4] * TEN, glorot_uniform=[None] * TEN))
    assert states(v) == {"(c)": "fails"}
    assert "he_normal converges first significantly" in v.evidence


def test_xavier_diverging_even_once_is_not_safe() -> None:
    results = tanh([4] * TEN, he_normal=[8] * TEN)
    results[0] = result("xavier", cell="rnn_tanh", seed=0, converged=4, diverged=9)
    v = c6(results)
    assert v.numbers["comparisons"][0]["state"] == BETTER
    assert states(v) == {"(c)": "fails"}
    assert "Xavier diverged in 10% of its 10 trials" in v.evidence


# --------------------------------------------------------------------------- combined


def orthogonal(carried: float = 1.0) -> list[TrialResult]:
    per_step = carried ** (2 / (T - 1))
    return [
        result("orthogonal", cell="gru", seed=s, grad_norm=chi_norms(per_step))
        for s in range(vd.MIN_N)
    ]


def test_all_three_holding_is_supported_and_a_p_1_part_is_not() -> None:
    he_first = relu([4] * TEN, [8] * TEN)
    xavier_first = tanh([4] * TEN, orthogonal=[8] * TEN)
    v = c6(orthogonal() + he_first + xavier_first)
    assert states(v) == {"(a)": "holds", "(b)": "holds", "(c)": "holds"}
    assert v.verdict == SUPPORTED
    tied = relu([5] * TEN, [5] * TEN)
    v = c6(orthogonal() + tied + xavier_first)
    assert states(v) == {"(a)": "holds", "(b)": "inconclusive", "(c)": "holds"}
    assert v.verdict == PARTLY


def test_the_rule_says_no_difference_never_supports() -> None:
    rule = vd.CLAIMS["C6"].rule
    assert "no difference found never supports 'suits better'" in rule
    assert f"alpha {vd.ALPHA:g}" in rule
    assert f">= {vd.MIN_N} pairs" in rule
    assert not math.isnan(vd.ALPHA)
