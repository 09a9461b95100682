"""The internals of :class:`pipeline.tracking.Tracker`: its constants, its error, trial run
names, and the calls every public method is made of (retried MLflow calls, searches,
batches, the identity of a trial's run). Split out of pipeline/tracking.py, whose docstring
describes the layout in MLflow; import from there.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from models.spec import TrialSpec
from pipeline import mlflowio
from pipeline.tracking_retry import (
    Writers,
    is_tracking_failure,
    new_client,
    retrying,
    writes_in_background,
)
from pipeline.tracking_runs import LiveRun
from pipeline.urls import redact, redact_text, sqlite_file

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, Run, RunTag
    from mlflow.tracking import MlflowClient

# initstudy works offline and reports nothing home: MLflow's usage telemetry stays off
# unless the user turns it on explicitly (MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# With a tracking server, MLflow's client reads every run back when it ends, to print
# "View run ... at: URL" lines on stdout: one more request per trial, and two lines per
# trial through the progress display. Off unless asked for (...=false).
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

KIND_TAG = "initstudy.kind"
"""Tag marking a run as the study's parent run (``study``) or a trial's run (``trial``)."""
KEY_TAG = "initstudy.trial_key"
"""Tag holding a trial's identity key (the idempotency key)."""
NUMBER_TAG = "initstudy.trial_number"
"""Tag holding the Optuna trial number."""
OUTCOME_TAG = "initstudy.outcome"
"""Tag holding the outcome: converged, censored, stalled, frozen or diverged."""
PARENT_TAG = "mlflow.parentRunId"
"""MLflow's own tag nesting a run under a parent in the UI."""
STUDY_LOGGED_TAG = "initstudy.study_logged"
"""Set on the parent run after its params, tags and spec are logged (the last step)."""

MAX_RUN_NAME = 100
RETRY_DELAYS = (0.2, 0.5, 1.0)
"""Seconds to wait before each retry of a failed MLflow call (3 retries after the first try)."""

WRITER_THREADS = 8
"""Writer threads of a Tracker on a tracking server (below MLflow's HTTP pool of 10)."""
WRITER_BACKLOG = 256
"""Background writes that may wait at once; the driver waits for room beyond that."""

_PAGE_SIZE = 1000
_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.+-]+")

_T = TypeVar("_T")


class TrackingError(RuntimeError):
    """MLflow could not be reached or refused a call (after retries)."""


def run_name(spec: TrialSpec, number: int | None = None) -> str:
    """Readable run name for a trial, unique within its study when ``number`` (the Optuna
    trial number) is given: ``12-xavier+orthogonal-T10-H64-lr0.003-s0``, with the cell
    when it is not ``rnn_tanh`` and the gains when they are not 1 (``-x2`` for ``scale``,
    ``-g1.5`` for ``recurrent_scale``).

    Only ``[A-Za-z0-9_.+-]`` survive (anything else becomes ``_``), no ``..``, at most
    100 characters, so the name is safe in paths and URLs even for an unvalidated spec.
    """
    init = _safe(str(spec.init))
    if spec.init_recurrent is not None:
        init += "+" + _safe(str(spec.init_recurrent))
    parts = [] if number is None else [str(int(number))]
    if spec.cell != "rnn_tanh":
        parts.append(_safe(str(spec.cell)))
    parts += [init, f"T{spec.seq_len}", f"H{spec.hidden}", f"lr{spec.lr:g}"]
    if spec.scale != 1:
        parts.append(f"x{spec.scale:g}")
    if spec.recurrent_scale is not None:
        parts.append(f"g{spec.recurrent_scale:g}")
    parts.append(f"s{spec.seed}")
    name = _safe("-".join(parts))
    return name[:MAX_RUN_NAME].strip(".") or "trial"


class TrackerBase:
    """State and internal calls of a :class:`pipeline.tracking.Tracker`."""

    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str | None = None,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
        writers: int | None = None,
    ) -> None:
        """Prepare to talk to MLflow; nothing is contacted or created until open_study.

        Args:
            tracking_uri: e.g. ``sqlite:////abs/runs/mlflow.db`` or ``http://127.0.0.1:5000``.
                For SQLite, the database's folder is created here (the database itself, and
                MLflow's migrations, on the first call).
            artifact_location: artifact root for a new experiment, e.g.
                ``Path("runs/mlartifacts").resolve().as_uri()``. None: for SQLite, the folder
                ``mlartifacts`` next to the database; otherwise the server's default.
            retry_delays: seconds to wait before each retry of a failed call.
            writers: threads that write the trial runs in the background (0: none, every
                call on the caller's thread). None: :data:`WRITER_THREADS` on a tracking
                server (``http(s)://``), none on a local store.

        Raises:
            TrackingError: the SQLite database's folder cannot be created.
        """
        self.tracking_uri = tracking_uri
        self._retry_delays = tuple(retry_delays)
        db = sqlite_file(tracking_uri)
        if db is not None:
            try:
                db.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise self._error("create the database folder", exc) from exc
            if artifact_location is None:
                artifact_location = (db.resolve().parent / "mlartifacts").as_uri()
        self.artifact_location = artifact_location
        self._client_obj: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._parent_run_id: str | None = None
        self._parent_start_ms = 0
        self._logged: dict[str, str] | None = None
        """key -> run id of the FINISHED trial runs, once :meth:`logged_trials` has read
        them; kept up to date by :meth:`log_trial`, so logging a trial needs no search."""
        self._live: dict[str, LiveRun] = {}
        """key -> the trial runs this tracker started (:meth:`start_trials`), not finished."""
        self.finished = 0
        """Trial runs this tracker has marked FINISHED (their writes all landed)."""
        self._latest_end_ms: int | None = None
        """The latest end_time of a FINISHED trial run seen (logged_trials) or logged."""
        if writers is None:
            writers = WRITER_THREADS if writes_in_background(tracking_uri) else 0
        self._writers = Writers(writers, WRITER_BACKLOG) if writers > 0 else None
        """The trial runs' writer threads (one ordered queue per trial key), or None."""

    @property
    def background(self) -> bool:
        """Whether trial runs are written on writer threads (see :meth:`flush`)."""
        return self._writers is not None

    def flush(self) -> None:
        """Wait until every trial run's write queued so far has landed (at once without
        writer threads). :meth:`logged_trials`, :meth:`close_study` and the parent run's
        methods call it first.

        Raises:
            TrackingError: a background write failed (the first failure, with the message
                it had); every later call raises it too, and the runs it left unfinished
                are replaced on the next try, as after a failure on the caller's thread.
        """
        if self._writers is not None:
            try:
                self._writers.flush()
            except BaseException:
                self._logged = None  # the next try searches for (and deletes) what is left
                raise

    def stop_writers(self, cancel: bool = False) -> None:
        """Stop the writer threads (none: nothing to do): after every write queued so far,
        or with ``cancel`` after the running ones only, the rest skipped (their runs are
        replaced by the next run or sync, as after a failure)."""
        if self._writers is not None:
            self._writers.close(cancel)

    def _check(self) -> None:
        """Raise the first background write's failure, if any, in the caller's thread."""
        if self._writers is not None and self._writers.failure is not None:
            self._logged = None
            self._writers.raise_failure()

    def _later(self, key: str, job: Callable[[], object]) -> Future[Any] | None:
        """Run ``job`` (MLflow calls for key's run) on the key's writer queue, after the
        key's earlier jobs; without writer threads, now (its error raised here)."""
        if self._writers is None:
            job()
            return None
        return self._writers.submit(key, job)

    def _wait(self, future: Future[Any] | None) -> None:
        """Wait for one background job (None: nothing to wait for)."""
        if future is not None and self._writers is not None:
            try:
                self._writers.result(future)
            except BaseException:
                self._logged = None
                raise

    @property
    def experiment_id(self) -> str:
        """The study's experiment id (after open_study)."""
        if self._experiment_id is None:
            raise RuntimeError("Tracker.open_study must be called first")
        return self._experiment_id

    @property
    def parent_run_id(self) -> str:
        """The study's parent run id (after open_study)."""
        if self._parent_run_id is None:
            raise RuntimeError("Tracker.open_study must be called first")
        return self._parent_run_id

    def _identity(self, key: str, number: int) -> dict[str, str]:
        """The tags that identify a trial's run (they win over the caller's)."""
        return {
            KIND_TAG: "trial",
            KEY_TAG: key,
            NUMBER_TAG: str(number),
            PARENT_TAG: self.parent_run_id,
        }

    def _create_trial_run(self, key: str, tags: dict[str, str], name: str, live: LiveRun) -> None:
        """Create key's run, starting at ``live.start_ms``, on its writer queue (now without
        writer threads): fills ``live.run_id`` and ``live.artifact_uri``."""
        experiment_id = self.experiment_id

        def create() -> None:
            try:
                run = self._call(
                    "create a trial run",
                    self._client.create_run,
                    experiment_id,
                    start_time=live.start_ms,
                    tags=tags,
                    run_name=name,
                )
            except TrackingError:
                if self._writers is None:  # else the driver's thread, meeting the failure
                    self._logged = None  # the run may exist all the same: search next time
                raise
            live.run_id, live.artifact_uri = run.info.run_id, run.info.artifact_uri

        live.created = self._later(key, create)

    def _run_id(self, live: LiveRun) -> str:
        """A live run's id, once its creation (maybe on a writer thread) is done."""
        self._wait(live.created)
        live.created = None
        return live.run_id

    def _finished_run(self, key: str) -> str | None:
        """The id of the key's FINISHED run, if any (deleting unfinished ones not live)."""
        logged = self._logged  # read once: a writer thread may reset it to None
        if logged is not None:
            # Known since logged_trials(): with one writer, no other run has this key.
            return logged.get(key)
        self.flush()  # this tracker's own runs first
        same_key = self._search(
            self.experiment_id, f"tags.`{KIND_TAG}` = 'trial' and tags.`{KEY_TAG}` = '{key}'"
        )
        kept = self._keep_one_finished(same_key)
        return kept.info.run_id if kept is not None else None

    def _drop_live(self, key: str) -> None:
        """Delete a live run about to be replaced (best effort: logged_trials would)."""
        live = self._live.pop(key)

        def delete() -> None:
            with contextlib.suppress(TrackingError):
                self._call("delete a stale trial run", self._client.delete_run, live.run_id)

        self._later(key, delete)

    def _saw_end(self, end_ms: int | None) -> None:
        if end_ms is not None and (self._latest_end_ms is None or end_ms > self._latest_end_ms):
            self._latest_end_ms = int(end_ms)

    def _artifact_repo(self, artifact_uri: str) -> Any:
        """The artifact repository of a run's artifact URI, as MLflow's client resolves it
        (``mlflow-artifacts:`` URIs through the tracking server)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)

    @property
    def _client(self) -> MlflowClient:
        if self._client_obj is None:
            self._client_obj = self._call("connect", new_client, self.tracking_uri)
        return self._client_obj

    def _call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call ``fn``, retrying transient failures after each of ``_retry_delays`` seconds.

        A failure talking to MLflow that is not transient, or still there after the last
        retry, raises TrackingError; any other exception (a bug) propagates as it is.
        """
        try:
            return retrying(self._retry_delays)(fn, *args, **kwargs)
        except Exception as exc:
            if not is_tracking_failure(exc):
                raise
            raise self._error(what, exc) from exc

    def _error(self, what: str, exc: BaseException) -> TrackingError:
        cause = redact_text(" ".join(str(exc).split()))
        if len(cause) > 300:
            cause = cause[:297] + "..."
        uri = redact(self.tracking_uri)
        return TrackingError(f"MLflow at {uri} failed to {what}: {type(exc).__name__}: {cause}")

    def _search(self, experiment_id: str, filter_string: str, first: bool = False) -> list[Run]:
        """Active runs matching the filter, oldest first, following page tokens.

        With ``first``, only the oldest match (one page of one run).
        """
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = self._call(
                "search runs",
                self._client.search_runs,
                [experiment_id],
                filter_string=filter_string,
                max_results=1 if first else _PAGE_SIZE,
                order_by=["attributes.start_time ASC"],
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if first or not token:
                return runs

    def _keep_one_finished(self, runs: list[Run]) -> Run | None:
        """Return the oldest FINISHED run; delete the other runs (unfinished, duplicates),
        except this tracker's live runs."""
        finished = [r for r in runs if r.info.status == "FINISHED"]
        kept = min(finished, key=lambda r: r.info.start_time) if finished else None
        live = {r.run_id for r in self._live.values()}
        for run in runs:
            if run is not kept and run.info.run_id not in live:
                self._call("delete a stale trial run", self._client.delete_run, run.info.run_id)
        return kept

    def _log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        for m, p, t in mlflowio.batches(metrics, params, tags):
            self._call("log a batch", self._client.log_batch, run_id, metrics=m, params=p, tags=t)


def _check_key(key: str) -> None:
    if not _KEY_RE.fullmatch(key):
        raise ValueError(f"trial key must match [A-Za-z0-9_.:-]{{1,200}}, got {key!r}")


def _text(values: dict[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in values.items()}


def _safe(text: str) -> str:
    text = re.sub(r"\.{2,}", ".", _UNSAFE_NAME.sub("_", text))
    return text.strip(".") or "_"
