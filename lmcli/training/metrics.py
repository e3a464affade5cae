"""What a run records in its directory: metrics.jsonl, train.log and, optionally, Weights & Biases.

- ``metrics.jsonl``: one JSON object per line, a ``train`` row every ``log_interval`` steps
  (step, tokens, seconds, lr, loss, grad norm, tokens/s, MFU) and an ``eval`` row at every
  evaluation (validation loss and perplexity). Plot it with anything that reads JSON lines.
- ``train.log``: the lines the run printed, for reading after the fact.
- Weights & Biases: the same rows, when ``--wandb`` is given and the package is installed.

``RunLog`` is a training observer (``lmcli.training.observers``). Rows are flushed as they are
written, so a crashed run's metrics are there up to the crash; on ``--resume`` rows past the
checkpoint's step are dropped (those steps are redone).
"""

from __future__ import annotations

import fcntl
import json
import math
import time
from pathlib import Path
from typing import Any

from lmcli.atomic import atomic_open
from lmcli.errors import LmcliError
from lmcli.training.observers import TrainObserver
from lmcli.workspace import RUN_LOG_FILE as LOG_FILE
from lmcli.workspace import RUN_METRICS_FILE as METRICS_FILE


def perplexity(loss: float) -> float:
    """exp(loss): the effective number of equally likely next tokens (inf where it overflows)."""
    return math.exp(loss) if loss < 700 else math.inf


class RunLog(TrainObserver):
    """Writes metrics.jsonl and train.log in the run directory, and mirrors rows to W&B.

    While it is open the run holds an exclusive lock on train.log: ``lmcli runs`` reads that
    as "running", and a second ``lmcli train --resume`` of the same run is refused. Resuming
    from step ``resume_step`` first drops the metrics rows of later steps.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.text = open(run_dir / LOG_FILE, "a", encoding="utf-8")
        try:
            fcntl.flock(self.text.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.text.close()
            raise LmcliError(f"{run_dir} is being trained by another process right now") from None
        if resume_step is not None:
            truncate_metrics(run_dir, resume_step)
        self.metrics = open(run_dir / METRICS_FILE, "a", encoding="utf-8")
        self.wandb_run = None

    def on_row(self, row: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.wandb_run is not None:
            kind = row["kind"]
            self.wandb_run.log({f"{kind}/{k}": v for k, v in row.items() if k not in ("kind", "step")}, step=row["step"])

    def on_note(self, message: str) -> None:
        self.text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.text.flush()

    def close(self) -> None:
        self.metrics.close()
        self.text.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop metrics rows after ``last_step`` (they belong to steps a resumed run repeats)."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return
    rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in rows if json.loads(line)["step"] <= last_step]
    with atomic_open(path, encoding="utf-8") as f:
        f.writelines(line + "\n" for line in kept)


def require_wandb():
    """The ``wandb`` module, or a clear error when the package is not installed."""
    try:
        import wandb  # an optional package: imported only for --wandb
    except ImportError:
        raise LmcliError("--wandb needs the wandb package: pip install wandb (then `wandb login`)") from None
    return wandb
