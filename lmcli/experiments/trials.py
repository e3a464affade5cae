"""Trials as processes: each trial is an ordinary ``lmcli train`` run, started in its own process.

A process per trial keeps trials apart: each has its own threads (on a CPU, ``cores / N`` of
them for N slots, through ``OMP_NUM_THREADS`` as for ``--nproc``), its own device (on GPUs,
``CUDA_VISIBLE_DEVICES`` shows a trial only the one it was given), and a trial's result does not
depend on what runs beside it. A trial that trains in K processes (``--nproc K``) takes K slots:
K GPUs, or K shares of the cores, so ``--parallel 8 --nproc 2`` runs four trials at once. The sweep follows a trial through the rows its run
appends to ``metrics.jsonl``, the file ``lmcli runs`` reads: the latest step, loss and speed for
the live view, and each evaluation's validation loss for the pruner. A trial is stopped as a
scheduler stops a run, with SIGTERM: it finishes its step, saves ``latest.pt`` and exits, so
``lmcli train --resume`` (or the sweep's retry) continues it.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmcli.errors import LmcliError
from lmcli.job import sigterm_when_parent_dies
from lmcli.parallel import available_cores
from lmcli.toml_config import read_toml
from lmcli.workspace import RUN_CONFIG_FILE, RUN_METRICS_FILE


@dataclass(frozen=True)
class Slot:
    """What one trial may use: its processes, the threads of each, and on GPUs one device per process."""

    threads: int  # per process
    gpus: tuple[int, ...] = ()
    processes: int = 1

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, self.gpus))
        return env


def slots(parallel: int, gpus: list[int], nproc: int = 1) -> list[Slot]:
    """What ``parallel`` slots make for trials of ``nproc`` processes each: one GPU per slot when
    there are GPUs (as many slots as GPUs at most), else a share of the cores per slot."""
    units = min(parallel, len(gpus)) if gpus else parallel
    if nproc > units:
        raise LmcliError(f"a trial of --nproc {nproc} needs {nproc} slots, and there are {units} "
                         f"({'GPUs' if gpus else '--parallel'}): raise --parallel or lower --nproc")
    threads = max(1, available_cores() // units)  # the cores this process may use (a SLURM or taskset share)
    return [Slot(threads, tuple(gpus[i * nproc:(i + 1) * nproc]), nproc) for i in range(units // nproc)]


def visible_gpus(device: str | None) -> list[int]:
    """The CUDA devices trials may be given (none for a CPU sweep)."""
    if device not in (None, "auto", "cuda"):
        return []
    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [int(i) for i in listed.split(",") if i.strip().isdigit()] if listed else list(range(torch.cuda.device_count()))
    return ids


@dataclass
class Progress:
    """What a trial's metrics.jsonl says so far."""

    step: int = 0
    max_steps: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    tokens: int = 0
    tokens_per_s: float | None = None
    evals: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss), in order

    def eta_s(self) -> float | None:
        if not (self.max_steps and self.tokens_per_s and self.step):
            return None
        return (self.max_steps - self.step) * (self.tokens / self.step) / self.tokens_per_s


class MetricsTail:
    """Reads the rows a run appends to its metrics.jsonl, whole lines only, as they come."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.offset = 0
        self.progress = Progress()

    def new_evals(self) -> list[tuple[int, float]]:
        """The evaluations written since the last call (and the progress updated with every new row)."""
        path = self.run_dir / RUN_METRICS_FILE
        if not path.is_file():
            return []
        with open(path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        evals = []
        for line in complete.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            evals += self.take(row)
        if self.progress.max_steps is None:
            self.progress.max_steps = read_max_steps(self.run_dir)
        return evals

    def take(self, row: dict[str, Any]) -> list[tuple[int, float]]:
        p = self.progress
        p.step = max(p.step, row.get("step") or 0)
        if row.get("kind") == "train":
            p.loss, p.tokens, p.tokens_per_s = row.get("loss"), row.get("tokens") or p.tokens, row.get("tokens_per_s")
        if row.get("kind") == "eval" and isinstance(row.get("val_loss"), (int, float)):
            p.val_loss = row["val_loss"]
            p.evals.append((row["step"], row["val_loss"]))
            return [(row["step"], row["val_loss"])]
        return []


def read_max_steps(run_dir: Path) -> int | None:
    """The run's last step, once its config.toml is written."""
    try:
        return int(read_toml(run_dir / RUN_CONFIG_FILE)["training"]["max_steps"])
    except (LmcliError, OSError, KeyError, TypeError, ValueError):  # not written yet
        return None


@dataclass
class TrialProcess:
    """One running trial: its Optuna trial, run, process and what its metrics say."""

    trial: Any
    run: str
    run_dir: Path
    slot: Slot
    process: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)
    stop_reason: str | None = None  # "pruned" or "interrupted" once it was asked to stop
    tail: MetricsTail = field(init=False)

    def __post_init__(self) -> None:
        self.tail = MetricsTail(self.run_dir)

    def stop(self, reason: str) -> None:
        """Ask the run to save its checkpoint and exit (SIGTERM, as a scheduler would)."""
        if self.stop_reason is None and self.process.poll() is None:
            self.stop_reason = reason
            self.process.send_signal(signal.SIGTERM)

    def error_line(self) -> str:
        """The last line the run printed that says what went wrong."""
        try:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return f"exit {self.process.returncode}"
        errors = [line for line in lines if line.startswith("error:")]
        return (errors or lines or [f"exit {self.process.returncode}"])[-1].removeprefix("error:").strip()


def remove_if_empty(directory: Path) -> None:
    try:
        directory.rmdir()
    except OSError:  # absent, or not empty (then ``lmcli train`` says what is in the way)
        pass


def start_trial(trial: Any, run: str, overrides: list[str], config: str, workspace: Path, slot: Slot,
                device: str | None, log_dir: Path, tensorboard: bool = False) -> TrialProcess:
    """Start ``lmcli train`` for a trial: a new run, or ``--resume`` of its run if an earlier try began it
    (from its checkpoint, or from step 0 if it was stopped before its first)."""
    run_dir = workspace / "runs" / run
    if (run_dir / RUN_CONFIG_FILE).is_file():
        command = ["train", "--resume", str(run_dir)]
    else:
        remove_if_empty(run_dir)  # made by a try that was killed at once: the new run takes the name
        command = ["train", "--config", config, "--name", run, *(a for o in overrides for a in ("--set", o))]
    if device is not None:
        command += ["--device", "cuda" if slot.gpus else device]
    if slot.processes > 1:
        command += ["--nproc", str(slot.processes)]
    command += [*(["--tensorboard"] if tensorboard else []), "--workspace", str(workspace), "--quiet"]
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{run}.log"
    # In the trial's process before it starts: SIGTERM when the sweep dies, even by kill -9. A trial
    # outliving its sweep would hold its run while the next sweep resumes it; SIGTERM makes it save
    # its checkpoint and exit. (Ctrl-C does not reach trials: they have their own session, and the
    # sweep stops them itself.)
    follow_sweep = functools.partial(sigterm_when_parent_dies, os.getpid())
    with open(log, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "lmcli", *command], stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, env=slot.environment(), start_new_session=True,
                                   preexec_fn=follow_sweep)
    return TrialProcess(trial, run, run_dir, slot, process, log)
