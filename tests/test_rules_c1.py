"""C1 judged per cell (issue 24): each hidden size and sequence length against its own
mean-field prediction (models.theory), never pooled against one fixed point."""

from __future__ import annotations

from typing import Any

import pytest
from factories import OPTS, result, study

from models.spec import TrialResult
from models.theory import predict
from pipeline.analysis import verdicts as vd
from pipeline.analysis.verdicts import PARTLY, REFUTED, SUPPORTED, Verdict


def cell(
    level: float | list[float], *, hidden: int = 16, seq_len: int = 10, n: int = 3, **kw: Any
) -> list[TrialResult]:
    """``n`` Xavier trials of one cell whose per-step variance is ``level`` (a constant or
    a series of ``seq_len`` values)."""
    series = level if isinstance(level, list) else [level] * seq_len
    return [
        result("xavier", hidden=hidden, seq_len=seq_len, seed=s, hidden_var=series, **kw)
        for s in range(n)
    ]


def c1(results: list[TrialResult]) -> Verdict:
    return vd.judge_c1(study(results), OPTS)


def by_cell(v: Verdict) -> dict[tuple[int, int], dict[str, Any]]:
    return {(c["hidden"], c["seq_len"]): c for c in v.numbers["cells"]}


def last(hidden: int, seq_len: int) -> float:
    return predict("adding", "rnn_tanh", hidden, seq_len, "xavier").hidden_var[-1]


def test_each_length_is_judged_against_its_own_predicted_fixed_point() -> None:
    short, long = last(16, 5), last(16, 20)
    assert short != pytest.approx(long)  # the adding task's drive depends on its length
    v = c1(cell(short, seq_len=5) + cell(long, seq_len=20))
    cells = by_cell(v)
    assert set(cells) == {(16, 5), (16, 20)}
    for (hidden, seq_len), c in cells.items():
        expected = predict("adding", "rnn_tanh", hidden, seq_len, "xavier")
        assert c["predicted_variance"] == pytest.approx(expected.hidden_var[-1])
        assert c["q_star"] == pytest.approx(expected.q_star)
        assert c["at_fixed_point"] is True
        assert c["verdict"] == PARTLY  # constant at q* < 1, not at 1
    assert "hidden 16, seq_len 5 (n=3)" in v.evidence
    assert "hidden 16, seq_len 20 (n=3)" in v.evidence
    assert v.verdict == PARTLY


def test_each_hidden_size_is_a_cell_of_its_own() -> None:
    # hidden 2 sits well above the mean field's level (a finite-size effect); hidden 64 at it
    fixed = last(64, 10)
    v = c1(cell(2 * fixed, hidden=2) + cell(fixed, hidden=64))
    cells = by_cell(v)
    assert cells[(2, 10)]["at_fixed_point"] is False
    assert cells[(64, 10)]["at_fixed_point"] is True
    assert "away from its predicted fixed point" in v.evidence
    assert "at its predicted fixed point" in v.evidence


def test_a_failing_cell_is_not_hidden_by_pooling() -> None:
    # pooled, the median trial of 3 + 3 + 3 constant-at-1 trials would say "supported";
    # the growing cell fails (a) on its own
    growing = [0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 0.9]
    v = c1(cell(1.0, hidden=16) + cell(1.0, hidden=32) + cell(growing, hidden=64))
    verdicts = {k: c["verdict"] for k, c in by_cell(v).items()}
    assert verdicts == {(16, 10): SUPPORTED, (32, 10): SUPPORTED, (64, 10): REFUTED}
    assert v.verdict == PARTLY
    assert v.numbers["constant"] is False  # not every cell is constant


def test_every_cell_agreeing_gives_that_verdict() -> None:
    assert c1(cell(1.0, hidden=8) + cell(1.0, hidden=128)).verdict == SUPPORTED
    assert c1(cell(5e-5, hidden=8) + cell(5e-5, hidden=128)).verdict == REFUTED


@pytest.mark.parametrize(
    ("factor", "at"),
    [(1 + vd.C1_THEORY_TOLERANCE - 1e-9, True), (1 + vd.C1_THEORY_TOLERANCE + 1e-6, False)],
)
def test_at_the_fixed_point_means_within_the_tolerance(factor: float, at: bool) -> None:
    v = c1(cell(factor * last(16, 10)))
    assert by_cell(v)[(16, 10)]["at_fixed_point"] is at


def test_one_cell_keeps_the_top_level_numbers() -> None:
    v = c1(cell(0.27))
    (only,) = v.numbers["cells"]
    for key in ("measured_variance", "predicted_variance", "q_star", "ratio", "saturation"):
        assert v.numbers[key] == pytest.approx(only[key])
    assert v.numbers["n"] == 3


def test_the_rule_says_per_cell() -> None:
    rule = vd.CLAIMS["C1"].rule
    assert "never pooled across sizes or lengths" in rule
    assert f"within {vd.C1_THEORY_TOLERANCE:g} (relative)" in rule
