"""Named failpoints: a test hook that kills this process at an exact point of its work.

The reliability tests (``tests/reliability/``) use it to prove that a driver killed anywhere
resumes with nothing lost and nothing done twice. :func:`failpoint` does nothing unless
the environment variable ``INITSTUDY_FAILPOINT`` names it:

- ``INITSTUDY_FAILPOINT=driver.before_tell`` sends this process SIGKILL (as the OOM killer
  or a power cut would: no cleanup, no ``finally``) the first time that point is reached;
- ``INITSTUDY_FAILPOINT=driver.before_tell:3`` does so the third time.

The points (``FAILPOINTS``), in the order a trial passes them:

- ``driver.before_tell``: the trial's result is stored on it, the trial is not yet told;
- ``driver.after_tell``: the trial is told (COMPLETE), its MLflow run is not yet created;
- ``tracking.before_finish``: the trial's MLflow run is created and filled, not yet FINISHED.

This module imports nothing of initstudy's outside systems; it is safe to call anywhere.
"""

from __future__ import annotations

import os
import signal
import sys

ENV = "INITSTUDY_FAILPOINT"
"""Environment variable naming the failpoint to fire: ``NAME`` or ``NAME:N``."""
FAILPOINTS = ("driver.before_tell", "driver.after_tell", "tracking.before_finish")
"""Every failpoint in the code."""

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``INITSTUDY_FAILPOINT`` names this point (a test hook).

    Raises:
        ValueError: the variable names an unknown point or a count that is not >= 1.
    """
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    target, _, nth = wanted.partition(":")
    if target not in FAILPOINTS or not (nth or "1").isdigit() or int(nth or "1") < 1:
        raise ValueError(
            f"{ENV}={wanted!r}: expected NAME or NAME:N (N >= 1) with NAME one of "
            f"{', '.join(FAILPOINTS)}"
        )
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] == int(nth or "1"):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
