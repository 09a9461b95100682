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

The experiment's description (``mlflow.note.content``) says what the study tests and how its
runs are named and tagged. Times are the training's: a trial run starts when its training
started and lasts its ``wall_seconds`` (:mod:`pipeline.tracking_runs`); the parent run spans
the study, from its first open to the end of its latest trial.

A trial is logged exactly once per key: a run counts only once it is FINISHED, which is the
last call :meth:`Tracker.log_trial` makes; runs left unfinished by a dead driver are deleted
and logged again. All of this assumes one writer (the driver) per study.

Live runs, for a driver that streams progress, in this order:

1. :meth:`Tracker.open_study`, then :meth:`Tracker.logged_trials` once (it deletes the
   unfinished runs of dead drivers: call it before any live run exists);
2. :meth:`Tracker.start_trials` when a pack starts: each trial's run, RUNNING, with its
   params, tags and name;
3. :meth:`Tracker.log_epochs` as epochs come in (each epoch's metrics are sent once);
4. :meth:`Tracker.log_trial` with the result: completes that same run (what was not
   streamed, the artifacts) and marks it FINISHED; :meth:`Tracker.fail_trials` for a pack
   that failed (FAILED runs are replaced by the next logged_trials).

Any of these can raise :class:`TrackingError`; the driver then stops tracking and a later
back-fill (``initstudy sync`` or the next run) logs what is missing, replacing the live runs
left unfinished. :meth:`Tracker.attach_study` is for other processes (``initstudy report``):
it finds the parent run to add verdicts, a summary and the report to, leaving its status and
times alone (MLflow accepts tags, metrics and artifacts on a terminated run).

Background writes. On a tracking server (``http(s)://``) every call is a request that
waits on the network, so a trial run's calls (create, metrics, artifacts, FINISHED) go to a
bounded pool of writer threads (:class:`~pipeline.tracking_retry.Writers`), one ordered
queue per trial key: a run's calls stay in order, FINISHED last, while runs overlap. Only
:meth:`Tracker.log_trial` waits, for its run's creation (it returns the run id).
:meth:`Tracker.flush` waits for every write queued; :meth:`Tracker.logged_trials`,
:meth:`Tracker.close_study` and the parent run's methods call it first, so the driver's
final back-fill and the study's end see every run landed. A background write that fails
raises its :class:`TrackingError` from the tracker's next call (and flush); the writes
queued after it are skipped, and the runs they leave unfinished are replaced on the next
try, as always. A local store (SQLite) is written on the caller's thread: its calls wait on
the CPU, which threads do not add to.

Every MLflow call is retried (by tenacity, after each of :data:`RETRY_DELAYS`) on
connection-type failures; whether the database behind an MLflow SQL store is unreachable is
decided by :func:`pipeline.retry.is_transient`, as for the Optuna storage. What still fails
raises :class:`TrackingError` naming the tracking URI. Non-finite metric values are logged
as they are: MLflow's SQL stores keep NaN but store +-inf as +-1.7976931348623157e308
(``result.json`` keeps the exact values).
"""

from __future__ import annotations

import contextlib
import functools
import json
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.spec import EpochRecord, TrialResult, TrialSpec
from pipeline import mlflowio
from pipeline.faults import failpoint
from pipeline.tracking_base import (
    KEY_TAG,
    KIND_TAG,
    MAX_RUN_NAME,
    NUMBER_TAG,
    OUTCOME_TAG,
    PARENT_TAG,
    RETRY_DELAYS,
    STUDY_LOGGED_TAG,
    TrackerBase,
    TrackingError,
    _check_key,
    _safe,
    _text,
    run_name,
)
from pipeline.tracking_retry import create_experiment, get_experiment
from pipeline.tracking_runs import (
    NOTE_MARK,
    NOTE_TAG,
    LiveRun,
    experiment_note,
    ms,
    training_span,
)
from pipeline.urls import redact, sqlite_file

if TYPE_CHECKING:
    from mlflow.entities import Run

__all__ = [
    "KEY_TAG",
    "KIND_TAG",
    "MAX_RUN_NAME",
    "NUMBER_TAG",
    "OUTCOME_TAG",
    "PARENT_TAG",
    "RETRY_DELAYS",
    "STUDY_LOGGED_TAG",
    "Tracker",
    "TrackingError",
    "read_trials",
    "run_name",
]

_FAILPOINT_LOCK = threading.Lock()
_EPOCHS_PER_BATCH = mlflowio.MAX_METRICS_PER_CALL // len(mlflowio.EPOCH_METRICS)


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
        "look up the experiment", get_experiment, tracker._client, study_name
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


def experiment_deleted(tracking_uri: str, study_name: str) -> bool:
    """Whether the study's MLflow experiment exists and is deleted (a study of that name
    could never be logged), asked before a run writes anything. Creates nothing: a SQLite
    store is read directly (no file, or no experiments table yet: False); any other store
    is asked through MLflow, so this fails when MLflow cannot be reached.

    Raises:
        TrackingError: MLflow failed to answer.
    """
    db = sqlite_file(tracking_uri)
    if db is not None:
        if not db.is_file():
            return False
        import sqlite3

        try:
            con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, timeout=60)
            try:
                row = con.execute(
                    "SELECT lifecycle_stage FROM experiments WHERE name = ?", (study_name,)
                ).fetchone()
            finally:
                con.close()
        except sqlite3.Error:  # a new store (no tables), or a corrupt one (refused later)
            return False
        return row is not None and row[0] != "active"
    tracker = Tracker(tracking_uri)
    experiment = tracker._call(
        "look up the experiment", get_experiment, tracker._client, study_name
    )
    return experiment is not None and experiment.lifecycle_stage != "active"


class Tracker(TrackerBase):
    """Logs one study to MLflow: its parent run and one child run per trial.

    Not thread-safe; meant for the driver, the only writer (its own writer threads, on a
    tracking server, only run the calls it queues). Call :meth:`open_study` first (or
    :meth:`attach_study`, to add to a logged study's parent run only).
    """

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
        experiment = self._call("look up the experiment", get_experiment, self._client, study_name)
        if experiment is None or experiment.lifecycle_stage != "active":
            return None
        return str(experiment.experiment_id)

    def open_study(
        self, study_name: str, spec_text: str, params: dict[str, str], tags: dict[str, str]
    ) -> str:
        """Get or create the study's experiment and its one parent run; return the run id.

        On creation, logs ``params`` and ``tags`` on the parent run and ``spec_text`` as the
        artifact ``spec.yaml``. The experiment's description (:func:`experiment_note`, from
        ``params`` and the spec) is set on creation, and again when it changed (unless a
        user rewrote it). Calling it again (in this or a later process) finds the same
        experiment and parent run and logs nothing twice; a parent run that was closed is
        marked RUNNING again (a driver is running the study).

        Raises:
            TrackingError: MLflow failed, or the experiment exists but is deleted.
        """
        client = self._client
        note = experiment_note(study_name, spec_text, params)
        experiment = self._call("look up the experiment", get_experiment, client, study_name)
        if experiment is None:
            experiment_id = self._call(
                "create the experiment",
                create_experiment,
                client,
                study_name,
                self.artifact_location,
                {KIND_TAG: "study", NOTE_TAG: note},
            )
        elif experiment.lifecycle_stage != "active":
            raise TrackingError(
                f"MLflow at {redact(self.tracking_uri)}: experiment {study_name!r} is deleted; "
                "restore it, remove it for good (mlflow gc) or use another study name"
            )
        else:
            experiment_id = experiment.experiment_id
            old = experiment.tags.get(NOTE_TAG)
            if old != note and (old is None or old.endswith(NOTE_MARK)):
                self._call(
                    "describe the experiment",
                    client.set_experiment_tag,
                    experiment_id,
                    NOTE_TAG,
                    note,
                )
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
        self._parent_start_ms = int(parent.info.start_time or 0)
        if parent.data.tags.get(STUDY_LOGGED_TAG) != "1":
            # Logged afresh when a driver died half-way: params and tags with the same
            # values are idempotent in MLflow and spec.yaml is overwritten.
            self._log_batch(run_id, params=mlflowio.params(params), tags=mlflowio.tags(tags))
            self._call("log spec.yaml", client.log_text, run_id, spec_text, "spec.yaml")
            self._call("mark the study logged", client.set_tag, run_id, STUDY_LOGGED_TAG, "1")
        elif parent.info.status != "RUNNING":
            self._call("reopen the parent run", client.update_run, run_id, status="RUNNING")
        return run_id

    def attach_study(self, study_name: str) -> str | None:
        """Find a logged study's parent run, to add tags, metrics or artifacts to it; return
        its id, or None when the study has no active experiment or parent run.

        Unlike :meth:`open_study` it creates, logs and reopens nothing: the parent run keeps
        its status and end time (``initstudy report`` uses it after the study ended).
        """
        experiment_id = self.experiment_id_of(study_name)
        if experiment_id is None:
            return None
        parents = self._search(experiment_id, f"tags.`{KIND_TAG}` = 'study'", first=True)
        if not parents:
            return None
        self._experiment_id = experiment_id
        self._parent_run_id = parents[0].info.run_id
        self._parent_start_ms = int(parents[0].info.start_time or 0)
        return self._parent_run_id

    def close_study(self, status: str = "FINISHED") -> None:
        """Mark the parent run terminated (FINISHED, FAILED or KILLED), ending at the end of
        the latest trial run (seen by :meth:`logged_trials` or logged since), else now;
        open_study reopens it. Live trial runs still open are marked FAILED (KILLED, with
        that status) first."""
        if self._live:
            self.fail_trials(list(self._live), "KILLED" if status == "KILLED" else "FAILED")
        self.flush()
        end = self._latest_end_ms if self._latest_end_ms is not None else ms(time.time())
        end = max(end, self._parent_start_ms)
        self._call(
            "close the parent run",
            self._client.set_terminated,
            self.parent_run_id,
            status,
            end_time=end,
        )

    def logged_trials(self) -> dict[str, str]:
        """Map trial key -> run id of this study's FINISHED trial runs.

        Trial runs that are not FINISHED (a driver died while logging them, or a pack of a
        live run failed) are deleted here, so they get logged again; so are later duplicates
        of a key's first FINISHED run. The live runs of this tracker (started and not yet
        finished) are left alone; still, call it once, before :meth:`start_trials`.
        """
        self.flush()
        by_key: dict[str, list[Run]] = {}
        for run in self._search(self.experiment_id, f"tags.`{KIND_TAG}` = 'trial'"):
            key = run.data.tags.get(KEY_TAG)
            if key is not None:
                by_key.setdefault(key, []).append(run)
        logged: dict[str, str] = {}
        for key, runs in by_key.items():
            kept = self._keep_one_finished(runs)
            if kept is not None:
                logged[key] = kept.info.run_id
                self._saw_end(kept.info.end_time)
        self._logged = dict(logged)
        return logged

    def start_trials(
        self,
        items: Sequence[tuple[str, int, TrialSpec]],
        tags: dict[str, str],
        start_time: float,
    ) -> dict[str, str]:
        """Create a RUNNING run for each trial of a pack that starts: its identifying tags
        (as :meth:`log_trial`'s) and ``tags``, its params and run name, and ``start_time``
        (unix seconds: the pack's start, best the worker's ``started_at``, which
        :meth:`log_trial` ends the run from). Keys logged already (FINISHED) are skipped; a
        key's earlier live run (a pack tried again) is replaced. Returns key -> run id of
        the runs created; with writer threads (a tracking server) the runs are created on
        them and the mapping is empty (:meth:`flush` waits for them).

        Raises:
            ValueError: a key has characters outside ``[A-Za-z0-9_.:-]``.
            TrackingError: MLflow failed (here, or an earlier background write); the runs
                left RUNNING are replaced next time.
        """
        for key, _, _ in items:
            _check_key(key)
        self._check()
        started: dict[str, str] = {}
        for key, number, spec in items:
            if self._finished_run(key) is not None:
                continue
            if key in self._live:
                self._drop_live(key)
            run_tags = {**_text(tags), **self._identity(key, number)}
            params = mlflowio.trial_params(spec)  # sent with the run's first metrics
            live = LiveRun("", "", ms(start_time), params=params)
            self._create_trial_run(key, run_tags, run_name(spec, number), live)
            self._live[key] = live
            if live.created is None:
                started[key] = live.run_id
        return started

    def log_epochs(self, key: str, records: Sequence[EpochRecord]) -> None:
        """Log the per-epoch metrics (step = epoch) of a live run (:meth:`start_trials`);
        epochs sent before are not sent again. Nothing for a key with no live run.

        Raises:
            TrackingError: MLflow failed.
        """
        self._check()
        live = self._live.get(key)
        if live is None:
            return
        fresh: dict[int, EpochRecord] = {}
        for record in records:
            if record.epoch not in live.sent:
                fresh.setdefault(record.epoch, record)
        todo = sorted(fresh.values(), key=lambda r: r.epoch)
        for i in range(0, len(todo), _EPOCHS_PER_BATCH):
            chunk = todo[i : i + _EPOCHS_PER_BATCH]
            params, live.params = live.params, []
            metrics = mlflowio.epoch_metrics(chunk)
            self._later(key, functools.partial(self._log_live, live, metrics, params))
            live.sent.update(r.epoch for r in chunk)

    def fail_trials(self, keys: Sequence[str], status: str = "FAILED") -> None:
        """Mark the live runs of these keys FAILED (their pack failed) or KILLED, ending now;
        the next :meth:`logged_trials` deletes them. Keys with no live run are ignored.

        Raises:
            TrackingError: MLflow failed.
        """
        self._check()
        for key in keys:
            live = self._live.pop(key, None)
            if live is not None:
                end = max(ms(time.time()), live.start_ms)
                self._later(key, functools.partial(self._end_live, live, status, end))

    def kill_live(self) -> None:
        """Mark every live run of this tracker KILLED (the driver was interrupted)."""
        self.fail_trials(list(self._live), "KILLED")

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
        ones are deleted). If this tracker started the key's run (:meth:`start_trials`),
        completes that run: the metrics not streamed yet (no history point twice), tags and
        artifacts. Otherwise creates the run with its identifying tags, params and metrics
        and artifacts. Either way the run ends at the training's end
        (:func:`~pipeline.tracking_runs.training_span`; a new run also starts at its start)
        and is marked FINISHED last. Returns the run id. With writer threads (a tracking
        server) the run is filled and FINISHED on them, after the key's earlier writes:
        this returns once the run exists, :meth:`flush` once it is FINISHED.

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
            TrackingError: MLflow failed (here, or an earlier background write); the
                half-logged run, if any, is left unfinished (marked FAILED when MLflow
                still answers) and is replaced on the next try.
        """
        _check_key(key)
        self._check()
        live = self._live.pop(key, None)
        if live is None:
            existing = self._finished_run(key)
            if existing is not None:
                return existing

        text = result.to_json() if result_json is None else result_json
        diagnostics = json.loads(text)["diagnostics"]  # non-finite as "NaN"/"Infinity"
        run_tags = {**_text(tags), **self._identity(key, trial_number)}
        run_tags.update(
            {
                "initstudy.device": result.device,
                "initstudy.node": result.node,
                OUTCOME_TAG: result.outcome,
            }
        )
        start, end = training_span(result, time.time())
        if live is None:
            live = LiveRun("", "", ms(start))
            self._create_trial_run(key, run_tags, run_name(result.spec, trial_number), live)
            params = mlflowio.trial_params(result.spec)
            run_tags = {}
        else:
            params = live.params  # those start_trials had no metrics to send with
        metrics = mlflowio.trial_metrics(result, skip_epochs=live.sent)
        files = {"diagnostics.json": json.dumps(diagnostics, indent=1), "result.json": text}
        end_ms = max(ms(end), live.start_ms)
        finish = functools.partial(
            self._finish_trial, live, metrics, params, mlflowio.tags(run_tags), files, end_ms
        )
        self._later(key, finish)
        run_id = self._run_id(live)
        self._saw_end(end_ms)
        logged = self._logged  # read once: a writer thread may reset it to None
        if logged is not None:
            logged[key] = run_id
        return run_id

    def _finish_trial(
        self,
        live: LiveRun,
        metrics: list[Any],
        params: list[Any],
        tags: list[Any],
        files: dict[str, str],
        end_ms: int,
    ) -> None:
        """The MLflow calls that complete a trial's run, FINISHED last (on its writer
        queue, or now): what :meth:`log_trial` prepared."""
        run_id = live.run_id
        try:
            self._log_batch(run_id, metrics=metrics, params=params, tags=tags)
            with tempfile.TemporaryDirectory(prefix="initstudy-") as folder:
                for name, content in files.items():
                    (Path(folder) / name).write_text(content, encoding="utf-8")
                # To the run's artifact store directly: client.log_artifacts(run_id, ...)
                # would first read the run back to learn the artifact URI we already have.
                self._call(
                    "log the trial's artifacts",
                    lambda: self._artifact_repo(live.artifact_uri).log_artifacts(folder),
                )
            with _FAILPOINT_LOCK:  # hits counted one at a time across writer threads
                failpoint("tracking.before_finish")  # a test hook; see pipeline/faults.py
            self._call(
                "finish the trial run", self._client.set_terminated, run_id, "FINISHED", end_ms
            )
            with _FAILPOINT_LOCK:
                self.finished += 1
        except TrackingError as exc:
            if self._writers is None:
                self._logged = None  # so the next try searches for (and deletes) this run
            else:  # the driver's thread resets _logged when it meets the failure
                self._writers.fail(exc)  # the other writes stop now, not after the clean-up
            # Best effort, no retries: the run is replaced on the next try either way.
            with contextlib.suppress(Exception):
                self._client.set_terminated(run_id, "FAILED")
            raise

    def _log_live(self, live: LiveRun, metrics: list[Any], params: list[Any]) -> None:
        self._log_batch(live.run_id, metrics=metrics, params=params)

    def _end_live(self, live: LiveRun, status: str, end_ms: int) -> None:
        self._call("end a trial run", self._client.set_terminated, live.run_id, status, end_ms)

    def set_parent_tags(self, tags: dict[str, str]) -> None:
        """Set (or overwrite) tags on the parent run."""
        self.flush()
        self._log_batch(self.parent_run_id, tags=mlflowio.tags(tags))

    def log_parent_metrics(self, values: dict[str, float]) -> None:
        """Log metrics (step 0) on the parent run, e.g. the study's summary."""
        self.flush()
        self._log_batch(self.parent_run_id, metrics=mlflowio.metrics(values))

    def log_parent_artifact(self, local_path: str, artifact_path: str | None = None) -> None:
        """Upload a local file or folder to the parent run's artifacts (under artifact_path).

        Raises:
            FileNotFoundError: ``local_path`` does not exist.
            TrackingError: MLflow failed.
        """
        self.flush()
        path = Path(local_path)
        if not path.exists():
            raise FileNotFoundError(f"artifact to log does not exist: {local_path}")
        # To the run's artifact store, found from its own artifact URI: the client's own
        # log_artifacts looks the store up by run id, which a copied store shares.
        run = self._call("read the parent run", self._client.get_run, self.parent_run_id)
        repo = self._artifact_repo(run.info.artifact_uri)
        log = repo.log_artifacts if path.is_dir() else repo.log_artifact
        self._call(f"log artifact {path.name}", log, str(path), artifact_path)
