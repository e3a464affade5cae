"""``lmcli train``: set up a run directory (or reopen one to resume), train, print the summary.

A run directory ``<workspace>/runs/<name>`` holds::

    config.toml      the resolved config (defaults, ``extends`` and ``--set`` applied)
    metrics.jsonl    train / eval / final_eval rows (see ``metrics``)
    train.log        what the run printed
    latest.pt        the newest checkpoint (resume from here), best.pt (lowest validation loss),
                     step-NNNNNN.pt when ``training.keep_interval`` is set

Everything the run reads is checked before the directory is created, so a bad config or
bad data leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.table import Table

from lmcli.atomic import atomic_open
from lmcli.console import console
from lmcli.errors import LmcliError
from lmcli.training.checkpoint import LATEST, read_checkpoint
from lmcli.training.config import TrainConfig, load_config, resolve_config_path
from lmcli.training.data import load_training_data
from lmcli.training.device import setup_runtime
from lmcli.training.loop import train
from lmcli.training.metrics import RunLog, require_wandb
from lmcli.workspace import RUN_CONFIG_FILE as CONFIG_FILE
from lmcli.workspace import Workspace

WANDB_PROJECT = "lmcli"


def run_training(
    config_path: str | None,
    overrides: list[str],
    resume: str | None,
    name: str | None,
    device: str | None,
    workspace: Path | None,
    wandb: bool = False,
    quiet: bool = False,
    as_json: bool = False,
    on_step: Callable[[int], None] | None = None,
    show_summary: bool = True,
) -> dict[str, Any]:
    """Start (``config_path``) or continue (``resume``) a run; prints (unless not ``show_summary``: the
    sweep prints its own table) and returns its summary."""
    if (config_path is None) == (resume is None):
        raise LmcliError("give either --config (start a run) or --resume RUN_DIR (continue one)")
    workspace = Workspace.resolve(workspace)
    if device is not None:
        overrides = [*overrides, f"system.device={device}"]
    if resume is not None:
        run_dir = find_run(resume, workspace)
        config = load_config(run_dir / CONFIG_FILE, overrides)
        checkpoint = read_checkpoint(run_dir / LATEST)
        check_resumable(config, checkpoint, run_dir)
    else:
        path = resolve_config_path(config_path)
        config = load_config(path, overrides)
        run_dir = workspace.runs_dir / (name or f"{path.stem}-{time.strftime('%Y%m%d-%H%M%S')}")
        if run_dir.exists():
            raise LmcliError(f"run directory {run_dir} already exists (choose another --name, or --resume it)")
        checkpoint = None

    wandb_module = require_wandb() if wandb else None
    runtime = setup_runtime(config.system.device, config.system.compile, config.system.autocast, config.training.peak_flops)
    quiet = quiet or as_json
    data = load_training_data(
        workspace.path(config.data.train), workspace.path(config.data.valid), workspace.path(config.data.tokenizer),
        config.model.vocab_size, config.model.context_length, quiet,
    )
    if checkpoint is not None and checkpoint["tokenizer"]["fingerprint"] != data.tokenizer_fingerprint:
        raise LmcliError(f"the tokenizer in {data.tokenizer_dir} is not the one {run_dir} was trained with")

    run_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(run_dir, resume_step=checkpoint["iteration"] if checkpoint else None, quiet=quiet)
    try:
        with atomic_open(run_dir / CONFIG_FILE, encoding="utf-8") as f:
            f.write(config.to_toml())
        if wandb_module is not None:
            log.wandb_run = wandb_module.init(project=WANDB_PROJECT, name=run_dir.name, config=config.to_dict())
        summary = train(config, data, run_dir, runtime, log, resume=checkpoint, on_step=on_step, quiet=quiet)
    finally:
        log.close()
    if show_summary:
        print_summary(summary, as_json)
    return summary


def find_run(resume: str, workspace: Workspace) -> Path:
    """A run directory given as a path or as a name under the workspace's runs/."""
    for candidate in (Path(resume).expanduser(), workspace.runs_dir / resume):
        if (candidate / CONFIG_FILE).is_file():
            if not (candidate / LATEST).is_file():
                raise LmcliError(f"{candidate} has no checkpoint yet ({LATEST}): start it again instead")
            return candidate
    raise LmcliError(f"no run directory {resume} (looked for {CONFIG_FILE} there and in {workspace.runs_dir})")


def check_resumable(config: TrainConfig, checkpoint: dict[str, Any], run_dir: Path) -> None:
    """A resumed run may train longer or differently, but not with another model, and must have steps left."""
    if checkpoint.get("model_config") != dataclasses.asdict(config.model):
        raise LmcliError(f"[model] differs from the model checkpointed in {run_dir}; a resumed run cannot change it")
    done = checkpoint["iteration"]
    if done >= config.max_steps:
        raise LmcliError(
            f"{run_dir} already finished its {config.max_steps:,} steps; to train longer, resume with "
            f"--set training.max_steps=N (N > {done:,})"
        )


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in summary.items()}))
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
