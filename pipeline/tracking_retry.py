"""How :mod:`pipeline.tracking` talks to MLflow: the client, the experiment look-up, and the
retry policy of one call (which failures come from MLflow, and which a retry may cure).

Split out of pipeline/tracking.py (same rules: only the driver process calls it; mlflow,
requests and SQLAlchemy are imported lazily).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import tenacity

from pipeline import retry
from pipeline.urls import sqlite_file, use_wal

if TYPE_CHECKING:
    from mlflow.entities import Experiment
    from mlflow.tracking import MlflowClient

NOISE = r"The ``noload`` loader strategy is deprecated"
"""SQLAlchemy 2.1 warns about MLflow's own ORM models when its SQL store is first imported."""


def new_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient on ``tracking_uri`` (a SQLite database in WAL mode first)."""
    db = sqlite_file(tracking_uri)
    if db is not None:
        use_wal(db)  # before MLflow creates its tables; see pipeline.urls
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=NOISE, category=DeprecationWarning)
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=tracking_uri)


def get_experiment(client: MlflowClient, name: str) -> Experiment | None:
    return client.get_experiment_by_name(name)


def create_experiment(
    client: MlflowClient, name: str, artifact_location: str | None, tags: dict[str, str]
) -> str:
    """Create the experiment; a retried create whose first attempt landed returns its id."""
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(name, artifact_location=artifact_location, tags=tags)
    except MlflowException as exc:
        found = client.get_experiment_by_name(name)
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
            raise
        return str(found.experiment_id)


def retrying(delays: Sequence[float]) -> tenacity.Retrying:
    """The retry policy of one MLflow call: a try, then a retry after each of ``delays``
    seconds while the failure is transient; the last failure is raised as it is."""
    wait = tenacity.wait_chain(*map(tenacity.wait_fixed, delays)) if delays else None
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(len(delays) + 1),
        wait=wait or tenacity.wait_none(),
        retry=tenacity.retry_if_exception(is_retryable),
        reraise=True,
    )


def is_retryable(exc: BaseException) -> bool:
    return is_tracking_failure(exc) and is_transient(exc)


def is_tracking_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from talking to MLflow (as opposed to a bug in the caller)."""
    import requests
    from mlflow.exceptions import MlflowException

    failures = (MlflowException, requests.RequestException, OSError, *_database_errors())
    return isinstance(exc, failures)


def is_transient(exc: BaseException) -> bool:
    """Whether a retry may help: connection errors, timeouts, server-side (5xx/429) errors,
    and an MLflow SQL store's database that :func:`pipeline.retry.is_transient` finds
    unreachable (the rule for every database initstudy uses)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        if exc.get_http_status_code() < 500 and exc.get_http_status_code() != 429:
            return False
        cause = exc.__cause__
        return cause is None or is_transient(cause)
    if isinstance(exc, requests.ConnectionError | requests.Timeout):
        return True
    if isinstance(exc, requests.RequestException):
        return False
    if isinstance(exc, _database_errors()):
        return retry.is_transient(exc)
    return isinstance(exc, OSError)


def _database_errors() -> tuple[type[BaseException], ...]:
    """SQLAlchemy's errors; none with mlflow-skinny against a server (no SQLAlchemy)."""
    try:
        import sqlalchemy.exc
    except ImportError:
        return ()
    return (sqlalchemy.exc.SQLAlchemyError,)
