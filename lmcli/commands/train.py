"""``lmcli train``: start or resume a run with a live display, then print its summary.

With ``--nproc N`` it checks the run and launches N worker processes (``lmcli.training.launch``),
each running this same command; under ``torchrun`` each process is such a worker. Only rank 0
shows the display and the summary, and a job's error is printed once, by the first rank that
reports one (the others, which only lost contact with it, exit quietly).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.table import Table

from lmcli.errors import LmcliError
from lmcli.job import INTERRUPTED, at_exit, exit_worker
from lmcli.json_output import dumps
from lmcli.training import distributed
from lmcli.training.config import resolve_config_path
from lmcli.training.distributed import World
from lmcli.training.launch import launch_local
from lmcli.training.run import RunSpec, prepare_run, run_training
from lmcli.ui.console import console, print_error
from lmcli.ui.live import TrainDisplay
from lmcli.workspace import Workspace

REPORT_WAIT_S = 10.0  # the longest a failed job's quiet rank waits for the reporting rank to print its error


def run(
    config: str | None, overrides: list[str], resume: str | None, name: str | None, device: str | None,
    wandb: bool, quiet: bool, workspace: Path | None, as_json: bool, nproc: int = 1, init_from: str | None = None,
    tensorboard: bool = False,
) -> None:
    spec = RunSpec(config=config, resume=resume, overrides=tuple(overrides), name=name, device=device, wandb=wandb,
                   init_from=init_from, tensorboard=tensorboard)
    world, ws = World.from_env(), Workspace.resolve(workspace)
    if nproc > 1:
        if world.size > 1:
            raise LmcliError("--nproc starts the worker processes itself: under torchrun, leave it out")
        launch(spec, ws, nproc, quiet, as_json)
        return
    with reported_once(world), TrainDisplay(quiet=quiet or as_json or not world.is_main) as display:
        summary = run_training(spec, ws, [display], progress=display, world=world)
    if world.is_main:
        print_summary(summary, as_json)


def launch(spec: RunSpec, workspace: Workspace, nproc: int, quiet: bool, as_json: bool) -> None:
    """Check the run here (a bad config is one error, not one per worker), then run ``nproc`` workers."""
    _, run_dir, _, _ = prepare_run(spec, workspace, World(size=nproc))
    args = ["train", "--workspace", str(workspace.root)]
    if spec.resume is not None:
        args += ["--resume", str(run_dir)]
    else:
        # the name fixed here, so workers agree on it; the config as a file they can read (a pipe is read here, once)
        args += ["--config", str(resolve_config_path(spec.config)), "--name", run_dir.name]
    for override in spec.overrides:
        args += ["--set", override]
    args += [*(["--device", spec.device] if spec.device else []), *(["--wandb"] if spec.wandb else []),
             *(["--tensorboard"] if spec.tensorboard else []),
             *(["--init-from", spec.init_from] if spec.init_from else []),
             *(["--quiet"] if quiet else []), *(["--json"] if as_json else [])]
    code = launch_local(nproc, args)
    if code == INTERRUPTED:  # the workers leave that message to the launcher
        print_error("interrupted")
        exit_worker(code)  # no interpreter teardown, where a late Ctrl-C would find the default handler
    if code:
        sys.exit(code)  # a worker that failed has printed why


@contextlib.contextmanager
def reported_once(world: World) -> Iterator[None]:
    """Let one rank of a job report its error (as every command does); the others exit with its code
    quietly once it has said it (the launcher stops every rank as soon as one exits)."""
    try:
        yield
    except BaseException as e:
        if world.size == 1 or isinstance(e, SystemExit):
            raise
        peer_reports = isinstance(e, distributed.PeerFailed)
        quiet = peer_reports or distributed.lost_peer(e)
        if distributed.active():
            if not quiet and distributed.first_to_report():
                at_exit(distributed.report_said)
                raise
        elif world.is_main and not quiet:  # before the ranks met: every rank checks the same things, rank 0 speaks
            raise
        if isinstance(e, KeyboardInterrupt):  # every rank got Ctrl-C: nothing to wait for
            sys.exit(INTERRUPTED)
        # Exiting now would have the launcher stop the reporting rank too, maybe before it has printed.
        # Until then, or until the launcher stops this rank, wait (at most REPORT_WAIT_S).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
        if distributed.active():
            distributed.wait_for_report(REPORT_WAIT_S, reporter_known=not quiet or peer_reports)
            sys.exit(1)
        time.sleep(REPORT_WAIT_S)  # no store yet: rank 0 checks the same things, speaks, and the launcher stops this rank
        raise  # still here: rank 0 did not fail in the same way, so this rank's error is the job's to show


def print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(summary))
        return
    table = Table(title="training finished", show_header=False, title_justify="left")
    table.add_row("run", summary["run_dir"])
    table.add_row("steps / tokens", f"{summary['steps']:,} / {summary['tokens']:,}")
    table.add_row("parameters", f"{summary['parameters']:,}")
    processes = f" x {summary['processes']} processes" if summary["processes"] > 1 else ""
    table.add_row("time", f"{summary['elapsed_s']:,.1f} s on {summary['device']}{processes}")
    table.add_row("train loss (last)", f"{summary['train_loss']:.4f}")
    bpb = f", {summary['final_val_bpb']:.4f} bits per byte" if summary.get("final_val_bpb") is not None else ""
    table.add_row("validation loss", f"{summary['final_val_loss']:.4f} (perplexity {summary['final_val_perplexity']:.2f}{bpb})")
    table.add_row("unigram entropy", f"{summary['unigram_entropy']:.4f} nats (context-free baseline)")
    table.add_row("checkpoints", f"{summary['checkpoint']}, {summary['best_checkpoint']}")
    console.print(table)
