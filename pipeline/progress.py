"""Live progress of a study: a rich progress bar on a terminal, silence elsewhere."""

from __future__ import annotations

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

from pipeline.storage import StudyCounts


class Reporter:
    """Shows trials done/total, converged, diverged, failed, elapsed time and ETA.

    Quiet when the console is not a terminal (CI logs, pipes): then only ``note`` lines
    (warnings the user must see) are printed.
    """

    def __init__(self, console: Console | None = None, enabled: bool | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.enabled = self.console.is_terminal if enabled is None else enabled
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def start(self, study: str, counts: StudyCounts) -> None:
        if not self.enabled:
            return
        self._progress = Progress(
            TextColumn(f"[bold]{study}[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            study, total=counts.planned, completed=counts.complete, detail=_detail(counts)
        )

    def update(self, counts: StudyCounts) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=counts.complete, detail=_detail(counts))

    def note(self, message: str) -> None:
        """A warning the user must see, progress bar or not."""
        self.console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _detail(c: StudyCounts) -> str:
    return (
        f"[green]{c.converged} converged[/] {c.censored} censored {c.stalled} stalled "
        f"[red]{c.frozen} frozen {c.diverged} diverged[/] {c.failed} failed"
    )
