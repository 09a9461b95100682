"""Claims C5 and C6 (a), the claims about training (``pipeline.analysis.rules_training``),
on synthetic studies whose answer is known, built from real TrialResults
(tests/factories.py). C6 (b) and (c), the paired comparisons: tests/test_rules_c6.py.

Every rule is tested at its thresholds: a value exactly on a boundary and the nearest one
on the other side, so that moving a threshold or changing a comparison makes a test fail.
"""

from __future__ import annotations

import pytest
from factories import (
    FIVE,
    OK,
    OPTS,
    T,
    c5_runs,
    ortho_runs,
    result,
    study,
)

from models.spec import TrialResult
from pipeline.analysis import verdicts as vd
from pipeline.analysis.verdicts import (
    NOT_MEASURED,
    PARTLY,
    REFUTED,
    SUPPORTED,
    Verdict,
)

# --------------------------------------------------------------------------- C5


def c5(cells: dict[tuple[int, int], tuple[list[str], list[str]]]) -> Verdict:
    return vd.judge_c5(study(c5_runs(cells)), OPTS)


TINY, LARGE = vd.C5_TINY_HIDDEN, vd.C5_LARGE_HIDDEN


def test_c5_supported_when_tiny_works_and_large_diverges() -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (["diverged"] * FIVE, OK)})
    assert v.verdict == SUPPORTED, v.evidence
    assert "works tiny and fails at scale, by exploding" in v.evidence
    cells = {c["hidden"]: c for c in v.numbers["cells"]}
    assert cells[128]["uniform_diverged"] == 1.0 and cells[128]["failing_diverged"] == 1.0
    assert cells[TINY]["uniform_converged"] == 1.0


def test_c5_frozen_trials_whose_loss_exploded_count_as_exploding() -> None:
    # uniform01 frozen at init at hidden 128 whose loss explodes (no clipping): diverged.
    runs = c5_runs({(TINY, 5): (OK, OK), (128, 30): ([], OK)})
    runs += [
        result("uniform01", hidden=128, seq_len=30, seed=s, frozen=True, diverged=1)
        for s in range(FIVE)
    ]
    v = vd.judge_c5(study(runs), OPTS)
    assert v.verdict == SUPPORTED, v.evidence
    cells = {c["hidden"]: c for c in v.numbers["cells"]}
    assert cells[128]["uniform_diverged"] == 1.0 and cells[128]["uniform_frozen"] == 0.0


@pytest.mark.parametrize("failing", ["frozen", "stalled", "censored"])
def test_c5_partly_when_large_fails_without_exploding(failing: str) -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): ([failing] * FIVE, OK)})
    assert v.verdict == PARTLY, v.evidence  # the outcome holds, the mechanism does not
    assert "by not learning" in v.evidence


def test_c5_refuted_when_it_fails_even_tiny() -> None:
    v = c5({(TINY, 5): (["diverged"] * FIVE, OK), (128, 30): (["diverged"] * FIVE, OK)})
    assert v.verdict == REFUTED, v.evidence
    assert "does not work even tiny" in v.evidence


@pytest.mark.parametrize("failing", ["frozen", "stalled"])
def test_c5_stalled_and_frozen_tiny_trials_do_not_work(failing: str) -> None:
    v = c5({(TINY, 5): ([failing] * FIVE, OK), (128, 30): (["diverged"] * FIVE, OK)})
    assert v.verdict == REFUTED, v.evidence


def test_c5_refuted_when_xavier_also_fails_at_the_large_cell() -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (["diverged"] * FIVE, ["censored"] * FIVE)})
    assert v.verdict == REFUTED, v.evidence  # the cell is hard, not the init
    assert "does not fail at scale" in v.evidence


def test_c5_refuted_when_uniform01_works_at_the_large_cell() -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (OK, OK)})
    assert v.verdict == REFUTED, v.evidence


HALF = ["converged"] * 3 + ["diverged"] * 3  # exactly C5_WORKS_RATE of 6
BELOW_HALF = ["converged"] * 2 + ["diverged"] * 3  # 40% of 5


@pytest.mark.parametrize(
    ("tiny", "large_uniform", "large_xavier", "expected"),
    [
        (HALF, ["diverged"] * FIVE, OK, SUPPORTED),  # half converged tiny: works
        (BELOW_HALF, ["diverged"] * FIVE, OK, REFUTED),
        (OK, HALF, OK, REFUTED),  # half converged at scale: does not fail
        (OK, BELOW_HALF, OK, SUPPORTED),
        (OK, ["diverged"] * FIVE, HALF, SUPPORTED),  # Xavier at the threshold: fine
        (OK, ["diverged"] * FIVE, BELOW_HALF, REFUTED),
    ],
)
def test_c5_works_rate_threshold(
    tiny: list[str], large_uniform: list[str], large_xavier: list[str], expected: str
) -> None:
    v = c5({(TINY, 5): (tiny, OK), (128, 30): (large_uniform, large_xavier)})
    assert v.verdict == expected, v.evidence


@pytest.mark.parametrize(
    ("failing", "expected"),
    [
        (["diverged"] * 3 + ["frozen"] * 3, PARTLY),  # exactly half diverged: not most
        (["diverged"] * 4 + ["frozen"] * 2, SUPPORTED),
        (["diverged"] * 2 + ["frozen"] * 4, PARTLY),
    ],
)
def test_c5_mechanism_needs_most_failing_trials_diverged(
    failing: list[str], expected: str
) -> None:
    v = c5({(TINY, 5): (OK, OK), (128, 30): (failing, OK)})
    assert v.verdict == expected, v.evidence


def test_c5_known_size_limits_8_and_32() -> None:
    diverging = ["diverged"] * FIVE
    assert c5({(8, 5): (OK, OK), (32, 5): (diverging, OK)}).verdict == SUPPORTED
    assert c5({(9, 5): (OK, OK), (32, 5): (diverging, OK)}).verdict == NOT_MEASURED
    assert c5({(8, 5): (OK, OK), (31, 5): (diverging, OK)}).verdict == NOT_MEASURED


@pytest.mark.parametrize(
    ("tiny", "large", "measured"),
    [
        (TINY, LARGE, True),
        (TINY + 1, LARGE, False),
        (TINY, LARGE - 1, False),
    ],
)
def test_c5_tiny_and_large_size_limits(tiny: int, large: int, measured: bool) -> None:
    v = c5({(tiny, 5): (OK, OK), (large, 5): (["diverged"] * FIVE, OK)})
    assert (v.verdict != NOT_MEASURED) == measured, v.evidence
    if measured:
        assert v.verdict == SUPPORTED
    else:
        assert f"<= {vd.C5_TINY_HIDDEN}" in v.evidence


@pytest.mark.parametrize(
    ("tiny", "large_xavier", "measured"),
    [
        (["converged"] * (FIVE - 1), OK, False),
        (OK, ["converged"] * (FIVE - 1), False),
        (OK, OK, True),
    ],
)
def test_c5_needs_min_n_trials_per_scheme_in_each_cell(
    tiny: list[str], large_xavier: list[str], measured: bool
) -> None:
    v = c5({(TINY, 5): (tiny, OK), (128, 30): (["diverged"] * FIVE, large_xavier)})
    assert (v.verdict != NOT_MEASURED) == measured, v.evidence


def test_c5_picks_the_smallest_tiny_and_the_largest_large_cell() -> None:
    v = c5(
        {
            (4, 5): (OK, OK),  # the tiny cell: works
            (TINY, 30): (["diverged"] * FIVE, OK),
            (LARGE, 5): (OK, OK),
            (128, 30): (["diverged"] * FIVE, OK),  # the large cell: fails
        }
    )
    assert v.verdict == SUPPORTED, v.evidence
    assert "tiny cell hidden 4, seq_len 5" in v.evidence
    assert "large cell hidden 128, seq_len 30" in v.evidence


def test_c5_not_measured_with_one_cell() -> None:
    v = c5({(TINY, 5): (OK, OK)})
    assert v.verdict == NOT_MEASURED
    assert "needs uniform01 and Xavier" in v.evidence


# --------------------------------------------------------------------------- C6


def c6(runs: list[TrialResult]) -> Verdict:
    return vd.judge_c6(study(runs), OPTS)


def states(v: Verdict) -> dict[str, str]:
    return {c["check"][:3]: c["state"] for c in v.numbers["checks"]}


TOL6 = vd.C6_NORM_TOLERANCE


@pytest.mark.parametrize(
    ("carried", "state"),
    [
        (1.0, "holds"),
        (1 + TOL6 - 0.001, "holds"),
        (1 - TOL6 + 0.001, "holds"),
        (1 + TOL6 + 0.001, "fails"),
        (1 - TOL6 - 0.001, "fails"),
        (0.5, "fails"),
        (2.0, "fails"),
    ],
)
def test_c6a_gradient_norm_carried_over_the_sequence_within_tolerance(
    carried: float, state: str
) -> None:
    v = c6(ortho_runs([carried] * FIVE))
    assert states(v) == {"(a)": state}
    assert v.numbers["checks"][0]["value"] == pytest.approx(carried)
    per_step = carried ** (1 / (T - 1))
    assert f"{per_step:.3g} per step" in v.evidence  # the per-step factor beside it
    # only (a) measured: holding is partly supported, failing refutes
    assert v.verdict == (PARTLY if state == "holds" else REFUTED), v.evidence


def test_c6a_judges_the_whole_sequence_not_the_per_step_factor() -> None:
    # 1.5x over 9 steps is only 1.046x per step: a per-step reading would let it pass
    carried = 1.5
    assert abs(carried ** (1 / (T - 1)) - 1) < TOL6 < abs(carried - 1)
    assert states(c6(ortho_runs([carried] * FIVE))) == {"(a)": "fails"}


@pytest.mark.parametrize(("carried", "state"), [(1.095, "holds"), (1.105, "fails")])
def test_c6a_known_answers_near_the_current_tolerance(carried: float, state: str) -> None:
    assert states(c6(ortho_runs([carried] * FIVE))) == {"(a)": state}


def test_c6a_takes_the_median_over_trials() -> None:
    v = c6(ortho_runs([1.0, 1.0, 1.0, 3.0, 3.0]))  # mean 1.8
    assert states(v) == {"(a)": "holds"}
    assert v.numbers["checks"][0]["value"] == pytest.approx(1.0)


def test_c6a_ignores_trials_whose_last_gradient_is_zero() -> None:
    runs = ortho_runs([1.0] * FIVE)
    runs.append(result("orthogonal", cell="gru", seed=99, grad_norm=[1.0] * (T - 1) + [0.0]))
    v = c6(runs)
    assert states(v) == {"(a)": "holds"}
    assert f"n={FIVE})" in v.evidence


def test_c6a_needs_min_n_plain_orthogonal_trials() -> None:
    assert c6(ortho_runs([1.0] * (FIVE - 1))).verdict == NOT_MEASURED
    assert c6(ortho_runs([1.0] * FIVE, init_recurrent="xavier")).verdict == NOT_MEASURED
    assert c6(ortho_runs([1.0] * FIVE, recurrent_scale=1.1)).verdict == NOT_MEASURED
    assert c6(ortho_runs([1.0] * FIVE)).verdict != NOT_MEASURED


# C6 (b) and (c), paired comparisons within each cell: tests/test_rules_c6.py


def test_c6_not_measured_without_any_sub_check() -> None:
    v = c6([result("xavier", cell="lstm", seed=s, converged=3) for s in range(FIVE)])
    assert v.verdict == NOT_MEASURED
    assert "(a)" in v.evidence and "(b)" in v.evidence and "(c)" in v.evidence
