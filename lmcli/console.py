"""Shared rich console objects and the progress-bar layouts the commands use."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

console = Console()
err_console = Console(stderr=True)


def byte_progress(quiet: bool = False) -> Progress:
    """A progress bar over bytes: done/total, MB/s and ETA (reading, encoding, downloading)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )


def count_progress(quiet: bool = False) -> Progress:
    """A progress bar over a count of items (merges, steps): n/total, elapsed and ETA."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )


def format_value(value: float | None, spec: str) -> str:
    """A number for a table cell, or "-" when there is none yet."""
    return "-" if value is None else format(value, spec)


def format_duration(seconds: float | None) -> str:
    """``1:02:03`` / ``2:03`` / ``4.2s``: a wall time at a glance ("-" when unknown)."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"
