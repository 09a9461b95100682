"""The study driver: Optuna asks, Ray trains, the driver tells and logs.

Only the driver writes to the Optuna storage and to MLflow; workers only return
results. The loop, in order, for every trial:

1. the trial exists in Optuna with its identity key before any work is sent
   (a grid point's trial is created RUNNING with its params and key in one call;
   a sampled trial is asked, then keyed);
2. its pack trains on a Ray worker (retried by Ray if the worker dies);
3. the full TrialResult is stored on the trial, then the trial is told its value;
4. the trial is logged as one MLflow child run, keyed, exactly once.

Resume: at start the driver takes the study's lock, then reruns trials left RUNNING by a
driver that died (same parameters; a stored result is told without retraining), creates
trials for the grid points that have none yet, and back-fills MLflow runs that are
missing. Nothing is run or logged twice.

Storage outages: every storage call the driver makes is retried with backoff while the
database is unreachable (a PostgreSQL restart, a locked SQLite file), for up to
``STORAGE_RETRY_SECONDS``; training goes on meanwhile. A retried write that may have
landed before the connection dropped is checked first: a trial already told is not told
again, a grid point's trial is not created twice, and a trial that an
interrupted ask left RUNNING is taken over rather than asked anew.
"""

from __future__ import annotations

import functools
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.trial import TrialState

from models.cells import get_cell
from models.spec import TrialResult, TrialSpec
from pipeline import retry, urls
from pipeline import storage as st
from pipeline.execution import PackFailed, RayExecutor, Resources
from pipeline.faults import failpoint
from pipeline.progress import Reporter
from pipeline.studyspec import StudySpec
from pipeline.tracking import Tracker, TrackingError

MAX_AUTO_PACK = 16
"""Largest pack the driver forms on its own (``--pack-size`` overrides)."""
PACK_WORK_BUDGET = 128e6
"""Multiply-adds of one batch (all time steps, all members) a CPU pack may cost when the
driver picks the pack size. Packing pays while each member's step is small: on a 2-core
CPU (``benchmarks/packing.py``, rnn_tanh, batch 32), 16 members run 5.2x faster than one
by one at hidden 64 and length 10, 3.3x at length 50, but 1.5x at hidden 256 and length
10 and nothing (0.96x, 655 MiB) at hidden 256 and length 50. The budget keeps the first
two at 16 and makes the last two 6 and 1. Not applied to GPU packs (not measured)."""
SAMPLED_PACK = 4
"""Trials asked per slot at a time for sampled (non-grid) studies."""
HEARTBEAT_SECONDS = 5.0
MIN_FREE_BYTES = 64 * 2**20
"""Free space the run folder must have before a study with an embedded store starts."""
STORAGE_RETRY_SECONDS = 60.0
"""How long a storage call is retried while the database is unreachable."""
STORAGE_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
"""Seconds between retries of a storage call (the last one repeats)."""

_T = TypeVar("_T")


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
        return self.storage or urls.default_storage_url(self.run_dir)

    @property
    def tracking(self) -> str:
        return self.tracking_uri or urls.default_tracking_uri(self.run_dir)

    @property
    def artifact_location(self) -> str | None:
        """Local artifact folder for the embedded store; a server keeps its own."""
        if self.tracking_uri is None:
            return urls.default_artifact_location(self.run_dir)
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


def make_packs(
    pending: Sequence[Pending],
    pack_size: int,
    limit: Callable[[TrialSpec], int] | None = None,
) -> list[list[Pending]]:
    """Group trials by shape, split each group into near-equal packs of <= pack_size (and
    <= ``limit(spec)`` of the group's shape, if given), and order the packs longest first
    (by :func:`pack_cost`), so that the last packs to start are short ones and no slot
    idles long at the end of a study."""
    groups: dict[tuple[object, ...], list[Pending]] = {}
    for p in pending:
        groups.setdefault(p.spec.shape_key(), []).append(p)
    packs: list[list[Pending]] = []
    for members in groups.values():
        size = pack_size if limit is None else min(pack_size, limit(members[0].spec))
        n_packs = math.ceil(len(members) / max(1, size))
        # Consecutive runs of the grid, so neighbours (often one init, stopping at about
        # the same epoch) share a pack and it sheds them together: on the headline study
        # this took 193 s of pack time against 199 s with trials dealt round-robin.
        small, bigger = divmod(len(members), n_packs)  # `bigger` packs get one more
        start = 0
        for i in range(n_packs):
            end = start + small + (1 if i < bigger else 0)
            packs.append(members[start:end])
            start = end
    return sorted(packs, key=lambda pack: -pack_cost([p.spec for p in pack]))


def batch_work(spec: TrialSpec) -> float:
    """Multiply-adds of one member's forward pass over one batch: ``seq_len`` steps of the
    recurrent and input matrices of every gate (the input width counted as one)."""
    gates = get_cell(spec.cell).gates
    return float(spec.batch_size * spec.seq_len * gates * spec.hidden * (spec.hidden + 1))


def pack_cost(specs: Sequence[TrialSpec]) -> float:
    """A relative estimate of a pack's training time: its members' largest batch budget
    times the multiply-adds of one batch of all members."""
    s = specs[0]
    batches = max(t.max_epochs for t in specs) * s.batches_per_epoch
    return batches * len(specs) * batch_work(s)


def auto_pack_size(n_trials: int, slots: int) -> int:
    """Enough packs to keep every slot busy, each as large as that allows (<= 16)."""
    return max(1, min(MAX_AUTO_PACK, math.ceil(n_trials / max(1, slots))))


def pack_limit(spec: TrialSpec, gpu: bool = False) -> int:
    """The largest automatic pack for trials of this shape: on a CPU, as many members as
    :data:`PACK_WORK_BUDGET` allows (at least 1, at most :data:`MAX_AUTO_PACK`); on a
    GPU, :data:`MAX_AUTO_PACK`."""
    if gpu:
        return MAX_AUTO_PACK
    return max(1, min(MAX_AUTO_PACK, int(PACK_WORK_BUDGET // batch_work(spec))))


def _live_keys(study: optuna.Study) -> set[str | None]:
    """Keys of the trials that are complete, running or waiting."""
    live = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    return {t.user_attrs.get(st.KEY) for t in study.get_trials(deepcopy=False, states=live)}


def _unless_landed(write: Callable[[], object], landed: Callable[[], bool]) -> Callable[[], None]:
    """A write for :meth:`Driver._storage` that is not repeated if its failed try landed.

    The first call writes. A later call (a retry after a dropped connection, when the
    first try may have committed all the same) first asks ``landed()`` and writes only if
    it says no.
    """
    tried = False

    def attempt() -> None:
        nonlocal tried
        if tried and landed():
            return
        tried = True
        write()

    return attempt


class _InBackground:
    """Runs a function on a thread; :meth:`join` waits for it and re-raises its error."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self._error: BaseException | None = None
        self._joined = False

        def target() -> None:
            try:
                fn()
            except BaseException as exc:  # re-raised by join, in the caller's thread
                self._error = exc

        self._thread = threading.Thread(target=target, name="initstudy-prepare", daemon=True)
        self._thread.start()

    def join(self, reraise: bool = True) -> None:
        if self._joined:
            return
        self._thread.join()
        self._joined = True
        if self._error is not None and reraise:
            raise self._error


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
        self._claimed: set[int] = set()
        """Numbers of the RUNNING trials this driver has taken to run."""
        self._storage_down = False
        self._live: st.StudyCounts | None = None
        """The study's counts kept up to date by this driver while it runs packs (read
        from the storage once, then moved on by each tell, so progress costs no reads)."""

    # -- setup -------------------------------------------------------------------------

    def _open(self) -> tuple[optuna.storages.BaseStorage, optuna.Study]:
        storage = st.make_storage(self.options.storage_url)
        sampler = (
            optuna.samplers.RandomSampler(seed=self.spec.sampler_seed)
            if self.spec.is_grid  # grid trials are created directly; never sampled
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

    def _trials(self, study: optuna.Study, *states: TrialState) -> list[optuna.trial.FrozenTrial]:
        return self._storage(
            "read the trials", lambda: study.get_trials(deepcopy=False, states=states or None)
        )

    def _counts(self, study: optuna.Study) -> st.StudyCounts:
        return self._storage("count the trials", lambda: st.study_counts(study))

    def _recover(self, study: optuna.Study) -> list[Pending]:
        """Trials left RUNNING by a dead driver: tell stored results, rerun the rest."""
        rerun = []
        for t in self._trials(study, TrialState.RUNNING):
            result = st.stored_result(t)
            if result is not None:
                self._tell(study, t.number, t._trial_id, result)
                continue
            rerun.append(self._take(study, t))
        return rerun

    def _take(
        self, study: optuna.Study, t: optuna.trial.FrozenTrial | optuna.trial.Trial
    ) -> Pending:
        """Claim a RUNNING trial for this driver: its spec and key (set if missing).

        A trial whose ask was interrupted (a dead driver, a dropped connection) may lack
        some params; they are drawn now as the ask would have (enqueued values first).
        """
        distributions = self.spec.distributions()
        params = dict(t.params)
        if set(params) != set(distributions):

            def finish_ask() -> dict[str, object]:
                trial = optuna.trial.Trial(study, t._trial_id)
                return {name: trial._suggest(name, d) for name, d in distributions.items()}

            params = self._storage("finish an interrupted ask", finish_ask)
        spec = self.spec.trial_spec(params)
        key = t.user_attrs.get(st.KEY)
        if key is None:
            key = self._key(spec, t.number)
            self._storage(
                "set a trial's key", lambda: st.set_trial_attr(study, t._trial_id, st.KEY, key)
            )
        elif key != self._key(spec, t.number):
            raise AssertionError(f"trial {t.number}: key {key} does not match its params")
        self._claimed.add(t.number)
        return Pending(t.number, t._trial_id, spec, key)

    def _ask_grid(self, study: optuna.Study) -> list[Pending]:
        """Create a RUNNING trial for every grid point that has no live trial, and claim
        every RUNNING trial not claimed yet (plus any enqueued, WAITING ones).

        A grid point's trial is created in one storage call, with its parameters and key
        (what ``enqueue_trial`` then ``ask`` would leave, at a constant cost per trial:
        each ``ask`` scans the waiting trials, which made enqueueing a large grid
        quadratic in its size).
        """
        present = self._live_keys(study)
        distributions = self.spec.distributions()
        for params in self.spec.grid_points():
            key = self._key(self.spec.trial_spec(params), 0)
            if key not in present:
                self._create_running(study, params, distributions, key)
                present.add(key)
        pending = self._take_unclaimed(study)
        for _ in range(len(self._trials(study, TrialState.WAITING))):
            pending += self._ask(study)
        return pending

    def _live_keys(self, study: optuna.Study) -> set[str | None]:
        return self._storage("read the trials", lambda: _live_keys(study))

    def _create_running(
        self,
        study: optuna.Study,
        params: dict[str, object],
        distributions: dict[str, optuna.distributions.BaseDistribution],
        key: str,
    ) -> None:
        """Create one grid point's trial, RUNNING, with its params and key; a retry first
        checks that the failed try did not land."""
        template = optuna.trial.FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.now(),
            datetime_complete=None,
            params=params,
            distributions=distributions,
            user_attrs={st.KEY: key},
            system_attrs={},
            intermediate_values={},
            trial_id=-1,
        )
        self._storage(
            "create a grid trial",
            _unless_landed(
                lambda: study._storage.create_new_trial(study._study_id, template_trial=template),
                lambda: key in _live_keys(study),
            ),
        )

    def _ask(self, study: optuna.Study) -> list[Pending]:
        """Ask Optuna for one trial (an enqueued one first) and claim it.

        Returns the trials claimed: the one asked (none only if it was claimed already).
        """
        asked: list[optuna.trial.Trial] = []

        def unclaimed() -> bool:
            running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            return any(t.number not in self._claimed for t in running)

        # An ask that failed may still have created (or popped) its trial: if a RUNNING
        # trial nobody claimed exists, that ask landed and is not repeated. (This driver
        # holds the study's lock, so every RUNNING trial is its own.)
        self._storage(
            "ask for a trial",
            _unless_landed(lambda: asked.append(study.ask(self.spec.distributions())), unclaimed),
        )
        if asked:
            return [self._take(study, asked[0])]
        return self._take_unclaimed(study)

    def _take_unclaimed(self, study: optuna.Study) -> list[Pending]:
        """Claim every RUNNING trial this driver has not claimed yet."""
        return [
            self._take(study, t)
            for t in self._trials(study, TrialState.RUNNING)
            if t.number not in self._claimed
        ]

    def _ask_more(self, study: optuna.Study, n: int) -> list[Pending]:
        """Non-grid samplers: ask up to n more trials, never past n_trials."""
        counts = self._counts(study)
        room = self.spec.n_trials_planned - counts.complete - counts.running - counts.waiting
        pending = []
        for _ in range(max(0, min(n, room))):
            pending += self._ask(study)
        return pending

    # -- results -------------------------------------------------------------------------

    def _storage(self, what: str, call: Callable[[], _T]) -> _T:
        """Make one storage call; while the database is unreachable, retry it with backoff
        for up to ``STORAGE_RETRY_SECONDS``, with a warning when it fails and when it is back.

        ``call`` must be safe to repeat (reads, attribute writes) or guard itself
        (:func:`_unless_landed`).

        Raises:
            storage.StorageUnavailable: still unreachable after that long, or the database
                refused the call for good (a full disk, a read-only file).
        """
        deadline = time.monotonic() + STORAGE_RETRY_SECONDS
        delays = iter(STORAGE_RETRY_DELAYS)
        delay = STORAGE_RETRY_DELAYS[0]
        while True:
            try:
                value = call()
            except Exception as exc:
                failure = retry.database_error(exc)
                if failure is None:
                    raise
                cause = " ".join(str(getattr(failure, "orig", None) or failure).split())[:200]
                if not retry.is_transient(exc):
                    raise st.StorageUnavailable(
                        f"the Optuna storage {urls.redact(self.options.storage_url)} failed to "
                        f"{what}: {cause}"
                    ) from exc
                if time.monotonic() + delay > deadline:
                    raise st.StorageUnavailable(
                        f"the Optuna storage {urls.redact(self.options.storage_url)} is "
                        f"unreachable (failed to {what}: {cause}); finished trials are kept: "
                        "run the same command again to resume"
                    ) from exc
                if not self._storage_down:
                    self._storage_down = True
                    self.reporter.note(
                        f"the Optuna storage failed to {what} ({cause}); retrying for up to "
                        f"{STORAGE_RETRY_SECONDS:.0f} s"
                    )
                time.sleep(delay)
                delay = next(delays, delay)
                continue
            if self._storage_down:
                self._storage_down = False
                self.reporter.note("the Optuna storage is reachable again")
            return value

    def _tell(self, study: optuna.Study, number: int, trial_id: int, result: TrialResult) -> None:
        """Store the result on the trial, then tell the trial its value."""
        outcome = result.outcome
        text = result.to_json()
        self._storage(
            "store a result", lambda: st.set_trial_attr(study, trial_id, st.RESULT, text)
        )
        self._storage(
            "store an outcome", lambda: st.set_trial_attr(study, trial_id, st.OUTCOME, outcome)
        )
        value = self.spec.score(
            {
                "converged_epoch": result.converged_epoch,
                "diverged_epoch": result.diverged_epoch,
                "best_val_loss": result.best_val_loss,
            }
        )
        failpoint("driver.before_tell")  # a test hook; see pipeline/faults.py
        if self.spec.is_grid and math.isfinite(value):
            # A grid study never consults its sampler, so the tell is the state write
            # alone (study.tell also reads the trial back and calls the sampler's hook).
            storage = study._storage
            self._tell_once(
                study,
                number,
                trial_id,
                lambda: storage.set_trial_state_values(trial_id, TrialState.COMPLETE, [value]),
            )
        else:
            self._tell_once(study, number, trial_id, lambda: study.tell(number, value))
        if self._live is not None:
            self._live = self._live.after_tell(outcome)

    def _tell_once(
        self, study: optuna.Study, number: int, trial_id: int, tell: Callable[[], object]
    ) -> None:
        """Tell a trial, retried while the storage is down; a retry after a tell that did
        commit before the connection dropped finds the trial finished and tells nothing."""
        storage = study._storage

        def finished() -> bool:
            return storage.get_trial(trial_id).state.is_finished()

        self._storage(f"tell trial {number}", _unless_landed(tell, finished))

    def _fail(self, study: optuna.Study, p: Pending, error: PackFailed) -> None:
        """Record why the infrastructure failed a trial, and tell it FAIL."""
        assert self.outcome is not None
        self._storage(
            "store an error", lambda: st.set_trial_attr(study, p.trial_id, st.ERROR, str(error))
        )
        self._tell_once(
            study, p.number, p.trial_id, lambda: study.tell(p.number, state=TrialState.FAIL)
        )
        if self._live is not None:
            self._live = self._live.after_fail()
        self.outcome.failed.append(f"trial {p.number}: {error}")

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
        for t in self._trials(study, TrialState.COMPLETE):
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
            # A lock that cannot be released goes stale on its own (LOCK_STALE_SECONDS).
            with suppress(st.StorageUnavailable):
                self._storage("release the study's lock", lock.release)

    def check_space(self) -> None:
        """Refuse to start a study whose embedded stores would fill the disk.

        Raises:
            storage.StudyError: the run folder has less than ``MIN_FREE_BYTES`` free.
        """
        opts = self.options
        if opts.storage is not None and opts.tracking_uri is not None:
            return  # both stores are servers: nothing is written here
        folder = opts.run_dir.resolve()
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        free = shutil.disk_usage(folder).free
        if free < MIN_FREE_BYTES:
            raise st.StudyError(
                f"the run folder {str(opts.run_dir)!r} has {free / 2**20:.1f} MiB free on its "
                f"disk ({folder}); a study needs at least {MIN_FREE_BYTES // 2**20} MiB for "
                "its stores: free some space or choose another --run-dir"
            )

    def run(self) -> StudyOutcome:
        """Run the study until every planned trial is complete (or failed for good).

        Raises:
            storage.StudyError: the study cannot be opened as asked, or the run folder's
                disk is (nearly) full; checked before anything is written or started.
            storage.StudyBusy: another driver runs this study.
            storage.StorageUnavailable: the Optuna storage failed for good mid-study.
        """
        self.check_space()
        storage, study = self._open()
        self.outcome = StudyOutcome(self.name, self._counts(study))
        with self._locked(study, storage):
            # MLflow (creating a new store runs its migrations) is made ready on a thread
            # while this one prepares the trials and starts Ray; it is waited for before
            # the first trial is logged.
            tracking = _InBackground(lambda: self._prepare_tracking(study))
            try:
                pending = self._recover(study)
                if self.spec.is_grid:
                    pending += self._ask_grid(study)
                self.reporter.start(self.name, self._counts(study))
                try:
                    self._execute(study, pending, tracking)
                finally:
                    self.reporter.stop()
            except BaseException:
                tracking.join(reraise=False)  # the error in hand is the one to report
                raise
            tracking.join()
            self._backfill(study)
            self.outcome.counts = self._counts(study)
            if self.tracker is not None and self.outcome.counts.remaining == 0:
                try:
                    self.tracker.close_study()
                except TrackingError as exc:
                    self._tracking_down(exc)
        return self.outcome

    def _prepare_tracking(self, study: optuna.Study) -> None:
        self._open_tracker()
        self._backfill(study)

    def sync(self) -> StudyOutcome:
        """Log every complete trial that MLflow is missing; train nothing."""
        storage, study = self._open()
        self.outcome = StudyOutcome(self.name, self._counts(study))
        with self._locked(study, storage):
            self._open_tracker()
            self._backfill(study)
            self.outcome.counts = self._counts(study)
        return self.outcome

    def _execute(
        self, study: optuna.Study, pending: list[Pending], tracking: _InBackground
    ) -> None:
        assert self.outcome is not None
        counts = self._counts(study)
        if not pending and (self.spec.is_grid or counts.remaining == 0):
            return
        opts = self.options
        self._live = counts
        executor = RayExecutor(opts.address, opts.workers)
        try:
            resources = Resources(cpus=opts.cpus_per_trial, gpus=opts.gpus_per_trial)
            slots = executor.capacity(resources)
            # Sampled studies are asked in batches, so the sampler learns as results come in.
            batch = slots * (opts.pack_size or SAMPLED_PACK)
            if not self.spec.is_grid:
                pending += self._ask_more(study, batch)
                self._live = self._counts(study)
            limit: Callable[[TrialSpec], int] | None = None
            if opts.pack_size:
                size = opts.pack_size  # the user's size, for every shape
            else:
                size = auto_pack_size(len(pending), slots)
                limit = functools.partial(pack_limit, gpu=resources.gpus > 0)
            queue = make_packs(pending, size, limit)
            in_flight: dict[int, list[Pending]] = {}
            next_id = 0
            while queue or in_flight:
                while queue and len(in_flight) < slots:
                    pack = queue.pop(0)
                    executor.submit(next_id, [p.spec for p in pack], resources)
                    in_flight[next_id] = pack
                    next_id += 1
                for pack_id, out in executor.wait(timeout=0.5):
                    tracking.join()
                    self._finish(study, in_flight.pop(pack_id), out)
                    if not self.spec.is_grid and not queue:
                        queue += make_packs(self._ask_more(study, batch), size, limit)
                        self._live = self._counts(study)
                self.reporter.update(self._live)
        finally:
            self._live = None
            executor.shutdown()

    def _finish(
        self, study: optuna.Study, pack: list[Pending], out: list[TrialResult] | PackFailed
    ) -> None:
        assert self.outcome is not None
        if isinstance(out, PackFailed):
            for p in pack:
                self._fail(study, p, out)
            return
        for p, result in zip(pack, out, strict=True):
            self._tell(study, p.number, p.trial_id, result)
            self.outcome.trained += 1
            failpoint("driver.after_tell")  # a test hook; see pipeline/faults.py
            self._log(p.key, p.number, result)
