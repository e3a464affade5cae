"""What a run records and shows: metrics.jsonl, the console log, a live panel, optional W&B.

- ``metrics.jsonl``: one JSON object per line, a ``train`` row every ``log_interval`` steps
  (step, tokens, seconds, lr, loss, grad norm, tokens/s, MFU) and an ``eval`` row at every
  evaluation (validation loss and perplexity). Plot it with anything that reads JSON lines.
- ``train.log``: the human-readable lines the run printed, for reading after the fact.
- the live panel (rich ``Live``, on stderr): step, losses, learning rate, speed and ETA.
- Weights & Biases: the same rows, when ``--wandb`` is given and the package is installed.

Rows are flushed as they are written, so a crashed run's metrics are there up to the crash;
on ``--resume`` rows past the checkpoint's step are dropped (those steps are redone).
"""

from __future__ import annotations

import fcntl
import json
import math
import time
from pathlib import Path
from typing import Any

from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table

from lmcli.atomic import atomic_open
from lmcli.console import err_console, format_duration, format_value
from lmcli.errors import LmcliError
from lmcli.workspace import RUN_LOG_FILE as LOG_FILE
from lmcli.workspace import RUN_METRICS_FILE as METRICS_FILE


def perplexity(loss: float) -> float:
    """exp(loss): the effective number of equally likely next tokens (inf where it overflows)."""
    return math.exp(loss) if loss < 700 else math.inf


class RunLog:
    """Writes metrics.jsonl and train.log in the run directory, mirrors rows to W&B, notes to stderr.

    While it is open the run holds an exclusive lock on train.log: ``lmcli runs`` reads that
    as "running", and a second ``lmcli train --resume`` of the same run is refused. Resuming
    from step ``resume_step`` first drops the metrics rows of later steps.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None, quiet: bool = False):
        self.text = open(run_dir / LOG_FILE, "a", encoding="utf-8")
        try:
            fcntl.flock(self.text.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.text.close()
            raise LmcliError(f"{run_dir} is being trained by another process right now") from None
        if resume_step is not None:
            truncate_metrics(run_dir, resume_step)
        self.metrics = open(run_dir / METRICS_FILE, "a", encoding="utf-8")
        self.quiet = quiet
        self.wandb_run = None

    def row(self, kind: str, **values: Any) -> None:
        record = {"kind": kind, **values}
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        if self.wandb_run is not None:
            self.wandb_run.log({f"{kind}/{k}": v for k, v in values.items() if k != "step"}, step=values["step"])

    def note(self, message: str) -> None:
        """A line for the user: printed on stderr (above the live panel) and kept in train.log."""
        self.text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        self.text.flush()
        if not self.quiet:
            err_console.print(message, highlight=False, soft_wrap=True)

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
        import wandb
    except ImportError:
        raise LmcliError("--wandb needs the wandb package: pip install wandb (then `wandb login`)") from None
    return wandb


class LivePanel:
    """A rich Live panel on stderr with the run's current numbers.

    Only on a terminal and when not quiet: redirected to a file, a live display would print
    nothing but its final frame, and the run's lines in train.log say more.
    """

    def __init__(self, total_steps: int, quiet: bool = False):
        self.total_steps = total_steps
        self.values: dict[str, Any] = {}
        live = not quiet and err_console.is_terminal
        self.live = Live(self._render(), console=err_console, refresh_per_second=4) if live else None

    def __enter__(self) -> LivePanel:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, **values: Any) -> None:
        self.values.update(values)
        if self.live is not None:
            self.live.update(self._render())

    def _render(self) -> Table:
        v = self.values
        step = v.get("step", 0)
        grid = Table.grid(padding=(0, 2))
        grid.add_row("[bold]step", f"{step:,}/{self.total_steps:,}", ProgressBar(total=self.total_steps, completed=step, width=40))
        grid.add_row("[bold]train loss", format_value(v.get("loss"), ".4f"), f"grad norm {format_value(v.get('grad_norm'), '.3f')}")
        grid.add_row("[bold]val loss", format_value(v.get("val_loss"), ".4f"), f"best {format_value(v.get('best_val_loss'), '.4f')}")
        grid.add_row("[bold]lr", format_value(v.get("lr"), ".2e"), "")
        grid.add_row("[bold]tokens/s", format_value(v.get("tokens_per_s"), ",.0f"), f"MFU {format_value(v.get('mfu'), '.1%')}")
        grid.add_row("[bold]elapsed", format_duration(v.get("elapsed")), f"ETA {format_duration(v.get('eta'))}")
        return grid

