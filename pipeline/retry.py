"""Which failures of a store a retry may cure, and the retry policy (tenacity).

The driver's Optuna storage calls and the MLflow tracker's calls both retry a failed call
while its store is unreachable and give up at once on anything else (a full disk, a
refused request, a bug). What counts as "unreachable" for a database is decided here once,
for the Optuna storage and for an MLflow store on SQLite or PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tenacity


def database_error(exc: BaseException) -> BaseException | None:
    """The database driver's error behind a failed storage call (SQLAlchemy's
    OperationalError, InterfaceError or a dropped connection), else None (a bug, bad data).
    Optuna wraps SQLAlchemy's errors in StorageInternalError; the causes are looked at."""
    import sqlalchemy.exc

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return seen
        if isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated:
            return seen
        seen = seen.__cause__
    return None


_TRANSIENT_SQLSTATES = ("08", "57P", "53300", "40001", "40P01")
"""PostgreSQL error classes worth a retry: connection lost or refused, server shutting
down or starting, too many connections, serialization failure, deadlock."""


def is_transient(exc: BaseException) -> bool:
    """Whether a storage call failed in a way a retry may cure: the database could not be
    reached or dropped the connection (a server restart, a network blip), or a SQLite file
    was locked. A full disk, a read-only file or bad SQL is not transient."""
    import sqlalchemy.exc

    found = database_error(exc)
    if found is None:
        return False
    if isinstance(found, sqlalchemy.exc.DBAPIError) and found.connection_invalidated:
        return True
    orig = getattr(found, "orig", None)
    if type(orig).__module__.startswith("sqlite3"):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    sqlstate = getattr(orig, "sqlstate", None)
    return sqlstate is None or str(sqlstate).startswith(_TRANSIENT_SQLSTATES)


def retrying(
    seconds: float,
    delays: Sequence[float],
    on_retry: Callable[[BaseException], None],
    transient: Callable[[BaseException], bool] = is_transient,
) -> tenacity.Retrying:
    """A retry policy: a call that fails in a way ``transient`` accepts is tried again,
    ``delays`` seconds apart (the last delay repeats), until ``seconds`` have passed since
    the first try; ``on_retry(error)`` runs before each wait. Anything else, and the last
    failure once time is up, is raised as it was (not wrapped in tenacity's RetryError).

    A fresh policy per call: each keeps its own clock.
    """
    return tenacity.Retrying(
        stop=tenacity.stop_after_delay(seconds),
        wait=tenacity.wait_chain(*(tenacity.wait_fixed(d) for d in delays)),
        retry=tenacity.retry_if_exception(transient),
        before_sleep=lambda state: on_retry(_failure(state)),
        reraise=True,
    )


def _failure(state: tenacity.RetryCallState) -> BaseException:
    """The error of the try that just failed."""
    assert state.outcome is not None
    error = state.outcome.exception()
    assert error is not None
    return error
