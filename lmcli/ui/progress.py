"""Progress bars on stderr for the library's ``lmcli.progress`` calls."""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from lmcli.ui.console import err_console


class Bars:
    """A ``lmcli.progress.Progress`` drawn by rich: ``with Bars() as bars: work(progress=bars)``.

    A task in bytes shows done/total and MB/s, one in items n/total and the elapsed time; both
    show the ETA. ``quiet`` draws nothing (for ``--json`` and ``--quiet``). The display starts
    with the first task, so a command that fails before any work prints nothing but its error,
    and a failure during the work erases the bars, leaving the error alone.
    """

    def __init__(self, quiet: bool = False, embedded: bool = False):
        self.embedded = embedded  # drawn as part of another Live display (lmcli.ui.live), never on its own
        self.rich = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), _ByUnit(DownloadColumn(), MofNCompleteColumn()),
            _ByUnit(TransferSpeedColumn(), TimeElapsedColumn()), TimeRemainingColumn(),
            console=err_console, disable=quiet, transient=False,
        )

    def __enter__(self) -> Bars:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if not self.rich.live.is_started:
            return
        if exc_type is None:
            self.rich.stop()
            return
        # The work failed: its error line alone, no half-filled bars above it (a terminal erases
        # them; elsewhere, a log or a pipe, the final frame is not written at all).
        self.rich.live.transient = True
        console, quiet = self.rich.console, self.rich.console.quiet
        console.quiet = quiet or not console.is_terminal
        try:
            self.rich.stop()
        finally:
            console.quiet = quiet

    def task(self, description: str, total: float | None, completed: float = 0, unit: str = "items") -> _Task:
        if not (self.embedded or self.rich.live.is_started):
            self.rich.start()
        return _Task(self.rich, self.rich.add_task(description, total=total, completed=completed, unit=unit))


class _ByUnit(ProgressColumn):
    """One column for tasks in bytes, another for tasks in items."""

    def __init__(self, for_bytes: ProgressColumn, for_items: ProgressColumn):
        super().__init__()
        self.for_bytes, self.for_items = for_bytes, for_items

    def render(self, task) -> Text:
        return (self.for_bytes if task.fields.get("unit") == "bytes" else self.for_items).render(task)


class _Task:
    def __init__(self, rich: Progress, task_id: TaskID):
        self.rich, self.task_id = rich, task_id

    def advance(self, amount: float = 1) -> None:
        self.rich.advance(self.task_id, amount)

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        self.rich.update(self.task_id, completed=completed, total=total)
