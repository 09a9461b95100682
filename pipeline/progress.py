"""Live progress of a study: a rich progress bar on a terminal, silence elsewhere.

The bar counts member-epochs against the study's epoch budget (every planned trial's
``max_epochs``; a trial that stopped early counts its whole budget once it ends), so it
moves while packs train and its ETA is the time the rest of the budget takes at the
current rate: an upper bound, since trials that converge stop early.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.safeout import term
from pipeline.storage import StudyCounts

if TYPE_CHECKING:
    from pipeline.live import LiveProgress


class Reporter:
    """Shows member-epochs done/budget, trials done/planned, how many train and how they
    ended so far, elapsed time and ETA.

    Quiet when the console is not a terminal (CI logs, pipes): then only ``note`` lines
    (warnings the user must see) are printed.
    """

    def __init__(self, console: Console | None = None, enabled: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.last: tuple[StudyCounts, LiveProgress | None] | None = None
        """What the last :meth:`update` showed (or would have, when quiet)."""

    def start(self, study: str, counts: StudyCounts) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            # a format string: braces in the name doubled, its markup escaped
            TextColumn(f"[bold]{term(study).replace('{', '{{').replace('}', '}}')}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs · {task.fields[trials]} trials"),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            study, total=None, trials=_trials(counts), detail=_detail(counts)
        )

    def update(self, counts: StudyCounts, live: LiveProgress | None = None) -> None:
        """Show the study's counts and, while packs train, their epochs."""
        self.last = (counts, live)
        if self._progress is None or self._task is None:
            return
        done, total = (live.epochs_done, live.epochs_total) if live else (None, None)
        self._progress.update(
            self._task,
            completed=done,
            total=total,
            trials=_trials(counts),
            detail=_detail(counts, live),
        )

    def info(self, message: str) -> None:
        """A line the user should see (where to look), progress bar or not."""
        self.console.print(term(message), highlight=False, soft_wrap=True)

    def note(self, message: str) -> None:
        """A warning the user must see, progress bar or not."""
        self.console.print(f"[yellow]warning:[/] {term(message)}", highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _trials(c: StudyCounts) -> str:
    return f"{c.complete}/{c.planned}"


def _detail(c: StudyCounts, live: LiveProgress | None = None) -> str:
    training = ""
    if live is not None and live.training:
        training = f"{live.training} training ({live.converged_so_far} at target) · "
    return (
        f"{training}[green]{c.converged} converged[/] {c.censored} censored "
        f"{c.stalled} stalled [red]{c.frozen} frozen {c.diverged} diverged[/] "
        f"{c.failed} failed"
    )
