"""A grid study's trials, created as the driver's slots need them.

Creating every point of a large grid up front (100,000 cells: minutes of store writes
before the first pack) delays training and fills the store with RUNNING trials; the
window creates the first pack, then keeps at most :func:`pipeline.plan.grid_window`
trials created but unfinished. Exactly once is the driver's as before: a point's key is
looked up among the live trials (one query), and a trial is created with its key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from models.spec import TrialSpec
from pipeline import plan
from pipeline.plan import Pending
from pipeline.samplerspec import REPLICATE

if TYPE_CHECKING:
    from pipeline.driver import Driver
    from pipeline.live import Live
    from pipeline.studystore import StudyStore


class GridWindow:
    """A grid's trials, created as slots need them (a window, :func:`plan.grid_window`).

    The keys of the points that have a live trial are read once (one query); the other
    points are created in grid order (seeds fastest, so that a cell's replicates share a
    pack) and claimed for the driver. A Ctrl-C stops the creation between two trials.
    """

    def __init__(self, driver: Driver, store: StudyStore) -> None:
        self.driver, self.store = driver, store
        self.present = store.live_keys()
        grid = driver.spec.grid()
        names = sorted(grid, key=lambda name: name == REPLICATE)
        values = itertools.product(*(grid[name] for name in names))
        self.points: Iterator[dict[str, Any]] | None = (
            dict(zip(names, v, strict=True)) for v in values
        )
        """The points not looked at yet (None: every one has been)."""

    def first(self, pending: list[Pending]) -> list[Pending]:
        """The enqueued (WAITING) trials, and new ones up to one pack with ``pending``."""
        d = self.driver
        waiting = [p for _ in range(self.store.n_waiting()) for p in d._ask(self.store)]
        first = (d.options.pack_size or plan.MAX_AUTO_PACK) - len(pending) - len(waiting)
        return waiting + self.create(max(1, first))

    def top_up(
        self,
        queue: list[list[Pending]],
        in_flight: Iterable[list[Pending]],
        slots: int,
        size: int,
        limit: Callable[[TrialSpec], int] | None,
        live: Live,
    ) -> list[list[Pending]]:
        """New packs of ``size`` while fewer than the window's trials are unfinished
        (queued or training), at most one pack per slot at a time."""
        unfinished = sum(map(len, queue)) + sum(map(len, in_flight))
        room = min(plan.grid_window(slots, size) - unfinished, slots * size) // size * size
        more = self.create(room) if room > 0 else []
        live.queued(more)
        if self.driver._live is not None:
            self.driver._live = self.driver._live.after_create(len(more))
        return plan.make_packs(more, size, limit)

    def create(self, n: int) -> list[Pending]:
        """Create (RUNNING, claimed) the trials of up to ``n`` points with no live trial."""
        d, out = self.driver, list[Pending]()
        while len(out) < n and self.points is not None and not d.interrupts.stopping:
            params = next(self.points, None)
            if params is None:
                self.points = None
                break
            if not d.spec.trains(params):  # a tuning stage's ladder point it does not run
                continue
            spec = d.spec.trial_spec(params)
            key = d._key(spec, 0)
            if key in self.present:
                continue
            seed = params.pop(REPLICATE, None)
            created = self.store.create_running(params, d._dists, key, seed)
            self.present.add(key)
            if created is None:  # a retried creation had landed: take it as it is
                out += d._take_unclaimed(self.store)
                continue
            d._claimed.add(created[0])
            out.append(Pending(created[0], created[1], spec, key))
        return out
