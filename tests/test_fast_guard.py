"""The fast tier's time limit (tests/fastguard.py), run on a synthetic test file in a
pytest run of its own (``pytester``, in this process: no second interpreter)."""

from __future__ import annotations

import pytest
from fastguard import FAST_LIMIT_ENV, FAST_LIMIT_S, fast_limit

SYNTHETIC = """
import time

import pytest


@pytest.fixture
def slow_setup():
    time.sleep(0.15)  # a fixture's set-up is not the test's call


def test_quick():
    pass


def test_sleeps():
    time.sleep(0.15)


@pytest.mark.slow
def test_sleeps_but_marked_slow():
    time.sleep(0.15)


def test_quick_after_a_slow_setup(slow_setup):
    pass


def test_fails_on_its_own():
    time.sleep(0.15)
    assert 1 == 2
"""


@pytest.fixture
def synthetic(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makepyfile(test_synthetic=SYNTHETIC)
    return pytester


def test_a_fast_test_over_the_limit_fails_and_says_to_mark_it_slow(
    synthetic: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAST_LIMIT_ENV, "0.05")  # set: checked in any run, here all tests
    run = synthetic.runpytest_inprocess("-p", "fastguard")
    run.assert_outcomes(passed=3, failed=2)
    out = run.stdout.str()
    assert "FAILED test_synthetic.py::test_sleeps - " in out
    assert "test_synthetic.py::test_sleeps took 0." in out
    assert "over the fast tier's limit of 0.05 s: mark it @pytest.mark.slow" in out
    assert f"{FAST_LIMIT_ENV}=SECONDS" in out
    # marked slow: never limited; a fixture's slow set-up is not the test's call
    assert "test_sleeps_but_marked_slow took" not in out
    assert "test_quick_after_a_slow_setup took" not in out
    # a test that failed by itself keeps its own failure, not the limit's
    assert "FAILED test_synthetic.py::test_fails_on_its_own - assert 1 == 2" in out
    assert "test_fails_on_its_own took" not in out


def test_the_full_run_does_not_check_unless_asked(
    synthetic: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(FAST_LIMIT_ENV, raising=False)
    run = synthetic.runpytest_inprocess("-p", "fastguard")
    run.assert_outcomes(passed=4, failed=1)  # only the test that fails by itself
    assert "took" not in run.stdout.str()


def test_the_limit_follows_the_run_and_the_variable() -> None:
    assert fast_limit("not slow", None) == FAST_LIMIT_S == 2.0
    assert fast_limit("  not   slow ", None) == FAST_LIMIT_S
    assert fast_limit("", None) is None  # make test: every test, no limit
    assert fast_limit("slow", None) is None
    assert fast_limit("", "6") == 6.0  # set: a limit in any run
    assert fast_limit("not slow", "6") == 6.0
    assert fast_limit("not slow", "0") is None
    assert fast_limit("not slow", "") == FAST_LIMIT_S  # empty: as unset


@pytest.mark.parametrize("bad", ["fast", "-1", "nan", "inf"])
def test_a_bad_limit_is_refused_with_what_is_allowed(bad: str) -> None:
    with pytest.raises(pytest.UsageError, match=f"{FAST_LIMIT_ENV}=.* non-negative number"):
        fast_limit("not slow", bad)
