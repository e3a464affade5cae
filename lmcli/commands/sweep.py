"""``lmcli sweep``: train a grid of runs, one after another, with each run's live display; then the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from lmcli.experiments.sweep import RESULTS_FILE, GridPoint, SweepObserver, plan_sweep, run_sweep
from lmcli.json_output import dumps
from lmcli.ui.console import console, err_console, format_duration, format_value
from lmcli.ui.live import TrainDisplay
from lmcli.workspace import Workspace


def run(
    config: str, settings: list[str], name: str | None, device: str | None, workspace_path: Path | None,
    quiet: bool = False, as_json: bool = False,
) -> dict[str, Any]:
    """Run the grid, then print and return the results (table or JSON)."""
    workspace = Workspace.resolve(workspace_path)
    sweep = plan_sweep(config, settings, name, workspace)
    report = run_sweep(sweep, workspace, device, SweepDisplay(quiet or as_json))
    print_report(report, as_json)
    return report


class SweepDisplay(SweepObserver):
    def __init__(self, quiet: bool):
        self.quiet = quiet

    def run_display(self, index: int, total: int, point: GridPoint) -> TrainDisplay:
        if not self.quiet:
            err_console.rule(f"run {index}/{total}: {point.name}")
        return TrainDisplay(quiet=self.quiet)

    def run_done(self, index: int, total: int, result: dict[str, Any]) -> None:
        err_console.print(progress_line(index, total, result), highlight=False)

    def interrupted(self, results_path: Path) -> None:
        err_console.print(f"sweep interrupted: the results so far go to {results_path}", highlight=False)


def progress_line(i: int, total: int, result: dict[str, Any]) -> str:
    values = ", ".join(f"{k}={v}" for k, v in result["values"].items())
    loss = f", final val loss {result['final_val_loss']:.4f}" if result["final_val_loss"] is not None else ""
    return f"sweep {i}/{total} ({values}): {result['status']} after {result['steps']:,} steps{loss}"



def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(report))
        return
    table = Table(title=f"sweep {report['sweep']}" + ("" if report["complete"] else " (incomplete)"), title_justify="left")
    axes = list(report["grid"])
    for column in (*axes, "status", "steps", "final val loss", "best val loss", "wall time", "run"):
        table.add_column(column, justify="left" if column in ("status", "run") else "right")
    for r in report["runs"]:
        style = "bold green" if r["name"] == report["best"] else None
        table.add_row(*(r["values"][a] for a in axes), r["status"], f"{r['steps']:,}", format_value(r["final_val_loss"], ".4f"),
                      format_value(r["best_val_loss"], ".4f"), format_duration(r["elapsed_s"]), r["name"], style=style)
    console.print(table)
    if report["best"]:
        console.print(f"best: {report['best']}", highlight=False)
    for plot in report["plots"]:
        console.print(f"wrote {plot}", highlight=False)
    console.print(f"results: {Path(report['dir']) / RESULTS_FILE}", highlight=False)
