"""The study driver: Optuna asks, Ray trains, the driver tells and logs.

Only the driver writes to the Optuna storage and to MLflow; workers only return
results. The loop, in order, for every trial:

1. the trial exists in Optuna with its identity key before any work is sent
   (grid points are enqueued with their key, then asked);
2. its pack trains on a Ray worker (retried by Ray if the worker dies);
3. the full TrialResult is stored on the trial, then the trial is told its value;
4. the trial is logged as one MLflow child run, keyed, exactly once.

Resume: at start the driver takes the study's lock, then reruns trials left RUNNING by a
driver that died (same parameters; a stored result is told without retraining), enqueues
grid points that have no trial yet, and back-fills MLflow runs that are missing. Nothing
is run or logged twice.
"""

from __future__ import annotations

import math
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.trial import TrialState

from models.spec import TrialResult, TrialSpec
from pipeline import storage as st
from pipeline.execution import PackFailed, RayExecutor, Resources
from pipeline.progress import Reporter
from pipeline.studyspec import StudySpec
from pipeline.tracking import Tracker, TrackingError

MAX_AUTO_PACK = 16
"""Largest pack the driver forms on its own (``--pack-size`` overrides)."""
SAMPLED_PACK = 4
"""Trials asked per slot at a time for sampled (non-grid) studies."""
HEARTBEAT_SECONDS = 5.0


@dataclass(frozen=True)
class RunOptions:
    """Where a study's data live and how it runs; the CLI's ``run`` options."""

    run_dir: Path = Path("runs")
    """Folder for the embedded stores (Optuna SQLite, MLflow SQLite and artifacts)."""
    storage: str | None = None
    """Optuna storage URL (default: SQLite in run_dir)."""
    tracking_uri: str | None = None
    """MLflow tracking URI (default: SQLite in run_dir)."""
    address: str | None = None
    """Ray cluster address (default: start Ray here)."""
    workers: int | None = None
    """CPUs for the embedded Ray (default: all)."""
    cpus_per_trial: float = 1.0
    """CPUs for each Ray task (one pack of trials)."""
    gpus_per_trial: float = 0.0
    """GPUs for each Ray task; fractions share a GPU."""
    pack_size: int | None = None
    """Trials per pack (default: chosen from the hardware; 1 = no packing)."""
    study_name: str | None = None
    """Optuna study / MLflow experiment name (default: the spec's name)."""

    @property
    def storage_url(self) -> str:
        return self.storage or st.default_storage_url(self.run_dir)

    @property
    def tracking(self) -> str:
        return self.tracking_uri or f"sqlite:///{(self.run_dir / 'mlflow.db').resolve()}"

    @property
    def artifact_location(self) -> str | None:
        """Local artifact folder for the embedded store; a server keeps its own."""
        if self.tracking_uri is None:
            return (self.run_dir / "mlartifacts").resolve().as_uri()
        return None


@dataclass
class Pending:
    """A trial that exists in Optuna and waits for its result."""

    number: int
    trial_id: int
    spec: TrialSpec
    key: str


@dataclass
class StudyOutcome:
    """What a run of the driver did."""

    study_name: str
    counts: st.StudyCounts
    trained: int = 0
    logged: int = 0
    failed: list[str] = field(default_factory=list)
    tracking_error: str | None = None


def code_version() -> str:
    """The package version and, in a git checkout, the commit."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("initstudy")
    except PackageNotFoundError:
        ver = "unknown"
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except OSError:
        sha = ""
    return f"{ver}+{sha}" if sha else ver


def make_packs(pending: Sequence[Pending], pack_size: int) -> list[list[Pending]]:
    """Group trials by shape, then split each group into near-equal packs of <= pack_size."""
    groups: dict[tuple[object, ...], list[Pending]] = {}
    for p in pending:
        groups.setdefault(p.spec.shape_key(), []).append(p)
    packs = []
    for members in groups.values():
        n_packs = math.ceil(len(members) / pack_size)
        size = math.ceil(len(members) / n_packs)
        packs += [members[i : i + size] for i in range(0, len(members), size)]
    return packs


def auto_pack_size(n_trials: int, slots: int) -> int:
    """Enough packs to keep every slot busy, each as large as that allows (<= 16)."""
    return max(1, min(MAX_AUTO_PACK, math.ceil(n_trials / max(1, slots))))


class Driver:
    """Runs one study to completion (or resumes it)."""

    def __init__(
        self, spec: StudySpec, spec_text: str, options: RunOptions, reporter: Reporter
    ) -> None:
        self.spec = spec
        self.spec_text = spec_text
        self.options = options
        self.reporter = reporter
        self.name = options.study_name or spec.name
        self.claim = spec.claim or ""
        self.version = code_version()
        self.tracker: Tracker | None = None
        self.outcome: StudyOutcome | None = None

    # -- setup -------------------------------------------------------------------------

    def _open(self) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
        storage = st.make_storage(self.options.storage_url)
        sampler = (
            optuna.samplers.RandomSampler(seed=self.spec.sampler_seed)
            if self.spec.is_grid  # grid points are enqueued; the sampler is never consulted
            else self.spec.make_sampler()
        )
        study = st.open_study(
            storage,
            self.name,
            spec_hash=self.spec.spec_hash(),
            spec_text=self.spec_text,
            planned=self.spec.n_trials_planned,
            claim=self.spec.claim,
            sampler=sampler,
        )
        return storage, study

    def _open_tracker(self) -> None:
        try:
            self.tracker = Tracker(self.options.tracking, self.options.artifact_location)
            self.tracker.open_study(
                self.name,
                self.spec_text,
                params={
                    "study": self.name,
                    "sampler": self.spec.sampler,
                    "n_trials": str(self.spec.n_trials_planned),
                    "objective": self.spec.objective.metric,
                    "claim": self.claim,
                },
                tags=self._tags(),
            )
        except TrackingError as exc:
            self.tracker = None
            self._tracking_down(exc)

    def _tags(self) -> dict[str, str]:
        return {
            "initstudy.study": self.name,
            "initstudy.spec_hash": self.spec.spec_hash(),
            "initstudy.claim_hash": self.spec.claim_hash(),
            "initstudy.claim": self.claim,
            "initstudy.code_version": self.version,
        }

    def _tracking_down(self, exc: Exception) -> None:
        assert self.outcome is not None
        if self.outcome.tracking_error is None:
            self.reporter.note(
                f"MLflow is unreachable ({exc}); results are kept in the Optuna storage "
                f"and will be logged by `initstudy sync {self.name}` or the next run"
            )
        self.outcome.tracking_error = str(exc)
        self.tracker = None

    def _key(self, spec: TrialSpec, number: int) -> str:
        """Grid trials are keyed by spec and claim; sampled ones also by trial number,
        since a sampler may legitimately propose the same point twice."""
        key = spec.key(self.claim)
        return key if self.spec.is_grid else f"{key}.{number}"

    # -- the trials to run ---------------------------------------------------------------

    def _recover(self, study: optuna.Study) -> list[Pending]:
        """Trials left RUNNING by a dead driver: tell stored results, rerun the rest."""
        rerun = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            result = st.stored_result(t)
            if result is not None:
                self._tell(study, t.number, t._trial_id, result)
                continue
            spec = self.spec.trial_spec(t.params)
            key = t.user_attrs.get(st.KEY) or self._key(spec, t.number)
            rerun.append(Pending(t.number, t._trial_id, spec, key))
        return rerun

    def _ask_grid(self, study: optuna.Study) -> list[Pending]:
        """Enqueue every grid point that has no live trial, then ask for all waiting ones."""
        live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
        present = {t.user_attrs.get(st.KEY) for t in study.get_trials(deepcopy=False, states=live)}
        for params in self.spec.grid_points():
            key = self._key(self.spec.trial_spec(params), 0)
            if key not in present:
                study.enqueue_trial(params, user_attrs={st.KEY: key})
                present.add(key)
        waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        return [self._ask_one(study) for _ in range(waiting)]

    def _ask_one(self, study: optuna.Study) -> Pending:
        trial = study.ask(self.spec.distributions())
        spec = self.spec.trial_spec(trial.params)
        key = trial.user_attrs.get(st.KEY)
        if key is None:
            key = self._key(spec, trial.number)
            trial.set_user_attr(st.KEY, key)
        elif key != self._key(spec, trial.number):
            raise AssertionError(f"trial {trial.number}: key {key} does not match its params")
        return Pending(trial.number, trial._trial_id, spec, key)

    def _ask_more(self, study: optuna.Study, n: int) -> list[Pending]:
        """Non-grid samplers: ask up to n more trials, never past n_trials."""
        counts = st.study_counts(study)
        room = self.spec.n_trials_planned - counts.complete - counts.running - counts.waiting
        return [self._ask_one(study) for _ in range(max(0, min(n, room)))]

    # -- results -------------------------------------------------------------------------

    def _tell(self, study: optuna.Study, number: int, trial_id: int, result: TrialResult) -> None:
        outcome = (
            "diverged" if result.diverged else "converged" if result.converged else "censored"
        )
        st.set_trial_attr(study, trial_id, st.RESULT, result.to_json())
        st.set_trial_attr(study, trial_id, st.OUTCOME, outcome)
        value = self.spec.score(
            {
                "converged_epoch": result.converged_epoch,
                "diverged_epoch": result.diverged_epoch,
                "best_val_loss": result.best_val_loss,
            }
        )
        study.tell(number, value)

    def _log(self, key: str, number: int, result: TrialResult) -> None:
        if self.tracker is None:
            return
        try:
            self.tracker.log_trial(key, number, result, self._tags())
        except TrackingError as exc:
            self._tracking_down(exc)
            return
        assert self.outcome is not None
        self.outcome.logged += 1

    def _backfill(self, study: optuna.Study) -> None:
        """Log every complete trial that has no finished MLflow run (exactly once)."""
        if self.tracker is None:
            return
        try:
            logged = self.tracker.logged_trials()
        except TrackingError as exc:
            self._tracking_down(exc)
            return
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            key = t.user_attrs.get(st.KEY)
            result = st.stored_result(t)
            if key and result is not None and key not in logged:
                self._log(key, t.number, result)
                if self.tracker is None:
                    return

    # -- the loop ------------------------------------------------------------------------

    @contextmanager
    def _locked(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> Iterator[None]:
        lock = st.DriverLock(study, storage)
        lock.acquire()
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(HEARTBEAT_SECONDS):
                try:
                    lock.beat()
                except Exception:  # a missed heartbeat is retried on the next beat
                    continue

        thread = threading.Thread(target=beat, name="initstudy-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=HEARTBEAT_SECONDS)
            lock.release()

    def run(self) -> StudyOutcome:
        """Run the study until every planned trial is complete (or failed for good)."""
        storage, study = self._open()
        self.outcome = StudyOutcome(self.name, st.study_counts(study))
        with self._locked(study, storage):
            self._open_tracker()
            self._backfill(study)
            pending = self._recover(study)
            if self.spec.is_grid:
                pending += self._ask_grid(study)
            self.reporter.start(self.name, st.study_counts(study))
            try:
                self._execute(study, pending)
            finally:
                self.reporter.stop()
            self._backfill(study)
            self.outcome.counts = st.study_counts(study)
            if self.tracker is not None and self.outcome.counts.remaining == 0:
                try:
                    self.tracker.close_study()
                except TrackingError as exc:
                    self._tracking_down(exc)
        return self.outcome

    def sync(self) -> StudyOutcome:
        """Log every complete trial that MLflow is missing; train nothing."""
        storage, study = self._open()
        self.outcome = StudyOutcome(self.name, st.study_counts(study))
        with self._locked(study, storage):
            self._open_tracker()
            self._backfill(study)
            self.outcome.counts = st.study_counts(study)
        return self.outcome

    def _execute(self, study: optuna.Study, pending: list[Pending]) -> None:
        assert self.outcome is not None
        counts = st.study_counts(study)
        if not pending and (self.spec.is_grid or counts.remaining == 0):
            return
        opts = self.options
        executor = RayExecutor(opts.address, opts.workers)
        try:
            resources = Resources(cpus=opts.cpus_per_trial, gpus=opts.gpus_per_trial)
            slots = executor.capacity(resources)
            # Sampled studies are asked in batches, so the sampler learns as results come in.
            batch = slots * (opts.pack_size or SAMPLED_PACK)
            if not self.spec.is_grid:
                pending += self._ask_more(study, batch)
            size = opts.pack_size or auto_pack_size(len(pending), slots)
            queue = make_packs(pending, size)
            in_flight: dict[int, list[Pending]] = {}
            next_id = 0
            while queue or in_flight:
                while queue and len(in_flight) < slots:
                    pack = queue.pop(0)
                    executor.submit(next_id, [p.spec for p in pack], resources)
                    in_flight[next_id] = pack
                    next_id += 1
                for pack_id, out in executor.wait(timeout=0.5):
                    self._finish(study, in_flight.pop(pack_id), out)
                    if not self.spec.is_grid and not queue:
                        queue += make_packs(self._ask_more(study, batch), size)
                self.reporter.update(st.study_counts(study))
        finally:
            executor.shutdown()

    def _finish(
        self, study: optuna.Study, pack: list[Pending], out: list[TrialResult] | PackFailed
    ) -> None:
        assert self.outcome is not None
        if isinstance(out, PackFailed):
            for p in pack:
                st.set_trial_attr(study, p.trial_id, st.ERROR, str(out))
                study.tell(p.number, state=TrialState.FAIL)
                self.outcome.failed.append(f"trial {p.number}: {out}")
            return
        for p, result in zip(pack, out, strict=True):
            self._tell(study, p.number, p.trial_id, result)
            self.outcome.trained += 1
            self._log(p.key, p.number, result)
