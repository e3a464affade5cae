"""``lmcli train``: start or resume a run with a live display, then print its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from lmcli.json_output import dumps
from lmcli.training.run import RunSpec, run_training
from lmcli.ui.console import console
from lmcli.ui.live import TrainDisplay
from lmcli.workspace import Workspace


def run(
    config: str | None, overrides: list[str], resume: str | None, name: str | None, device: str | None,
    wandb: bool, quiet: bool, workspace: Path | None, as_json: bool,
) -> None:
    spec = RunSpec(config=config, resume=resume, overrides=tuple(overrides), name=name, device=device, wandb=wandb)
    with TrainDisplay(quiet=quiet or as_json) as display:
        summary = run_training(spec, Workspace.resolve(workspace), [display], progress=display)
    print_summary(summary, as_json)


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(summary))
        return
    table = Table(title="training finished", show_header=False, title_justify="left")
    table.add_row("run", summary["run_dir"])
    table.add_row("steps / tokens", f"{summary['steps']:,} / {summary['tokens']:,}")
    table.add_row("parameters", f"{summary['parameters']:,}")
    table.add_row("time", f"{summary['elapsed_s']:,.1f} s on {summary['device']}")
    table.add_row("train loss (last)", f"{summary['train_loss']:.4f}")
    table.add_row("validation loss", f"{summary['final_val_loss']:.4f} (perplexity {summary['final_val_perplexity']:.2f})")
    table.add_row("unigram entropy", f"{summary['unigram_entropy']:.4f} nats (context-free baseline)")
    table.add_row("checkpoints", f"{summary['checkpoint']}, {summary['best_checkpoint']}")
    console.print(table)
