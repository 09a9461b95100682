"""The study driver: Optuna asks, an executor (Ray) trains, the driver tells and logs.

Only the driver writes to the Optuna storage and to MLflow; workers only return
results. The loop, in order, for every trial:

1. the trial exists in Optuna with its identity key before any work is sent
   (a grid point's trial is created RUNNING with its params and key in one call;
   a sampled trial is asked, then keyed);
2. its pack trains on a Ray worker (retried by Ray if the worker dies), streaming its
   members' epochs: their MLflow child runs exist from the pack's start and get their
   metrics as they train, and Optuna gets intermediate values (:mod:`pipeline.live`);
3. the full TrialResult is stored on the trial, then the trial is told its value;
4. the trial's MLflow child run, keyed, is completed exactly once.

Ctrl-C: the first stops submitting and lets the running packs finish, the second stops
them too; a finished pack's trials are told and kept, the rest are left for a resume.

Resume: at start the driver takes the study's lock, then reruns trials left RUNNING by a
driver that died (same parameters; a stored result is told without retraining), creates
trials for the grid points that have none yet, and back-fills MLflow runs that are
missing. Nothing is run or logged twice.

Storage outages: every storage call is retried while the database is unreachable, for up
to ``studystore.STORAGE_RETRY_SECONDS``; training goes on meanwhile, and a retried write
that may have landed is not repeated (see :mod:`pipeline.studystore`). How trials are
packed and ordered is :mod:`pipeline.plan`; where packs train, :mod:`pipeline.execution`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from models.spec import TrialResult, TrialSpec
from pipeline import plan, urls
from pipeline import storage as st
from pipeline.disk import check_space
from pipeline.execution import (
    Epochs,
    Executor,
    PackFailed,
    PackResult,
    RayExecutor,
    Resources,
    Started,
    Trained,
)
from pipeline.faults import failpoint
from pipeline.gridwindow import GridWindow
from pipeline.live import Abandoned, Interrupts, Live
from pipeline.plan import Pending
from pipeline.progress import Reporter
from pipeline.resources import check_address, check_embedded
from pipeline.samplerspec import REPLICATE, replicate_seed, without_replicate
from pipeline.space import Choice, Range
from pipeline.studylog import StudyLog
from pipeline.studyspec import StudySpec
from pipeline.studystore import StoredTrial, StudyStore
from pipeline.version import code_version


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
    dashboard_port: int | None = None
    """Start the embedded Ray's dashboard on 127.0.0.1 at this port (None: none)."""
    offline_tracking: bool = False
    """Run without MLflow (``--offline-tracking``): nothing is logged; ``initstudy sync``
    logs the results later. Without it, MLflow unreachable at start refuses the run."""

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
class StudyOutcome:
    """What a run of the driver did."""

    study_name: str
    counts: st.StudyCounts
    trained: int = 0
    logged: int = 0
    failed: list[str] = field(default_factory=list)
    tracking_error: str | None = None
    interrupted: str | None = None
    """Ctrl-C: "finished" (the running packs were let finish) or "stopped" (they were
    stopped too); SIGTERM: "terminated" (stopped at once); None: not interrupted."""
    unfinished: int = 0
    """Trials this driver had taken and left unfinished (interrupted), for a resume."""


_ONE_RUN = threading.Lock()
"""Held by the driver that runs a study in this process: Ray is one per process, so a
second :meth:`Driver.run` (another thread of a notebook) is refused, not let tear it down."""
_RUNNING: list[str] = []
"""The study that holds :data:`_ONE_RUN` (for the refusal's message)."""


def _one_study_at_a_time(
    run: Callable[[Driver], StudyOutcome],
) -> Callable[[Driver], StudyOutcome]:
    """:meth:`Driver.run` holding :data:`_ONE_RUN`, refused at once (before anything is
    touched) when another study holds it: ``storage.StudyBusy``, one line naming it."""

    @functools.wraps(run)
    def one(driver: Driver) -> StudyOutcome:
        if not _ONE_RUN.acquire(blocking=False):
            other = _RUNNING[0] if _RUNNING else "another study"
            raise st.StudyBusy(
                f"study {driver.name!r} not started: study {other!r} is running in this "
                "process (another thread), and a process runs one study at a time (Ray is one "
                "per process); wait for it to end, or run this study in another process"
            )
        _RUNNING[:] = [driver.name]
        try:
            return run(driver)
        finally:
            _RUNNING.clear()
            _ONE_RUN.release()

    return one


def _connected(make: Callable[[], Executor], address: str | None) -> Executor:
    """``make()``, Ray's ConnectionError (no cluster found for ``auto``, or one lost while
    connecting) made one line."""
    try:
        return make()
    except ConnectionError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
        raise st.StudyError(f"--address: {address}: {first}") from None


CTRL_C_WAIT = 0.5
"""Seconds a Ctrl-C that came before any trial finished waits for MLflow to be ready (a
new store's migrations take seconds); after that the run ends without it: this run has
nothing to log, and the next run back-fills what any earlier one left."""


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

    def join(self, reraise: bool = True, within: float | None = None) -> bool:
        """Wait for the function (at most ``within`` seconds): whether it has ended."""
        if self._joined:
            return True
        self._thread.join(within)
        if self._thread.is_alive():
            return False
        self._joined = True
        if self._error is not None and reraise:
            raise self._error
        return True


def _trained(text: str) -> Trained:
    """A result stored on a trial, with its text (stored and logged as it is)."""
    return Trained(TrialResult.from_json(text), text)


def run_tags(spec: StudySpec, name: str, version: str) -> dict[str, str]:
    """Tags of every MLflow run a driver of this study makes."""
    return {
        "initstudy.study": name,
        "initstudy.spec_hash": spec.spec_hash(),
        "initstudy.claim_hash": spec.claim_hash(),
        "initstudy.claim": spec.claim or "",
        "initstudy.code_version": version,
        **({st.STAGE: spec.stage} if spec.stage is not None else {}),
    }


def open_store(
    spec: StudySpec, spec_text: str, options: RunOptions, name: str, note: Callable[[str], None]
) -> StudyStore:
    """Open or create the study's Optuna store (an empty or corrupt ``mlflow.db`` is
    refused first, so nothing is written beside it)."""
    db = urls.sqlite_file(options.tracking)
    if db is not None:
        st.check_store_file(db, "MLflow store")
    store = StudyStore.open(
        options.storage_url,
        name,
        spec_hash=spec.spec_hash(),
        spec_text=spec_text,
        planned=spec.n_trials_planned,
        claim=spec.claim,
        sampler=None if spec.is_grid else spec.make_sampler(),  # grids are never sampled
        sampler_seed=spec.sampler_seed,
        note=note,
    )
    # a stage of a tuned protocol (pipeline.protocolspec) pins what it is and its lrs
    store.pin_attrs({st.STAGE: spec.stage, st.CHOSEN_LR: spec.chosen_lr})
    return store


def open_tracker(d: Driver) -> None:
    """Find or create the study's MLflow experiment and parent run, with its params."""
    spec = d.spec
    params = {
        "study": d.name,
        "sampler": spec.sampler,
        "n_trials": str(spec.n_trials_planned),
        "objective": spec.objective.metric,
        "claim": d.claim,
    }
    d.log.open(d.spec_text, params)


def sampled_seed(seeds: object, number: int) -> int:
    """A sampled trial's seed: the study's seeds (a choice or a range) in turn, by number."""
    assert isinstance(seeds, Choice | Range)
    return replicate_seed(seeds if isinstance(seeds, Range) else seeds.choices, number)


class Driver:
    """Runs one study to completion (or resumes it).

    ``executor`` makes the executor the packs train on, once there is work (default: Ray,
    embedded or at ``options.address``); tests pass an in-process one.
    """

    def __init__(
        self,
        spec: StudySpec,
        spec_text: str,
        options: RunOptions,
        reporter: Reporter,
        executor: Callable[[], Executor] | None = None,
    ) -> None:
        self.spec = spec
        self.spec_text = spec_text
        self.options = options
        self.reporter = reporter
        self.workers = options.workers  # capped at the machine's CPUs by run()
        self.executor = executor or (
            lambda: RayExecutor(options.address, self.workers, None, options.dashboard_port)
        )
        self.name = options.study_name or spec.name
        self.claim = spec.claim or ""
        self.version = code_version()
        self.tags = run_tags(spec, self.name, self.version)
        self.log = StudyLog(
            self.name, options.tracking, options.artifact_location, self.tags, reporter.note
        )
        self.log.offline = options.offline_tracking
        self.interrupts = Interrupts()
        self.outcome: StudyOutcome | None = None
        self._claimed: set[int] = set()
        """Numbers of the RUNNING trials this driver has taken to run."""
        self._dists = without_replicate(spec.distributions())
        """What the sampler is given and each trial stores: never the seed's distribution."""
        self._seeds = spec.space.get(REPLICATE) if REPLICATE in spec.searched() else None
        """The study's seeds when it has several (each trial's an attribute), else None."""
        self._abandoned = threading.Event()
        """Set when a Ctrl-C ended the run without waiting for MLflow to be ready."""
        self._grid: GridWindow | None = None
        """A grid's points to create, as slots need them (None: a sampled study)."""
        self._live: st.StudyCounts | None = None
        """The study's counts kept up to date by this driver while it runs packs (read
        from the storage once, then moved on by each tell, so progress costs no reads)."""

    # -- setup -------------------------------------------------------------------------

    def _open(self) -> StudyStore:
        return open_store(self.spec, self.spec_text, self.options, self.name, self.reporter.note)

    def _key(self, spec: TrialSpec, number: int) -> str:
        """Grid trials are keyed by spec and claim; sampled ones also by number (may repeat)."""
        key = spec.key(self.claim)
        return key if self.spec.is_grid else f"{key}.{number}"

    # -- the trials to run ---------------------------------------------------------------

    def _recover(self, store: StudyStore) -> list[Pending]:
        """Trials left RUNNING by a dead driver: tell stored results, rerun the rest."""
        rerun = []
        for t in store.running():
            if self.interrupts.stopping:
                break  # the rest stay RUNNING, for the next run
            if t.result_json:
                self._tell(store, t.number, t.trial_id, _trained(t.result_json))
            else:
                rerun.append(self._take(store, t))
        return rerun

    def _take(self, store: StudyStore, t: StoredTrial) -> Pending:
        """Claim a RUNNING trial for this driver: its spec, key and seed (set if missing);
        the params an interrupted ask left out (a dead driver, a dropped connection) are
        drawn; a sampled trial's seed is its number's (:func:`samplerspec.replicate_seed`)."""
        params = {name: v for name, v in t.params.items() if name != REPLICATE}
        seed = t.params.get(REPLICATE)
        if set(params) != set(self._dists):
            params = store.finish_ask(t, self._dists)
            seed = params.pop(REPLICATE, seed)  # an enqueued one
        if self._seeds is not None:
            if seed is None:
                seed = sampled_seed(self._seeds, t.number)
            if REPLICATE not in t.params:
                store.set_seed(t.trial_id, seed)
            params[REPLICATE] = seed
        spec = self.spec.trial_spec(params)
        key = self._key(spec, t.number)
        if t.key is None:
            store.set_key(t.trial_id, key)
        elif t.key != key:
            raise AssertionError(f"trial {t.number}: key {t.key} does not match its params")
        self._claimed.add(t.number)
        return Pending(t.number, t.trial_id, spec, key)

    def _ask(self, store: StudyStore) -> list[Pending]:
        """Ask Optuna for one trial (an enqueued one first) and claim it; if the ask's
        reply was lost after it landed, claim the trial it left instead."""
        asked = store.ask(self._dists, self._claimed)
        return [self._take(store, asked)] if asked else self._take_unclaimed(store)

    def _take_unclaimed(self, store: StudyStore) -> list[Pending]:
        """Claim every RUNNING trial this driver has not claimed yet."""
        running = store.running()
        return [self._take(store, t) for t in running if t.number not in self._claimed]

    # -- results -------------------------------------------------------------------------

    def _tell(self, store: StudyStore, number: int, trial_id: int, trained: Trained) -> None:
        """Store the result on the trial (the worker's text), then tell the trial its value."""
        result = trained.result
        store.store_result(trial_id, trained.text, result.outcome)
        fields = ("converged_epoch", "diverged_epoch", "best_val_loss")
        value = self.spec.score({name: getattr(result, name) for name in fields})
        failpoint("driver.before_tell")  # a test hook; see pipeline/faults.py
        store.tell(number, trial_id, value, direct=self.spec.is_grid)
        if self._live is not None:
            self._live = self._live.after_tell(result.outcome)

    # -- the loop ------------------------------------------------------------------------

    @_one_study_at_a_time
    def run(self) -> StudyOutcome:
        """Run until every planned trial is complete (or failed) or Ctrl-C (``interrupted``).

        Raises:
            storage.StudyError: before anything is written: bad study, full disk, bad store.
            storage.StudyBusy: another driver runs this study, or another study runs here.
            storage.StorageUnavailable: the Optuna storage failed for good mid-study.
        """
        opts, self._started = self.options, time.time()
        check_address(opts.address)  # before any store is touched: refused, not a hang
        if opts.address is None:  # what this machine can place
            self.workers = check_embedded(opts, self.reporter.note)
        # a cluster is connected first: what it can never place is refused before any store
        self._cluster = connected = self._connect() if opts.address is not None else None
        try:
            if opts.storage is None or opts.tracking_uri is None:
                check_space(opts.run_dir)  # an embedded store is written there
            self.log.check()  # MLflow answers (or --offline-tracking), before any store
            with self.interrupts:  # from here a Ctrl-C is a flag: no store write is cut
                store = self._open()
                self.outcome = StudyOutcome(self.name, store.counts())
                with store.locked(), self.log.writing():
                    # MLflow (a new store runs its migrations) is made ready on a thread while this
                    # one prepares the trials and starts Ray; the first log waits for it.
                    tracking = _InBackground(lambda: self._prepare_tracking(store))
                    try:
                        pending = self._recover(store)
                        for failed in [] if self.spec.is_grid else store.failed():
                            store.retry(failed)  # asked again first (a grid recreates its points)
                        if self.spec.is_grid and not self.interrupts.stopping:
                            self._grid = GridWindow(self, store)
                            pending += self._grid.first(pending)
                        self.reporter.start(self.name, store.counts())
                        try:
                            self._execute(store, pending, tracking)
                        finally:
                            self.reporter.stop()
                    except BaseException:
                        tracking.join(reraise=False)  # the error in hand is the one to report
                        raise
                    self.outcome.counts = store.counts()
                    if tracking.join(within=None if self.outcome.trained else CTRL_C_WAIT):
                        if self.outcome.interrupted is None:  # else the next run's
                            self.log.backfill(store)
                        self.log.close(self.outcome.counts, self.outcome.interrupted is not None)
                    else:  # a Ctrl-C before any result: nothing to log, MLflow not waited for
                        self._abandoned.set()
        finally:
            if connected is not None:
                connected.shutdown()
        self.log.report_to(self.outcome)
        return self.outcome

    def _prepare_tracking(self, store: StudyStore) -> None:
        open_tracker(self)
        if self._abandoned.is_set():  # a Ctrl-C did not wait: write nothing more
            if self.log.tracker is not None:
                self.log.tracker.stop_writers(cancel=True)
            return
        self.log.backfill(store)

    def sync(self) -> StudyOutcome:
        """Log every complete trial that MLflow is missing; train nothing."""
        store = self._open()
        self.outcome = StudyOutcome(self.name, store.counts())
        with store.locked(), self.log.writing():
            open_tracker(self)
            self.log.backfill(store)
            self.outcome.counts = store.counts()
            self.log.close(self.outcome.counts, interrupted=False)  # reopened by open
        self.log.report_to(self.outcome)
        return self.outcome

    def _connect(self) -> Executor:
        """Connect to the cluster at ``--address``; refuse a pack it could never place."""
        executor = _connected(self.executor, self.options.address)
        try:
            executor.capacity(Resources(self.options.cpus_per_trial, self.options.gpus_per_trial))
        except BaseException as exc:
            executor.shutdown()
            raise st.StudyError(str(exc)) if isinstance(exc, ValueError) else exc from None
        return executor

    def _execute(self, store: StudyStore, pending: list[Pending], tracking: _InBackground) -> None:
        opts, grid, counts = self.options, self.spec.is_grid, store.counts()
        idle = self.interrupts.stopping or (not pending and (grid or counts.remaining == 0))
        if idle or (executor := started(self)) is None:  # a Ctrl-C may cut Ray's start
            self._interrupted(pending)
            return
        self._live = counts
        if url := getattr(executor, "dashboard_url", None):
            self.reporter.info(f"Ray dashboard: {url} (token {executor.token_hint})")  # type: ignore[attr-defined]
        try:
            resources = Resources(cpus=opts.cpus_per_trial, gpus=opts.gpus_per_trial)
            slots = executor.capacity(resources)
            session = {"started": self._started, "slots": slots, "cpus_per_trial": resources.cpus}
            store.record_session(session)  # for the report's efficiency figure
            if not grid:
                pending += ask_more(self, store, slots)
                self._live = store.counts()
            todo = max(len(pending), counts.remaining if grid else 0)  # a grid's: to create
            size, limit = plan.pack_sizes(opts.pack_size, todo, slots, resources.gpus > 0)
            queue = plan.make_packs(pending, size, limit)
            live = Live.watch(store, self.log, counts, pending)
            in_flight: dict[int, list[Pending]] = {}
            next_id = 0

            def submit() -> None:
                nonlocal next_id
                while queue and len(in_flight) < slots and not self.interrupts.stopping:
                    pack = queue.pop(0)
                    executor.submit(next_id, [p.spec for p in pack], resources)
                    in_flight[next_id] = pack
                    next_id += 1

            grid_left = lambda: self._grid is not None and self._grid.points is not None  # noqa: E731
            while (queue or in_flight or grid_left()) and not self.interrupts.stop_now:
                submit()
                if self._grid is not None and self._grid.points is not None:
                    queue += self._grid.top_up(queue, in_flight.values(), slots, size, limit, live)
                    submit()
                if not in_flight:
                    if self.interrupts.stopping or not (queue or grid_left()):
                        break  # stopping, and every running pack has finished
                    continue
                for pack_id, event in executor.wait(timeout=0.5):
                    tracking.join()
                    if isinstance(event, Started | Epochs):
                        live.news(pack_id, in_flight[pack_id], event)
                        continue
                    live.ended(pack_id, in_flight[pack_id])
                    self._finish(store, in_flight.pop(pack_id), event)
                    if not grid and not queue and not self.interrupts.stopping:
                        more = ask_more(self, store, slots - len(in_flight))
                        live.queued(more)
                        queue += plan.make_packs(more, size, limit)
                        self._live = store.counts()
                self._report(live, in_flight)
            store.record_session({**session, "ended": time.time()})
            self._interrupted([p for pack in [*queue, *in_flight.values()] for p in pack])
        finally:
            self._live = None
            if self._cluster is None:  # run() shuts a cluster's connection
                executor.shutdown()

    def _report(self, live: Live, in_flight: dict[int, list[Pending]]) -> None:
        """Move the progress display on; after a Ctrl-C, say what happens now."""
        assert self._live is not None
        live.announce(self.interrupts, self.reporter.note, in_flight)
        self.reporter.update(self._live, live.progress())

    def _interrupted(self, unfinished: list[Pending]) -> None:
        """Record a Ctrl-C in the outcome: whether packs were stopped, what is left."""
        assert self.outcome is not None
        if not self.interrupts.stopping:
            return
        self.interrupts.announce(self.reporter.note, 0, 0)  # what a Ctrl-C did, if unsaid
        self.outcome.interrupted = self.interrupts.how()
        self.outcome.unfinished = len(unfinished)

    def _finish(self, store: StudyStore, pack: list[Pending], out: PackResult) -> None:
        assert self.outcome is not None
        if isinstance(out, PackFailed):  # record why, and tell each trial FAIL
            for p in pack:
                store.store_error(p.trial_id, str(out))
                store.fail(p.number, p.trial_id)
                self._live = self._live.after_fail() if self._live else None
                self.outcome.failed.append(f"trial {p.number}: {out}")
            self.log.failed([p.key for p in pack])
            return
        for p, trained in zip(pack, out, strict=True):
            self._tell(store, p.number, p.trial_id, trained)
            self.outcome.trained += 1
            failpoint("driver.after_tell")  # a test hook; see pipeline/faults.py
            self.log.trial(p.key, p.number, trained)


def started(d: Driver) -> Executor | None:
    """The run's executor; None when a Ctrl-C or SIGTERM came while it started (Ray's
    start takes seconds; the signal cuts it short: ``pipeline.raysession.RayHost``)."""
    try:
        with d.interrupts.abortable():
            executor = d._cluster or d.executor()
    except Abandoned:
        return None
    d.interrupts.take_sigterm()  # back from Ray's, which ray.init on this thread installs
    return executor


def ask_more(d: Driver, store: StudyStore, free_slots: int) -> list[Pending]:
    """Non-grid samplers: ask as :func:`plan.sampled_batch` says, never past n_trials."""
    c = store.counts()
    room = d.spec.n_trials_planned - c.complete - c.running - c.waiting
    n = plan.sampled_batch(
        d.spec.startup_trials,
        c.complete,
        c.running + c.waiting,
        free_slots,
        d.options.pack_size,
    )
    return [p for _ in range(max(0, min(n, room))) for p in d._ask(store)]
