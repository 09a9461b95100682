"""Study efficiency: how close each driver run's wall time came to its own training time.

Every driver run records itself in the study attribute :data:`pipeline.storage.SESSIONS`:
``started`` (unix seconds at the entry of ``Driver.run``), ``slots`` (the packs it can
train at once, ``Executor.capacity``), ``cpus_per_trial`` and, once its last pack was
told, ``ended``. A run's packs are those whose start on the worker (``extra["started_at"]``)
lies in its ``[started, ended]``, give or take :data:`CLOCK_TOLERANCE_S`; members of a pack
share ``(node, started_at)`` and its training time (``pack_wall_seconds``), so each pack counts
once. Per run:

    wall = ended - started;  start-up = first pack's start - started
    floor = sum of its packs' training time / slots + start-up;  efficiency = wall / floor

(1.0x: no time lost besides start-up; the rest is the driver's own work, idle slots and the
tail where fewer packs than slots are left). No run is shorter than its longest pack, so
``max(longest pack, training / slots) + start-up`` is a tighter bound, given as a note. A
resumed study gets one figure per run, never one across them. A run without ``ended``
(still going, or it stopped without recording it) and a study stored by an initstudy that
recorded no runs are "not measured", with the reason.

Pure: no Optuna, MLflow or Ray; :func:`pipeline.results.load_efficiency` reads the stores.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from models.spec import TrialResult

__all__ = [
    "CLOCK_TOLERANCE_S",
    "DriverSession",
    "Efficiency",
    "Pack",
    "SessionEfficiency",
    "TrialTiming",
    "packs_of",
    "sessions_from_attr",
    "study_efficiency",
    "timings_from_results",
]

CLOCK_TOLERANCE_S = 1.0
"""How far a pack's start (the worker's clock) may lie outside its run's recorded span (the
driver's clock) and still belong to it."""


@dataclass(frozen=True)
class TrialTiming:
    """When one COMPLETE trial's pack trained, as its stored result says."""

    number: int
    wall_seconds: float
    """The pack's training time on the worker (every member of a pack has the same)."""
    pack_size: int = 1
    started_at: float | None = None
    """The pack's start on the worker, unix seconds; None: not stored (old results)."""
    node: str = ""


@dataclass(frozen=True)
class DriverSession:
    """One driver run, as the driver recorded it."""

    started: float
    ended: float | None = None
    """None: the run is still going, or it stopped without recording its end."""
    slots: int | None = None


@dataclass(frozen=True)
class Pack:
    """One pack: its members share ``(node, started_at)``."""

    node: str
    started_at: float
    seconds: float
    members: list[int]
    """Trial numbers of its COMPLETE members."""


@dataclass(frozen=True)
class SessionEfficiency:
    """One driver run's wall time against its floor (seconds; None: not known)."""

    index: int
    """1-based, in start order."""
    started: float
    ended: float | None
    slots: int | None
    trials: int
    packs: int
    training_seconds: float
    """Sum of its packs' training time (each pack once)."""
    longest_pack_seconds: float
    wall_seconds: float | None
    startup_seconds: float | None
    """From the run's start to its first pack's start on a worker."""
    floor_seconds: float | None
    """training / slots + start-up."""
    bound_seconds: float | None
    """max(longest pack, training / slots) + start-up."""
    ratio: float | None
    """wall / floor."""
    reason: str = ""
    """Why it is not measured ("" when it is)."""

    def line(self) -> str:
        if self.reason or self.ratio is None or self.startup_seconds is None:
            return f"not measured ({self.reason}); sum of pack training time {_total(self)}"
        slots = f"{self.slots} slot{'s' if self.slots != 1 else ''}"
        text = (
            f"Wall {self.wall_seconds:.1f} s; training floor"
            f" {self.training_seconds / (self.slots or 1):.1f} s (sum of pack training time"
            f" {_total(self)} / {slots}) + start-up {self.startup_seconds:.1f} s;"
            f" {self.ratio:.2f}x the floor; longest pack {self.longest_pack_seconds:.1f} s"
        )
        bound, wall = self.bound_seconds, self.wall_seconds
        if bound and wall is not None and bound > (self.floor_seconds or 0.0):
            text += f" (longest pack + start-up: {bound:.1f} s, {wall / bound:.2f}x that)"
        return text

    def brief(self) -> str:
        if self.reason or self.ratio is None:
            return f"run {self.index}: not measured ({self.reason})"
        return (
            f"run {self.index}: {self.trials} trials, wall {self.wall_seconds:.1f} s,"
            f" {self.ratio:.2f}x its floor"
        )


def _total(s: SessionEfficiency | Efficiency) -> str:
    return f"{s.training_seconds:.1f} s over {s.packs} pack{'s' if s.packs != 1 else ''}"


@dataclass(frozen=True)
class Efficiency:
    """A study's efficiency: one :class:`SessionEfficiency` per recorded driver run."""

    trials: int
    packs: int
    training_seconds: float
    """Sum over every pack of the study (each once), whatever the runs."""
    sessions: list[SessionEfficiency] = field(default_factory=list)
    reason: str = ""
    """Why no run is shown ("" when there are recorded runs)."""
    notes: list[str] = field(default_factory=list)
    """What the runs leave out (trials without a pack start, packs outside every run)."""

    @property
    def session(self) -> SessionEfficiency | None:
        """The latest run: the figure the study is shown with."""
        return self.sessions[-1] if self.sessions else None

    @property
    def measurable(self) -> bool:
        """Whether the latest run has a figure."""
        return self.session is not None and self.session.ratio is not None

    def line(self) -> str:
        """The report's footer line."""
        notes = "".join(f"; {n}" for n in self.notes)
        last = self.session
        if last is None:
            total = f"sum of pack training time {_total(self)}"
            return f"Study efficiency not measured: {self.reason}; {total}{notes}."
        if len(self.sessions) == 1:
            text = last.line() if self.measurable else f"Study efficiency {last.line()}"
            return f"{text}{notes}."
        earlier = "; ".join(s.brief() for s in self.sessions[:-1])
        return (
            f"Run {last.index} of {len(self.sessions)}: {last.line()}. Earlier {earlier}{notes}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "measurable": self.measurable, "line": self.line()}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def timings_from_results(rows: Iterable[tuple[int, TrialResult]]) -> list[TrialTiming]:
    """Timings from ``(trial number, result)`` of each COMPLETE trial."""
    out = []
    for number, result in rows:
        extra = result.extra or {}
        size = extra.get("pack_size", 1)
        out.append(
            TrialTiming(
                number=int(number),
                wall_seconds=result.pack_wall_seconds,  # the pack's, not the share
                pack_size=size if isinstance(size, int) and size >= 1 else 1,
                started_at=_number(extra.get("started_at")),
                node=str(result.node or ""),
            )
        )
    return out


def sessions_from_attr(value: Any) -> list[DriverSession]:
    """The driver's records (the :data:`~pipeline.storage.SESSIONS` attribute), in start
    order; a record without a numeric ``started`` is skipped, a bad ``slots`` or
    ``ended`` read as missing. None or not a list: no records."""
    out = []
    for item in value if isinstance(value, list) else []:
        started = _number(item.get("started")) if isinstance(item, dict) else None
        if started is None:
            continue
        slots = item.get("slots")
        out.append(
            DriverSession(
                started=started,
                ended=_number(item.get("ended")),
                slots=slots if isinstance(slots, int) and slots >= 1 else None,
            )
        )
    return sorted(out, key=lambda s: s.started)


def _seconds(t: TrialTiming) -> float:
    return t.wall_seconds if math.isfinite(t.wall_seconds) and t.wall_seconds > 0 else 0.0


def packs_of(timings: Sequence[TrialTiming]) -> list[Pack]:
    """The packs of the timings that carry a start, in start order (members grouped by
    ``(node, started_at)``; a pack's time is its members' largest ``wall_seconds``)."""
    groups: dict[tuple[str, float], list[TrialTiming]] = {}
    for t in timings:
        if t.started_at is not None:
            groups.setdefault((t.node, t.started_at), []).append(t)
    packs = [
        Pack(node, start, max(_seconds(m) for m in members), sorted(m.number for m in members))
        for (node, start), members in groups.items()
    ]
    return sorted(packs, key=lambda p: (p.started_at, p.node))


def _home(p: Pack, sessions: Sequence[DriverSession]) -> int | None:
    """The index of the run a pack started in: the latest one started by then (within the
    tolerance) whose end (or, without one, the next run's start) it is not after."""
    found = None
    for i, s in enumerate(sessions):
        if s.started - CLOCK_TOLERANCE_S > p.started_at:
            break
        end = s.ended
        if end is None:
            end = sessions[i + 1].started if i + 1 < len(sessions) else math.inf
        if p.started_at <= end + CLOCK_TOLERANCE_S:
            found = i
    return found


def _session(index: int, record: DriverSession, packs: list[Pack]) -> SessionEfficiency:
    reason = ""
    if record.ended is None:
        reason = "no recorded end: the run is still going, or it stopped without recording it"
    elif record.slots is None:
        reason = "no slot count recorded"
    elif not packs:
        reason = "no complete trial trained in it"
    training = sum(p.seconds for p in packs)
    longest = max((p.seconds for p in packs), default=0.0)
    startup = min(p.started_at for p in packs) - record.started if packs else None
    startup = None if startup is None else max(0.0, startup)
    wall = None if record.ended is None else max(0.0, record.ended - record.started)
    floor = bound = ratio = None
    if not reason and startup is not None and record.slots:
        floor = training / record.slots + startup
        bound = max(longest, training / record.slots) + startup
        ratio = wall / floor if wall is not None and floor > 0 else None
    trials = sum(len(p.members) for p in packs)
    return SessionEfficiency(
        index=index,
        started=record.started,
        ended=record.ended,
        slots=record.slots,
        trials=trials,
        packs=len(packs),
        training_seconds=training,
        longest_pack_seconds=longest,
        wall_seconds=wall,
        startup_seconds=startup,
        floor_seconds=floor,
        bound_seconds=bound,
        ratio=ratio,
        reason=reason,
    )


def study_efficiency(
    timings: Sequence[TrialTiming], sessions: Sequence[DriverSession] = ()
) -> Efficiency:
    """A study's efficiency from its COMPLETE trials' timings and the driver's records of
    its runs (:func:`sessions_from_attr`): one figure per run."""
    packs = packs_of(timings)
    unplaced = [t for t in timings if t.started_at is None]
    n_packs = len(packs) + math.ceil(sum(1 / t.pack_size for t in unplaced) - 1e-9)
    training = sum(p.seconds for p in packs) + sum(_seconds(t) / t.pack_size for t in unplaced)
    notes = (
        [f"{len(unplaced)} trial results without a pack start are in no run"] if unplaced else []
    )
    if not sessions:
        why = "no driver runs are recorded (a study stored by an older initstudy)"
        return Efficiency(len(timings), n_packs, training, [], why, notes)
    ordered = sorted(sessions, key=lambda s: s.started)
    members: list[list[Pack]] = [[] for _ in ordered]
    outside = 0
    for p in packs:
        home = _home(p, ordered)
        if home is None:
            outside += 1
        else:
            members[home].append(p)
    if outside:
        notes.append(f"{outside} packs started outside every recorded run")
    found = [_session(i + 1, s, m) for i, (s, m) in enumerate(zip(ordered, members, strict=True))]
    return Efficiency(len(timings), n_packs, training, found, "", notes)
