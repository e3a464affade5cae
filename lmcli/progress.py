"""How library code reports progress without printing anything itself.

Long work (reading a corpus, encoding files, scanning token ids, downloading, evaluating)
opens a task with ``progress.task(description, total, unit=...)`` and calls
``task.advance(n)`` as it goes; ``unit`` is ``"bytes"`` or ``"items"``. The library's default
is ``SILENT``, which ignores every call, so ``lmcli`` used from Python prints nothing; the
command layer passes ``lmcli.ui.progress.Bars``, which draws the same calls as progress bars
on stderr.
"""

from __future__ import annotations

from typing import Protocol


class ProgressTask(Protocol):
    def advance(self, amount: float = 1) -> None: ...

    def update(self, completed: float | None = None, total: float | None = None) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: float | None, completed: float = 0, unit: str = "items") -> ProgressTask: ...


class _Silent:
    """A Progress (and its tasks) that ignores everything."""

    def task(self, description: str, total: float | None, completed: float = 0, unit: str = "items") -> _Silent:
        return self

    def advance(self, amount: float = 1) -> None:
        pass

    def update(self, completed: float | None = None, total: float | None = None) -> None:
        pass


SILENT: Progress = _Silent()
