"""The shared rich consoles (results on stdout, everything else on stderr) and cell formatting."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def print_error(message: str) -> None:
    """``error: message`` on stderr, as one line (the message is not read as rich markup)."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def print_warning(message: str) -> None:
    err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)


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
