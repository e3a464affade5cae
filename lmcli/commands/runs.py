"""``lmcli runs``: the runs of the workspace as a table (or JSON)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from lmcli.experiments.runs import read_run, workspace_runs
from lmcli.json_output import dumps
from lmcli.ui.console import console, err_console, format_duration, format_value
from lmcli.workspace import Workspace

STATUS_STYLE = {
    "running": "cyan", "finished": "green", "diverged": "red", "interrupted": "yellow", "resumable": "yellow",
    "failed": "red", "damaged": "red", "imported": "blue",
}


def run(workspace_path: Path | None, as_json: bool) -> list[dict[str, Any]]:
    """Print (table or JSON) and return the summaries of the workspace's runs."""
    workspace = Workspace.resolve(workspace_path)
    summaries = [read_run(p).summary() for p in workspace_runs(workspace)]
    if as_json:
        print(dumps({"workspace": str(workspace.root), "runs": summaries}))
    elif not summaries:
        console.print(f"no runs in {workspace.runs_dir} (start one with `lmcli train --config ...`)", highlight=False)
    else:
        console.print(runs_table(summaries))
    for s in summaries:
        if s["problem"] and not as_json:
            err_console.print(f"note: {s['name']} is damaged: {s['problem']}", highlight=False, markup=False)
    return summaries


def runs_table(summaries: list[dict[str, Any]]) -> Table:
    table = Table(title_justify="left")
    for column in ("run", "status", "steps", "best val loss", "final val loss", "bits/byte", "tokens/s", "wall time"):
        table.add_column(column, justify="left" if column in ("run", "status") else "right")
    for s in summaries:
        steps = f"{s['steps']:,}" + (f"/{s['max_steps']:,}" if s["max_steps"] else "")
        table.add_row(
            s["name"], f"[{STATUS_STYLE[s['status']]}]{s['status']}", steps, format_value(s["best_val_loss"], ".4f"),
            format_value(s["final_val_loss"], ".4f"), format_value(s["final_val_bpb"], ".4f"), format_value(s["tokens_per_s"], ",.0f"),
            format_duration(s["elapsed_s"]),
        )
    return table
