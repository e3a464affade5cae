"""What a run records in its directory: metrics.jsonl, train.log and, optionally, Weights & Biases.

- ``metrics.jsonl``: one JSON object per line, a ``train`` row every ``log_interval`` steps
  (step, tokens, seconds, lr, loss, grad norm, tokens/s, MFU) and an ``eval`` row at every
  evaluation (validation loss and perplexity). Plot it with anything that reads JSON lines.
- ``train.log``: the lines the run printed, for reading after the fact.
- Weights & Biases: the same rows, when ``--wandb`` is given and the package is installed.
- TensorBoard: the same rows as scalars (``train/loss``, ``eval/val_loss``, ...) in event files in
  the run's ``tensorboard/`` folder, with ``--tensorboard`` (the ``tensorboard`` extra), for
  ``tensorboard --logdir workspace/runs``.

``RunLog`` is a training observer (``lmcli.training.observers``). Rows are flushed as they are
written, so a crashed run's metrics are there up to the crash; on ``--resume`` rows past the
checkpoint's step are dropped (those steps are redone).
"""

from __future__ import annotations

import fcntl
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmcli.atomic import atomic_open
from lmcli.errors import LmcliError
from lmcli.extras import optional_module
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
        self.text = open(run_dir / LOG_FILE, "a", encoding="utf-8", errors="replace")
        try:
            fcntl.flock(self.text.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.text.close()
            raise LmcliError(f"{run_dir} is being trained by another process right now") from None
        self.repair_note = truncate_metrics(run_dir, resume_step) if resume_step is not None else None
        self.metrics = open(run_dir / METRICS_FILE, "a", encoding="utf-8")
        self.wandb_run = None
        self.tensorboard = None  # a torch.utils.tensorboard SummaryWriter

    def on_row(self, row: dict[str, Any]) -> None:
        self.metrics.write(json.dumps(row) + "\n")
        self.metrics.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(scalars(row), step=row["step"])
        if self.tensorboard is not None:
            for tag, value in scalars(row).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.tensorboard.add_scalar(tag, value, row["step"])
            self.tensorboard.flush()

    def on_note(self, message: str) -> None:
        self.text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.text.flush()

    def close(self) -> None:
        self.metrics.close()
        self.text.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        if self.tensorboard is not None:
            self.tensorboard.close()


def scalars(row: dict[str, Any]) -> dict[str, Any]:
    """A metrics row as named values for a tracker: ``train/loss``, ``eval/val_loss``, ..."""
    return {f"{row['kind']}/{k}": v for k, v in row.items() if k not in ("kind", "step")}


NUMERIC_FIELDS = ("tokens", "elapsed_s", "lr", "loss", "grad_norm", "tokens_per_s", "mfu", "val_loss", "val_perplexity",
                  "val_bpb")


@dataclass
class MetricsFile:
    rows: list[dict[str, Any]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)  # 1-based numbers of the lines that are not rows
    cut_off: bool = False  # the last line is incomplete (a write that a kill interrupted)

    def problem(self) -> str | None:
        """What is wrong beyond a cut-off last line, for a note; None if nothing."""
        bad = [n for n in self.bad_lines if not (self.cut_off and n == self.bad_lines[-1])]
        if not bad:
            return None
        return f"{len(bad)} line(s) of {METRICS_FILE} are not metrics rows (line {bad[0]} first)"


def read_metrics(path: Path) -> MetricsFile:
    """The rows of a metrics.jsonl, and which lines were not rows (left out)."""
    found = MetricsFile()
    if not path.is_file():
        return found
    data = path.read_bytes()
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        row = _metrics_row(line)
        if row is None:
            found.bad_lines.append(number)
            found.cut_off = number == len(lines)  # no newline after it: the write never finished
        else:
            found.rows.append(row)
    return found


def _metrics_row(line: bytes) -> dict[str, Any] | None:
    """A line as a metrics row (a JSON object with a kind, a step and numbers where numbers go), else None."""
    try:
        row = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(row, dict) or not isinstance(row.get("kind"), str):
        return None
    step = row.get("step")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return None
    numbers_ok = all(
        row.get(k) is None or (isinstance(row[k], (int, float)) and not isinstance(row[k], bool)) for k in NUMERIC_FIELDS
    )
    return row if numbers_ok else None


def truncate_metrics(run_dir: Path, last_step: int) -> str | None:
    """Keep the metrics rows up to ``last_step`` (later ones belong to steps a resumed run repeats) and
    drop lines that are not rows; returns a note when there were such lines."""
    path = run_dir / METRICS_FILE
    found = read_metrics(path)
    if not path.is_file():
        return None
    with atomic_open(path, encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in found.rows if row["step"] <= last_step)
    if not found.bad_lines:
        return None
    what = "a cut-off last line" if found.problem() is None else found.problem()
    return f"{path}: dropped {what} (the checkpoint of step {last_step:,} is what the run continues from)"


def require_tensorboard() -> type:
    """torch's TensorBoard ``SummaryWriter``, or a clear error naming the extra when tensorboard is missing."""
    optional_module("tensorboard", "tensorboard", "--tensorboard")
    return optional_module("torch.utils.tensorboard", "tensorboard", "--tensorboard").SummaryWriter


def require_wandb():
    """The ``wandb`` module, or a clear error when the package is not installed."""
    try:
        import wandb  # an optional package: imported only for --wandb
    except ImportError:
        raise LmcliError("--wandb needs the wandb package: pip install wandb (then `wandb login`)") from None
    return wandb
