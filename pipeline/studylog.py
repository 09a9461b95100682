"""The driver's MLflow side: the study's parent run, one child run per trial, back-fill.

MLflow is a copy of what the Optuna storage holds, so it may be down: the first failure
is noted once, logging stops for the rest of the run, and every complete trial without a
finished run is logged by the next run or ``initstudy sync`` (exactly once, by key).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from models.spec import TrialResult
from pipeline.execution import Trained
from pipeline.storage import StudyCounts, StudyError
from pipeline.studystore import StudyStore
from pipeline.tracking import Tracker, TrackingError, experiment_deleted
from pipeline.urls import redact

OFFLINE_FLAG = "--offline-tracking"
"""The ``run`` option (``offline_tracking=True`` in the API) to run without MLflow."""


@dataclass
class StudyLog:
    """Logs one study's trials to MLflow for the driver, which owns it."""

    name: str
    tracking_uri: str
    artifact_location: str | None
    tags: dict[str, str]
    """Tags of every run (study, spec and claim hashes, code version, ...)."""
    note: Callable[[str], None]
    tracker: Tracker | None = None
    """None until :meth:`open`, and again once MLflow failed."""
    error: str | None = None
    """The first MLflow failure of this run, if any."""
    logged: int = 0
    """Trial runs FINISHED by this driver's trackers that are gone (MLflow failed)."""
    offline: bool = False
    """Run without MLflow (``--offline-tracking``): nothing is logged or contacted; the
    results are logged later by ``initstudy sync`` or a run with MLflow."""

    def report_to(self, outcome: Any) -> None:
        """Put what this run logged (trial runs FINISHED, their writes all landed, also on
        a tracking server's writer threads), and MLflow's first failure, on the driver's
        outcome."""
        outcome.logged = self.logged + (self.tracker.finished if self.tracker else 0)
        outcome.tracking_error = self.error

    def check(self) -> None:
        """Before a run writes anything: MLflow answers, and the study's name is not that
        of a deleted experiment (its runs could never be logged). Offline: nothing.

        Raises:
            StudyError: one line, naming what is wrong and what to do.
        """
        if self.offline:
            return
        try:
            deleted = experiment_deleted(self.tracking_uri, self.name)
        except TrackingError as exc:
            raise StudyError(
                f"--tracking-uri: MLflow cannot be reached ({exc}); start it or fix the URI, "
                f"or pass {OFFLINE_FLAG} to run without MLflow and log the results later "
                f"with `initstudy sync {self.name}`"
            ) from None
        if deleted:
            raise StudyError(
                f"study {self.name!r}: MLflow at {redact(self.tracking_uri)} holds a deleted "
                "experiment of that name, so its runs could not be logged; restore it "
                "(mlflow experiments restore), remove it for good (mlflow gc), or choose "
                "another --study-name"
            )

    def open(self, spec_text: str, params: dict[str, str]) -> None:
        """Find or create the study's experiment and parent run (offline: say so only)."""
        if self.offline:
            self.note(
                f"{OFFLINE_FLAG}: nothing is logged to MLflow by this run; log the results "
                f"later with `initstudy sync {self.name}` (or a run without {OFFLINE_FLAG})"
            )
            return
        try:
            self.tracker = Tracker(self.tracking_uri, self.artifact_location)
            self.tracker.open_study(self.name, spec_text, params=params, tags=self.tags)
        except TrackingError as exc:
            self.down(exc)

    def down(self, exc: Exception) -> None:
        """MLflow failed: say so once, and log nothing more in this run."""
        if self.error is None:
            self.note(
                f"MLflow is unreachable ({exc}); results are kept in the Optuna storage "
                f"and will be logged by `initstudy sync {self.name}` or the next run"
            )
        self.error = str(exc)
        if self.tracker is not None:  # the writes in flight land (or fail) before counting
            with contextlib.suppress(TrackingError):
                self.tracker.flush()
            self.logged += self.tracker.finished
        self.tracker = None

    def trial(self, key: str, number: int, done: Trained) -> None:
        """Log a trial that finished (its live run, if it has one, is completed)."""
        if self.tracker is None:
            return
        try:
            self.tracker.log_trial(key, number, done.result, self.tags, result_json=done.text)
        except TrackingError as exc:
            self.down(exc)

    def failed(self, keys: list[str]) -> None:
        """The pack of these trials failed: their live runs are marked FAILED."""
        if self.tracker is None:
            return
        try:
            self.tracker.fail_trials(keys)
        except TrackingError as exc:
            self.down(exc)

    def backfill(self, store: StudyStore) -> None:
        """Log every complete trial that has no finished MLflow run (exactly once)."""
        if self.tracker is None:
            return
        try:
            logged = self.tracker.logged_trials()
        except TrackingError as exc:
            self.down(exc)
            return
        for t in store.complete():
            if t.key and t.result_json and t.key not in logged:
                done = Trained(TrialResult.from_json(t.result_json), t.result_json)
                self.trial(t.key, t.number, done)
                if self.tracker is None:
                    return

    def close(self, counts: StudyCounts, interrupted: bool) -> None:
        """End the parent run: FINISHED once every planned trial is complete, KILLED when
        the run was interrupted (the next run reopens it); the live runs of trials that did
        not finish are marked KILLED. Either way, and when the parent stays open (trials
        remain), every write queued so far has landed, or failed and been noted, when
        this returns."""
        if self.tracker is None:
            return
        try:
            if interrupted:  # close_study marks the live runs KILLED too
                self.tracker.close_study("KILLED")
            elif counts.remaining == 0:
                self.tracker.close_study()
            else:
                self.tracker.flush()
        except TrackingError as exc:
            self.down(exc)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """Around a driver run, inside the study's lock: the tracker's writer threads are
        stopped on the way out, so no write of this run lands beside the next run's. After
        :meth:`close` they stop at once; on an error (a third Ctrl-C) the writes not
        started yet are dropped and the running ones waited for (the next run or sync
        replaces their runs)."""
        try:
            yield
        except BaseException:
            if self.tracker is not None:
                self.tracker.stop_writers(cancel=True)
            raise
        if self.tracker is not None:
            self.tracker.stop_writers()
