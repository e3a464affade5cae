"""``lmcli sweep``: run (or join, or resume) a sweep with a live view of its trials; then the table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table

from lmcli.experiments.sweep import RESULTS_FILE, SweepObserver, plan_sweep, run_sweep
from lmcli.experiments.trials import TrialProcess
from lmcli.json_output import dumps
from lmcli.ui.console import console, err_console, format_duration, format_value
from lmcli.ui.live import LiveView
from lmcli.workspace import Workspace


def run(
    config: str | None, settings: list[str], name: str | None, search: str, trials: int | None, prune: str,
    parallel: int, storage: str | None, resume: str | None, device: str | None, tensorboard: bool, workspace_path: Path | None,
    quiet: bool = False, as_json: bool = False, nproc: int = 1,
) -> dict[str, Any]:
    """Work on the sweep, then print and return the results (table or JSON)."""
    workspace = Workspace.resolve(workspace_path)
    plan = plan_sweep(config, settings or [], name, workspace, search, trials, prune, 0, storage, parallel, device, resume,
                      tensorboard, nproc)
    with SweepDisplay(quiet or as_json, as_json) as display:
        report = run_sweep(plan, display)
    print_report(report, as_json)
    return report


class SweepDisplay(LiveView, SweepObserver):
    """A live table of the running trials (on a terminal, unless quiet) and a line per finished trial."""

    def __init__(self, quiet: bool, silent: bool):
        super().__init__(quiet)
        self.silent = silent
        self.running: list[TrialProcess] = []
        self.done, self.total = 0, 0

    def update(self, running: list[TrialProcess], done: int, total: int) -> None:
        self.running, self.done, self.total = running, done, total

    def trial_done(self, row: dict[str, Any], done: int, total: int) -> None:
        self.done, self.total = done, total
        if not self.silent:
            err_console.print(progress_line(row, done, total), highlight=False)

    def interrupted(self, results_path: Path) -> None:
        err_console.print(f"sweep interrupted: trials saved their checkpoints; run the same command again to go on. "
                          f"Results so far: {results_path}", highlight=False)

    def render(self) -> Group:
        table = Table(title=f"sweep: {self.done}/{self.total} trials done, {len(self.running)} running", title_justify="left")
        for column in ("trial", "values", "step", "loss", "val loss", "tokens/s", "ETA"):
            table.add_column(column, justify="left" if column in ("trial", "values") else "right")
        for trial in self.running:
            p = trial.tail.progress
            values = ", ".join(f"{k.rsplit('.', 1)[-1]}={short(str(v))}" for k, v in trial.trial.params.items())
            step = f"{p.step:,}/{p.max_steps:,}" if p.max_steps else f"{p.step:,}"
            table.add_row(str(trial.trial.number), values, step, format_value(p.loss, ".4f"), format_value(p.val_loss, ".4f"),
                          format_value(p.tokens_per_s, ",.0f"), format_duration(p.eta_s()))
        return Group(table)


def short(value: str) -> str:
    """A long sampled number to 4 significant digits for the eye (sweep.json keeps it whole); the rest as written."""
    try:
        return f"{float(value):.4g}" if len(value) > 8 else value
    except ValueError:
        return value


def progress_line(row: dict[str, Any], done: int, total: int) -> str:
    values = ", ".join(f"{k}={short(v)}" for k, v in row["values"].items())
    loss = f", final val loss {row['final_val_loss']:.4f}" if row["final_val_loss"] is not None else ""
    return f"trial {row['trial']} ({values}): {row['status']} after {row['steps']:,} steps{loss} [{done}/{total}]"


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(report))
        return
    title = f"sweep {report['sweep']} ({report['search']}" + (f", pruning: {report['prune']}" if report["prune"] != "none" else "") + ")"
    table = Table(title=title + ("" if report["complete"] else " (incomplete)"), title_justify="left")
    axes = list(report["axes"])
    for column in ("trial", *axes, "status", "steps", "final val loss", "best val loss", "wall time", "run"):
        table.add_column(column, justify="left" if column in ("status", "run") else "right")
    for r in report["runs"]:
        style = "bold green" if r["name"] == report["best"] else None
        table.add_row(str(r["trial"]), *(short(r["values"].get(a, "")) for a in axes), r["status"], f"{r['steps']:,}",
                      format_value(r["final_val_loss"], ".4f"), format_value(r["best_val_loss"], ".4f"),
                      format_duration(r["elapsed_s"]), r["name"], style=style)
    console.print(table)
    if report["best"]:
        console.print(f"best: {report['best']}", highlight=False)
    if report["pruned"]:
        saved = report["tokens_saved_by_pruning"]
        share = saved / (saved + report["tokens_trained"]) if saved + report["tokens_trained"] else 0.0
        console.print(f"pruned {report['pruned']} trial(s), saving {saved:,} training tokens ({share:.0%} of the full budget)",
                      highlight=False)
    if report["importance"]:
        console.print("importance: " + ", ".join(f"{k} {v:.2f}" for k, v in report["importance"].items()), highlight=False)
    for plot in report["plots"]:
        console.print(f"wrote {plot}", highlight=False)
    console.print(f"results: {Path(report['dir']) / RESULTS_FILE}", highlight=False)
