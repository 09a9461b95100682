"""The fast tier's time limit: a test not marked ``slow`` whose call takes too long fails.

``make test-fast`` runs ``pytest -m "not slow"``; a test in that tier must not start a
study, a Ray runtime, a server or a browser, and must finish its call phase (the test body,
not its fixtures' set-up) within :data:`FAST_LIMIT_S` seconds. One that takes longer
fails with a message saying to mark it ``@pytest.mark.slow`` or make it faster.

When the check is on:

- in a run that deselects the slow tests (``-m "not slow"``, what ``make test-fast``
  runs), at :data:`FAST_LIMIT_S` seconds;
- whenever :data:`FAST_LIMIT_ENV` is set: its value is the limit in seconds (e.g. ``6``
  on a machine loaded by other work, which makes every test slower), and ``0`` turns the
  check off.

The full run (``make test``, no ``-m``) does not check unless the variable is set: there
the fast tests share the machine's time with studies and servers, and a slow machine must
not fail a test that is fast elsewhere.

tests/conftest.py registers these hooks (they are plain pytest hooks, so a test can load
them into another run with ``-p fastguard``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Generator
from typing import Any

import pytest

FAST_LIMIT_S = 2.0
"""Seconds a fast test's call phase may take in ``make test-fast``."""
FAST_LIMIT_ENV = "INITSTUDY_FAST_LIMIT"
"""Environment variable: the limit in seconds (``0``: no limit), in any run."""
_LIMIT = pytest.StashKey[float | None]()


def fast_limit(markexpr: str, env: str | None) -> float | None:
    """The limit in seconds for a run selected by ``markexpr``, or None for no check.

    ``env`` is the value of :data:`FAST_LIMIT_ENV` (None when unset)."""
    if env is not None and env.strip():
        try:
            value = float(env)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise pytest.UsageError(
                f"{FAST_LIMIT_ENV}={env!r} is not a number of seconds: set it to a"
                " non-negative number (e.g. 6 on a loaded machine), or 0 for no limit"
            )
        return value or None
    deselects_slow = " ".join(markexpr.split()) == "not slow"
    return FAST_LIMIT_S if deselects_slow else None


def pytest_configure(config: pytest.Config) -> None:
    markexpr = config.getoption("markexpr", default="") or ""
    config.stash[_LIMIT] = fast_limit(str(markexpr), os.environ.get(FAST_LIMIT_ENV))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, None]:
    outcome = yield
    limit = item.config.stash.get(_LIMIT, None)
    if limit is None or call.when != "call" or item.get_closest_marker("slow"):
        return
    report = outcome.get_result()
    if report.passed and call.duration > limit:
        report.outcome = "failed"
        report.longrepr = (
            f"{item.nodeid} took {call.duration:.2f} s, over the fast tier's limit of"
            f" {limit:g} s: mark it @pytest.mark.slow (a test that starts a study, Ray, a"
            " server or a browser is slow) or make it faster. On a loaded machine raise the"
            f" limit with {FAST_LIMIT_ENV}=SECONDS ({FAST_LIMIT_ENV}=0: no limit)."
        )
