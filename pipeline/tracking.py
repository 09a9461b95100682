"""MLflow tracking: one experiment per study, one parent run, one child run per trial.

This module and :mod:`pipeline.mlflowio` (the entities it logs) are the only ones in
initstudy that import mlflow, and only the driver process calls them (workers never hold a
connection to the tracking store). They move specs and results; they know nothing of
tensors, Ray or Optuna. mlflow is imported lazily, so importing this module is cheap.

Layout in MLflow, for a study named ``study``:

- experiment ``study`` (artifacts under ``artifact_location``);
- one parent run tagged ``initstudy.kind=study``: the study's params, tags and ``spec.yaml``;
- one child run per trial tagged ``initstudy.kind=trial`` and ``initstudy.trial_key=<key>``,
  ``mlflow.parentRunId=<parent>``: every TrialSpec field as a param, per-epoch metrics
  (step = epoch), summary metrics (step 0), ``diagnostics.json`` and ``result.json``.

A trial is logged exactly once per key: a run counts only once it is FINISHED, which is the
last call :meth:`Tracker.log_trial` makes; runs left unfinished by a dead driver are deleted
and logged again. All of this assumes one writer (the driver) per study.

Every MLflow call is retried (by tenacity, after each of :data:`RETRY_DELAYS`) on
connection-type failures; whether the database behind an MLflow SQL store is unreachable is
decided by :func:`pipeline.retry.is_transient`, as for the Optuna storage. What still fails
raises :class:`TrackingError` naming the tracking URI. Non-finite metric values are logged
as they are: MLflow's SQL stores keep NaN but store +-inf as +-1.7976931348623157e308
(``result.json`` keeps the exact values).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import tenacity

from models.spec import TrialResult, TrialSpec
from pipeline import mlflowio, retry
from pipeline.faults import failpoint
from pipeline.urls import redact, redact_text, sqlite_file, use_wal

if TYPE_CHECKING:
    from mlflow.entities import Experiment, Metric, Param, Run, RunTag
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

_PAGE_SIZE = 1000
_KEY_RE = re.compile(r"[A-Za-z0-9_.:-]{1,200}")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.+-]+")
_NOISE = r"The ``noload`` loader strategy is deprecated"
"""SQLAlchemy 2.1 warns about MLflow's own ORM models when its SQL store is first imported."""

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


def read_trials(tracking_uri: str, study_name: str) -> list[dict[str, Any]]:
    """Every active trial run of a study, as plain dicts (for tests and other processes).

    Each dict has ``run_id``, ``run_name``, ``key``, ``status`` (e.g. ``FINISHED``),
    ``params``, ``metrics`` (latest value of each) and ``tags``. Empty when the study has
    no experiment (or, for SQLite, no database file) yet. Raises TrackingError.
    """
    db = sqlite_file(tracking_uri)
    if db is not None and not db.exists():
        return []
    tracker = Tracker(tracking_uri)
    experiment = tracker._call(
        "look up the experiment", _get_experiment, tracker._client, study_name
    )
    if experiment is None or experiment.lifecycle_stage != "active":
        return []
    return [
        {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "key": run.data.tags.get(KEY_TAG, ""),
            "status": run.info.status,
            "params": dict(run.data.params),
            "metrics": dict(run.data.metrics),
            "tags": dict(run.data.tags),
        }
        for run in tracker._search(experiment.experiment_id, f"tags.`{KIND_TAG}` = 'trial'")
    ]


class Tracker:
    """Logs one study to MLflow: its parent run and one child run per trial.

    Not thread-safe; meant for the driver, the only writer. Call :meth:`open_study` first.
    """

    def __init__(
        self,
        tracking_uri: str,
        artifact_location: str | None = None,
        *,
        retry_delays: Sequence[float] = RETRY_DELAYS,
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
        self._logged: dict[str, str] | None = None
        """key -> run id of the FINISHED trial runs, once :meth:`logged_trials` has read
        them; kept up to date by :meth:`log_trial`, so logging a trial needs no search."""

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

    def delete_experiment(self, study_name: str) -> bool:
        """Delete a study's experiment and its runs (False: there is none). MLflow only marks
        an experiment deleted (``mlflow gc`` removes it for good), so it is renamed first to
        ``NAME.deleted-<id>``: the name is free for a new study of that name."""
        experiment_id = self.experiment_id_of(study_name)
        if experiment_id is None:
            return False
        client = self._client
        self._call(
            "rename the experiment",
            client.rename_experiment,
            experiment_id,
            f"{study_name}.deleted-{experiment_id}",
        )
        self._call("delete the experiment", client.delete_experiment, experiment_id)
        return True

    def experiment_id_of(self, study_name: str) -> str | None:
        """The id of the study's active experiment, or None if there is none. Reads only."""
        experiment = self._call(
            "look up the experiment", _get_experiment, self._client, study_name
        )
        if experiment is None or experiment.lifecycle_stage != "active":
            return None
        return str(experiment.experiment_id)

    def open_study(
        self, study_name: str, spec_text: str, params: dict[str, str], tags: dict[str, str]
    ) -> str:
        """Get or create the study's experiment and its one parent run; return the run id.

        On creation, logs ``params`` and ``tags`` on the parent run and ``spec_text`` as the
        artifact ``spec.yaml``. Calling it again (in this or a later process) finds the same
        experiment and parent run and logs nothing twice; a parent run that was closed is
        marked RUNNING again.

        Raises:
            TrackingError: MLflow failed, or the experiment exists but is deleted.
        """
        client = self._client
        experiment = self._call("look up the experiment", _get_experiment, client, study_name)
        if experiment is None:
            experiment_id = self._call(
                "create the experiment",
                _create_experiment,
                client,
                study_name,
                self.artifact_location,
            )
        elif experiment.lifecycle_stage != "active":
            raise TrackingError(
                f"MLflow at {redact(self.tracking_uri)}: experiment {study_name!r} is deleted; "
                "restore it, remove it for good (mlflow gc) or use another study name"
            )
        else:
            experiment_id = experiment.experiment_id
        self._experiment_id = experiment_id

        parents = self._search(experiment_id, f"tags.`{KIND_TAG}` = 'study'", first=True)
        if parents:
            parent = parents[0]
        else:
            parent = self._call(
                "create the study's parent run",
                client.create_run,
                experiment_id,
                tags={KIND_TAG: "study"},
                run_name=_safe(study_name)[:MAX_RUN_NAME],
            )
        run_id = parent.info.run_id
        self._parent_run_id = run_id
        if parent.data.tags.get(STUDY_LOGGED_TAG) != "1":
            # Logged afresh when a driver died half-way: params and tags with the same
            # values are idempotent in MLflow and spec.yaml is overwritten.
            self._log_batch(run_id, params=mlflowio.params(params), tags=mlflowio.tags(tags))
            self._call("log spec.yaml", client.log_text, run_id, spec_text, "spec.yaml")
            self._call("mark the study logged", client.set_tag, run_id, STUDY_LOGGED_TAG, "1")
        elif parent.info.status != "RUNNING":
            self._call("reopen the parent run", client.update_run, run_id, status="RUNNING")
        return run_id

    def close_study(self, status: str = "FINISHED") -> None:
        """Mark the parent run terminated (FINISHED, FAILED or KILLED); open_study reopens it."""
        self._call("close the parent run", self._client.set_terminated, self.parent_run_id, status)

    def logged_trials(self) -> dict[str, str]:
        """Map trial key -> run id of this study's FINISHED trial runs.

        Trial runs that are not FINISHED (a driver died while logging them) are deleted
        here, so they get logged again; so are later duplicates of a key's first FINISHED run.
        """
        by_key: dict[str, list[Run]] = {}
        for run in self._search(self.experiment_id, f"tags.`{KIND_TAG}` = 'trial'"):
            key = run.data.tags.get(KEY_TAG)
            if key is not None:
                by_key.setdefault(key, []).append(run)
        logged: dict[str, str] = {}
        for key, runs in by_key.items():
            kept = self._keep_one_finished(runs)
            if kept is not None:
                logged[key] = kept
        self._logged = dict(logged)
        return logged

    def log_trial(
        self,
        key: str,
        trial_number: int,
        result: TrialResult,
        tags: dict[str, str],
        *,
        result_json: str | None = None,
    ) -> str:
        """Log one trial as a child run of the parent run, exactly once per key.

        If a FINISHED run with this key exists, returns its id and logs nothing (unfinished
        ones are deleted). Otherwise creates the run with its identifying tags, logs params,
        metrics and artifacts, and marks it FINISHED last. Returns the run id.

        Args:
            key: the trial's identity key, ``[A-Za-z0-9_.:-]``, e.g. ``TrialSpec.key(claim)``.
            trial_number: the Optuna trial number.
            result: what training produced.
            tags: extra tags (spec hash, claim, code version, ...); the identifying tags win.
            result_json: ``result.to_json()``, when the caller has that text already (the
                worker sent it): written as ``result.json`` as is, and ``diagnostics.json``
                taken from it, so the result is not serialised again.

        Raises:
            ValueError: ``key`` has characters outside ``[A-Za-z0-9_.:-]``.
            TrackingError: MLflow failed; the half-logged run, if any, is left unfinished
                (marked FAILED when MLflow still answers) and is replaced on the next try.
        """
        if not _KEY_RE.fullmatch(key):
            raise ValueError(f"trial key must match [A-Za-z0-9_.:-]{{1,200}}, got {key!r}")
        client = self._client
        if self._logged is not None:
            # Known since logged_trials(): with one writer, no other run has this key.
            existing = self._logged.get(key)
        else:
            same_key = self._search(
                self.experiment_id, f"tags.`{KIND_TAG}` = 'trial' and tags.`{KEY_TAG}` = '{key}'"
            )
            existing = self._keep_one_finished(same_key)
        if existing is not None:
            return existing

        text = result.to_json() if result_json is None else result_json
        diagnostics = json.loads(text)["diagnostics"]  # non-finite as "NaN"/"Infinity"
        run_tags = {str(k): str(v) for k, v in tags.items()}
        run_tags.update(
            {
                KIND_TAG: "trial",
                KEY_TAG: key,
                NUMBER_TAG: str(trial_number),
                PARENT_TAG: self.parent_run_id,
                "initstudy.device": result.device,
                "initstudy.node": result.node,
                OUTCOME_TAG: result.outcome,
            }
        )
        try:
            run = self._call(
                "create a trial run",
                client.create_run,
                self.experiment_id,
                tags=run_tags,
                run_name=run_name(result.spec, trial_number),
            )
        except TrackingError:
            self._logged = None  # the run may exist all the same: search next time
            raise
        run_id = run.info.run_id
        try:
            self._log_batch(
                run_id,
                metrics=mlflowio.trial_metrics(result),
                params=mlflowio.trial_params(result.spec),
            )
            with tempfile.TemporaryDirectory(prefix="initstudy-") as folder:
                (Path(folder) / "diagnostics.json").write_text(
                    json.dumps(diagnostics, indent=1), encoding="utf-8"
                )
                (Path(folder) / "result.json").write_text(text, encoding="utf-8")
                # To the run's artifact store directly: client.log_artifacts(run_id, ...)
                # would first read the run back to learn the artifact URI we already have.
                self._call(
                    "log the trial's artifacts",
                    lambda: self._artifact_repo(run.info.artifact_uri).log_artifacts(folder),
                )
            failpoint("tracking.before_finish")  # a test hook; see pipeline/faults.py
            self._call("finish the trial run", client.set_terminated, run_id, "FINISHED")
        except TrackingError:
            # Best effort, no retries: the run is replaced on the next try either way.
            self._logged = None  # so the next try searches for (and deletes) this run
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, "FAILED")
            raise
        if self._logged is not None:
            self._logged[key] = run_id
        return run_id

    def set_parent_tags(self, tags: dict[str, str]) -> None:
        """Set (or overwrite) tags on the parent run."""
        self._log_batch(self.parent_run_id, tags=mlflowio.tags(tags))

    def log_parent_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Upload a local file or folder to the parent run's artifacts (under artifact_path).

        Raises:
            FileNotFoundError: ``local_path`` does not exist.
            TrackingError: MLflow failed.
        """
        path = Path(local_path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {local_path}")
        client = self._client
        log = client.log_artifacts if path.is_dir() else client.log_artifact
        self._call(f"log artifact {path.name}", log, self.parent_run_id, str(path), artifact_path)

    # -- internals ----------------------------------------------------------------------

    def _artifact_repo(self, artifact_uri: str) -> Any:
        """The artifact repository of a run's artifact URI, as MLflow's client resolves it
        (``mlflow-artifacts:`` URIs through the tracking server)."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(artifact_uri, tracking_uri=self.tracking_uri)

    @property
    def _client(self) -> MlflowClient:
        if self._client_obj is None:
            self._client_obj = self._call("connect", _new_client, self.tracking_uri)
        return self._client_obj

    def _call(self, what: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call ``fn``, retrying transient failures after each of ``_retry_delays`` seconds.

        A failure talking to MLflow that is not transient, or still there after the last
        retry, raises TrackingError; any other exception (a bug) propagates as it is.
        """
        try:
            return _retrying(self._retry_delays)(fn, *args, **kwargs)
        except Exception as exc:
            if not _is_tracking_failure(exc):
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

    def _keep_one_finished(self, runs: list[Run]) -> str | None:
        """Return the oldest FINISHED run's id; delete the other runs (unfinished, duplicates)."""
        finished = [r for r in runs if r.info.status == "FINISHED"]
        kept = min(finished, key=lambda r: r.info.start_time) if finished else None
        for run in runs:
            if run is not kept:
                self._call("delete a stale trial run", self._client.delete_run, run.info.run_id)
        return kept.info.run_id if kept is not None else None

    def _log_batch(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        for m, p, t in mlflowio.batches(metrics, params, tags):
            self._call("log a batch", self._client.log_batch, run_id, metrics=m, params=p, tags=t)


def _safe(text: str) -> str:
    text = re.sub(r"\.{2,}", ".", _UNSAFE_NAME.sub("_", text))
    return text.strip(".") or "_"


def _new_client(tracking_uri: str) -> MlflowClient:
    db = sqlite_file(tracking_uri)
    if db is not None:
        use_wal(db)  # before MLflow creates its tables; see pipeline.urls
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_NOISE, category=DeprecationWarning)
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=tracking_uri)


def _get_experiment(client: MlflowClient, name: str) -> Experiment | None:
    return client.get_experiment_by_name(name)


def _create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return client.create_experiment(
            name, artifact_location=artifact_location, tags={KIND_TAG: "study"}
        )
    except MlflowException as exc:
        # A retried create whose first attempt did reach the store.
        found = client.get_experiment_by_name(name)
        if exc.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
            raise
        return str(found.experiment_id)


def _retrying(delays: Sequence[float]) -> tenacity.Retrying:
    """The retry policy of one MLflow call: a try, then a retry after each of ``delays``
    seconds while the failure is transient; the last failure is raised as it is."""
    wait = tenacity.wait_chain(*map(tenacity.wait_fixed, delays)) if delays else None
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(len(delays) + 1),
        wait=wait or tenacity.wait_none(),
        retry=tenacity.retry_if_exception(_is_retryable),
        reraise=True,
    )


def _is_retryable(exc: BaseException) -> bool:
    return _is_tracking_failure(exc) and _is_transient(exc)


def _is_tracking_failure(exc: BaseException) -> bool:
    """Whether ``exc`` comes from talking to MLflow (as opposed to a bug in the caller)."""
    import requests
    from mlflow.exceptions import MlflowException

    failures = (MlflowException, requests.RequestException, OSError, *_database_errors())
    return isinstance(exc, failures)


def _is_transient(exc: BaseException) -> bool:
    """Whether a retry may help: connection errors, timeouts, server-side (5xx/429) errors,
    and an MLflow SQL store's database that :func:`pipeline.retry.is_transient` finds
    unreachable (the rule for every database initstudy uses)."""
    import requests
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        if exc.get_http_status_code() < 500 and exc.get_http_status_code() != 429:
            return False
        cause = exc.__cause__
        return cause is None or _is_transient(cause)
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
