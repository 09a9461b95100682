"""What the driver does with a pack's news while it trains, and Ctrl-C.

A pack streams :class:`~pipeline.execution.Started` as it begins and
:class:`~pipeline.execution.Epochs` (its members' epoch records, about once a second)
while it trains. The driver, still the only writer, passes them on:

- MLflow: each member's child run is created RUNNING when its pack starts (with the
  worker's start time), and the epochs' metrics are logged to it in one batch per message;
- Optuna: the last validation loss of each member in a message is its trial's
  intermediate value at that epoch (``trial.report``), so optuna-dashboard draws the
  curves as they grow (about one point per second of training; the whole curve is in the
  trial's result and in MLflow);
- the progress display: member-epochs done against the study's epoch budget, and how many
  trials are training and have converged so far.

Epoch records are idempotent: one the driver has seen (a retried pack streams its epochs
again) is skipped. A failure to log to MLflow stops live logging the way any tracking
failure does (the finished trials are back-filled later).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from models.spec import EpochRecord
from pipeline.execution import Epochs, Started
from pipeline.plan import Pending
from pipeline.storage import StudyCounts
from pipeline.studylog import StudyLog
from pipeline.studystore import StudyStore
from pipeline.tracking import TrackingError


@dataclass
class _Member:
    pending: Pending
    epochs: int = 0
    """The last epoch the driver has seen of it."""
    converged: bool = False
    diverged: bool = False


@dataclass(frozen=True)
class LiveProgress:
    """What the progress display shows besides the study's counts."""

    epochs_done: int
    """Member-epochs done: a finished trial counts its whole budget."""
    epochs_total: int
    """The study's budget: every planned trial's ``max_epochs``."""
    training: int
    """Trials whose pack has started and not ended."""
    converged_so_far: int
    """Of those, how many have reached their target already."""


@dataclass
class Live:
    """The packs in flight, as their news comes in.

    ``log`` is the driver's MLflow side (its tracker is None while MLflow is down, and
    ``log.down`` handles a failure), and ``nominal_epochs`` the budget of a planned trial
    the driver has not seen yet (a sampled study's future trials).
    """

    store: StudyStore
    log: StudyLog
    planned: int
    nominal_epochs: int
    done_before: int = 0
    """Trials finished before this driver started (complete or failed)."""
    _members: dict[int, list[_Member]] = field(default_factory=dict)
    _seen: dict[int, int] = field(default_factory=dict)
    """Trial number -> its max_epochs, for every trial this driver has queued."""
    _finished_epochs: int = 0
    _seen_epochs: int = 0
    """The sum of ``_seen``'s budgets, kept as trials are queued (progress reads no list)."""

    @classmethod
    def watch(
        cls,
        store: StudyStore,
        log: StudyLog,
        counts: StudyCounts,
        pending: Sequence[Pending],
    ) -> Live:
        """The live view of a run's packs, which will train ``pending`` first."""
        live = cls(
            store,
            log,
            planned=counts.planned,
            nominal_epochs=max((p.spec.max_epochs for p in pending), default=1),
            done_before=counts.complete + counts.failed,
        )
        live.queued(pending)
        return live

    def news(self, pack_id: int, pack: Sequence[Pending], event: Started | Epochs) -> None:
        """A pack's news: it started, or epochs of its members."""
        if isinstance(event, Started):
            self.started(pack_id, pack, event)
        else:
            self.epochs(pack_id, event)

    def queued(self, pack: Sequence[Pending]) -> None:
        """Trials this driver will train (their budgets replace the nominal one)."""
        for p in pack:
            self._seen_epochs += p.spec.max_epochs - self._seen.get(p.number, 0)
            self._seen[p.number] = p.spec.max_epochs

    def started(self, pack_id: int, pack: Sequence[Pending], event: Started) -> None:
        """A pack began: its members' MLflow runs are created RUNNING."""
        if pack_id in self._members:  # a retried pack starts again
            return
        self._members[pack_id] = [_Member(p) for p in pack]
        tracker = self.log.tracker
        if tracker is None:
            return
        items = [(p.key, p.number, p.spec) for p in pack]
        try:
            tracker.start_trials(items, self.log.tags, start_time=event.started_at)
        except TrackingError as exc:
            self.log.down(exc)

    def epochs(self, pack_id: int, event: Epochs) -> None:
        """Epoch records of a pack's members: MLflow metrics and Optuna intermediate values."""
        members = self._members.get(pack_id)
        if members is None:
            return
        fresh: dict[int, list[EpochRecord]] = {}
        for u in event.updates:
            member, epoch = members[u[0]], u[1]
            if epoch <= member.epochs:
                continue
            member.epochs = epoch
            member.converged = u[7] is not None
            member.diverged = u[8] is not None
            fresh.setdefault(u[0], []).append(EpochRecord(*u[1:7]))
        tracker = self.log.tracker
        for index, records in fresh.items():
            p, last = members[index].pending, records[-1]
            if math.isfinite(last.val_loss):
                self.store.report(p.trial_id, last.epoch, last.val_loss)
            if tracker is not None:
                try:
                    tracker.log_epochs(p.key, records)
                except TrackingError as exc:
                    self.log.down(exc)
                    tracker = None

    def ended(self, pack_id: int, pack: Sequence[Pending]) -> None:
        """A pack ended (results or failure): its trials count their whole budget."""
        self._members.pop(pack_id, None)
        self._finished_epochs += sum(p.spec.max_epochs for p in pack)

    @property
    def in_flight(self) -> list[Pending]:
        """The trials of the packs that have started and not ended."""
        return [m.pending for members in self._members.values() for m in members]

    def announce(
        self,
        interrupts: Interrupts,
        note: Callable[[str], None],
        in_flight: Mapping[int, Sequence[Pending]],
    ) -> None:
        """After a Ctrl-C, say what happens now, counting the running trials as the
        progress bar does (:attr:`LiveProgress.training`: the members of packs that have
        started); ``in_flight`` (the packs submitted) adds those not started yet."""
        training = self.progress().training
        submitted = sum(len(pack) for pack in in_flight.values())
        interrupts.announce(note, training, len(self._members), max(0, submitted - training))

    def progress(self) -> LiveProgress:
        members = [m for ms in self._members.values() for m in ms]
        unseen = max(0, self.planned - len(self._seen) - self.done_before)
        total = self._seen_epochs + (self.done_before + unseen) * self.nominal_epochs
        done = (
            self.done_before * self.nominal_epochs
            + self._finished_epochs
            + sum(m.epochs for m in members)
        )
        return LiveProgress(
            epochs_done=min(done, total),
            epochs_total=total,
            training=len(members),
            converged_so_far=sum(m.converged and not m.diverged for m in members),
        )


class Abandoned(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM during a step that only waits and writes no store (starting
    Ray): raised by :meth:`Interrupts.abortable` at once, instead of a flag read when the
    step has ended seconds later."""


class Interrupts:
    """Ctrl-C (SIGINT) while a study runs, in the main thread: the first sets
    :attr:`stopping` (submit nothing more, let running packs finish), the second
    :attr:`stop_now` (stop the running packs too); a third raises KeyboardInterrupt. The
    driver's loop reads the flags and says what it does: a signal handler only sets them,
    so no write to a store is ever cut in half. SIGTERM sets both flags and
    :attr:`terminated` (a second raises KeyboardInterrupt). Elsewhere than the main thread
    (where Python cannot take a signal) it does nothing. Inside :meth:`abortable` the
    first signal also raises :class:`Abandoned`."""

    def __init__(self) -> None:
        self.stopping = False
        self.stop_now = False
        self.terminated = False
        """SIGTERM came (a service manager, ``kill``): stop now, as a second Ctrl-C."""
        self._previous: Any = None
        self._previous_term: Any = None
        self._installed = False
        self._said = 0
        """How many of the Ctrl-Cs have been announced."""
        self._abortable = False

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._previous_term = signal.signal(signal.SIGTERM, self._terminate)
            self._installed = True
        return self

    def how(self) -> str:
        """How the run was interrupted: "terminated" (SIGTERM), "stopped" (Ctrl-C twice:
        the running packs stopped) or "finished" (once: they were let finish)."""
        return "terminated" if self.terminated else "stopped" if self.stop_now else "finished"

    @contextlib.contextmanager
    def abortable(self) -> Iterator[None]:
        """A step a signal may cut short (it writes no store; its own cleanup runs as the
        exception unwinds): a Ctrl-C or SIGTERM inside raises :class:`Abandoned` once, with
        the flags set as usual, and one that came just before raises it on entry."""
        if self.stopping:
            raise Abandoned
        self._abortable = True
        try:
            yield
        finally:
            self._abortable = False

    def _abandon(self) -> None:
        if self._abortable:
            self._abortable = False  # once: the step's cleanup is not cut in turn
            raise Abandoned

    def take_sigterm(self) -> None:
        """Handle SIGTERM here again: ``ray.init`` installs its own (a silent exit)."""
        if self._installed:
            signal.signal(signal.SIGTERM, self._terminate)

    def __exit__(self, *exc: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            signal.signal(signal.SIGTERM, self._previous_term)
            self._installed = False

    def announce(
        self, note: Callable[[str], None], trials: int, packs: int, waiting: int = 0
    ) -> None:
        """Say once, after each Ctrl-C, what it does (``trials`` in ``packs`` running, as
        the progress bar counts them, and ``waiting`` submitted but not started yet)."""
        if self.stopping and self._said == 0:
            self._said = 1
            if not self.stop_now:
                queued = f" and {waiting} submitted, not started yet" if waiting else ""
                note(
                    f"Ctrl-C: submitting no more trials; finishing {trials} running trials "
                    f"({packs} packs){queued}; Ctrl-C again to stop now"
                )
        if self.stop_now and self._said < 2:
            self._said = 2
            if self.terminated:
                note("SIGTERM: stopping the running trials now")
            else:
                note("Ctrl-C again: stopping the running trials now")

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if not self.stopping:
            self.stopping = True
        elif not self.stop_now:
            self.stop_now = True
        else:
            raise KeyboardInterrupt
        self._abandon()

    def _terminate(self, signum: int, frame: FrameType | None) -> None:
        if self.terminated:
            raise KeyboardInterrupt  # a second SIGTERM: the process must end
        self.terminated = self.stopping = self.stop_now = True
        self._said = max(self._said, 1)  # no "finishing the running trials" note
        self._abandon()
