"""How :mod:`pipeline.tracking` talks to MLflow: the client, the experiment look-up, the
retry policy of one call (which failures come from MLflow, and which a retry may cure), and
the writer threads that make a tracking server's calls in the background (:class:`Writers`).

Split out of pipeline/tracking.py (same rules: only the driver process calls it; mlflow,
requests and SQLAlchemy are imported lazily).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tenacity

from pipeline import retry
from pipeline.urls import canonical_url, folder_lock, sqlite_file, use_wal

if TYPE_CHECKING:
    from mlflow.entities import Experiment
    from mlflow.tracking import MlflowClient

NOISE = r"The ``noload`` loader strategy is deprecated"
"""SQLAlchemy 2.1 warns about MLflow's own ORM models when its SQL store is first imported."""


def new_client(tracking_uri: str) -> MlflowClient:
    """An MlflowClient on ``tracking_uri`` (a SQLite database in WAL mode first).

    MLflow creates a SQLite store's tables and runs its migrations here; two processes
    doing so at once on a new file collide (``table _alembic_tmp_experiments already
    exists``), so it is done holding the folder's creation lock (:func:`creating`)."""
    db = sqlite_file(tracking_uri)
    with creating(db):
        if db is not None:
            use_wal(db)  # before MLflow creates its tables; see pipeline.urls
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=NOISE, category=DeprecationWarning)
            from mlflow.tracking import MlflowClient

            return MlflowClient(tracking_uri=canonical_url(tracking_uri))


@contextlib.contextmanager
def creating(db: Path | None) -> Iterator[None]:
    """Hold the creation lock of a SQLite store's folder: an exclusive ``flock`` on the
    folder itself (no file is added), the lock :func:`pipeline.storage.creating` takes
    for the Optuna store beside it. ``None`` (a server): no lock."""
    if db is None:
        yield
        return
    with folder_lock(db):
        yield


def writes_in_background(tracking_uri: str) -> bool:
    """Whether a Tracker on this URI writes on :class:`Writers` threads: a tracking server
    (every call a request, waiting on the network). A local store (SQLite, files) is
    written on the caller's thread: its calls wait on the CPU, which threads do not add."""
    return tracking_uri.lower().startswith(("http://", "https://"))


class Skipped(Exception):
    """A background write not made: an earlier one failed (:attr:`Writers.failure`)."""


class Writers:
    """A bounded pool of writer threads with one ordered queue per chain (a trial's run):
    a chain's jobs run one after the other, in the order submitted; chains overlap.

    At most ``backlog`` jobs wait or run at once: :meth:`submit` blocks for room. The first
    job that raises is kept as :attr:`failure`; every later job of any chain is then
    skipped (raises :class:`Skipped`), and :meth:`submit`, :meth:`result` and
    :meth:`flush` raise that failure in the caller's thread.
    """

    def __init__(self, threads: int, backlog: int) -> None:
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="initstudy-mlflow")
        self._room = threading.BoundedSemaphore(backlog)
        self._tails: dict[str, Future[Any]] = {}
        """chain -> its latest job; only the caller's thread touches it."""
        self._backlog = backlog
        self.lock = threading.Lock()
        """Guards :attr:`failure`."""
        self.failure: BaseException | None = None

    def submit(self, chain: str, job: Callable[[], Any]) -> Future[Any]:
        """Queue ``job`` after the chain's earlier jobs; returns its future."""
        self.raise_failure()
        self._room.acquire()
        before = self._tails.get(chain)

        def run() -> Any:
            try:
                if before is not None:
                    wait([before])  # FIFO pool: it was taken by a thread before this one
                if self.failure is not None:
                    raise Skipped
                return job()
            except Skipped:
                raise
            except BaseException as exc:
                self.fail(exc)
                raise
            finally:
                self._room.release()

        try:
            future = self._pool.submit(run)
        except BaseException:
            self._room.release()
            raise
        self._tails[chain] = future
        if len(self._tails) > 2 * self._backlog:
            self._tails = {c: f for c, f in self._tails.items() if not f.done()}
        return future

    def result(self, future: Future[Any]) -> Any:
        """Wait for one job; its result, or the first failure raised here."""
        try:
            return future.result()
        except Exception:
            self.raise_failure()
            raise

    def flush(self) -> None:
        """Wait for every job queued so far; then raise the first failure, if any."""
        tails, self._tails = list(self._tails.values()), {}
        wait(tails)
        self.raise_failure()

    def fail(self, exc: BaseException) -> None:
        """Keep ``exc`` as :attr:`failure`, unless one is kept already: from now on every
        job not started yet is skipped. A job may call it before its own clean-up, so the
        others stop at once rather than once the clean-up is done."""
        with self.lock:
            if self.failure is None:
                self.failure = exc

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def close(self, cancel: bool = False) -> None:
        """Stop the threads once the jobs queued so far have run (after :meth:`flush`: at
        once). With ``cancel``, the jobs not started yet are skipped instead (a chain whose
        earlier job is skipped never runs a later one); the running ones are waited for."""
        if cancel:
            self.fail(Skipped("the run stopped before this write"))
        self._pool.shutdown(wait=True, cancel_futures=cancel)


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
