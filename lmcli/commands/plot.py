"""``lmcli plot``: learning curves of runs, written as an image and/or drawn in the terminal."""

from __future__ import annotations

from pathlib import Path

from lmcli.experiments.plot import Curve, axis_labels, build_curves, gather_runs, save_figure
from lmcli.ui.braille import braille_plot
from lmcli.ui.console import console, err_console
from lmcli.workspace import Workspace


def run(specs: list[str], metric: str, x_axis: str, out: Path | None, terminal: bool, workspace: Path | None) -> Path | None:
    """Write the figure (unless only ``--terminal`` is asked) and/or draw it in the terminal."""
    runs = gather_runs(specs, Workspace.resolve(workspace))
    for damaged in (r for r in runs if r.problem):
        err_console.print(f"note: {damaged.name} is damaged: {damaged.problem}", highlight=False, markup=False)
    curves, left_out = build_curves(runs, metric, x_axis)
    for name in left_out:
        err_console.print(f"note: {name} has no {metric} points yet; left out", highlight=False)
    if terminal:
        console.print(terminal_figure(curves, metric, x_axis))
    if out is None and terminal:
        return None
    written = save_figure(curves, metric, x_axis, out or Path("curves.png"))
    console.print(f"wrote {written} ({len(curves)} run{'s' * (len(curves) != 1)}, {metric} vs {x_axis})", highlight=False)
    return written


def terminal_figure(curves: list[Curve], metric: str, x_axis: str):
    curves, x_label, y_label = axis_labels(curves, metric, x_axis)
    width = max(40, min(100, console.width - 14))
    return braille_plot([(c.label + (" [diverged]" if c.diverged else ""), c.xs, c.ys) for c in curves],
                        width=width, x_label=x_label, y_label=y_label)
