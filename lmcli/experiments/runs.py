"""What a run directory says about its run: config, metrics and status (what ``lmcli runs`` lists).

``lmcli train`` leaves in ``<workspace>/runs/<name>/`` a resolved ``config.toml``, a
``metrics.jsonl`` of rows (``train``: step, tokens, elapsed_s, lr, loss, grad_norm,
tokens_per_s; ``eval``: step, tokens, val_loss; ``final_eval``: the loss over the whole
validation file) and ``train.log``. Everything here is derived from those files alone, so it
works on runs copied from another machine, and nothing needs to be written at the end of a run
that a crash could prevent.

The status of a run is read from the last row the run wrote and from the lock a live run holds
on its ``train.log``:

    running      another process holds the lock on train.log
    finished     the last row is the ``final_eval`` of a complete run
    diverged     the last row is a ``diverged`` row (the loop stopped on a NaN/inf loss)
    interrupted  the last row is an ``interrupted`` row (Ctrl-C or SIGTERM; resumable)
    failed       the last row is a ``failed`` row: an error stopped it (its message is in the row)
    imported     its only row is the ``imported`` row of ``lmcli import``: weights to generate
                 with or to start a run from (``train --init-from``), not a run to resume
    resumable    no final row: the process died (killed, out of memory) and ``lmcli train
                 --resume`` continues it (from latest.pt, or from the start if it had none)
    damaged      its config.toml or metrics.jsonl cannot be read; the problem is shown
"""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError
from lmcli.json_output import finite_or_none
from lmcli.toml_config import read_toml
from lmcli.training.config import config_from_dict
from lmcli.training.metrics import read_metrics
from lmcli.workspace import RUN_CONFIG_FILE as CONFIG_FILE
from lmcli.workspace import RUN_LOG_FILE as LOG_FILE
from lmcli.workspace import RUN_METRICS_FILE as METRICS_FILE
from lmcli.workspace import Workspace, is_locked

TERMINAL_STATUS = {"final_eval": "finished", "diverged": "diverged", "interrupted": "interrupted", "failed": "failed",
                   "imported": "imported"}


@dataclass
class Run:
    """One run directory, read once: its resolved config (nested tables) and metrics rows."""

    path: Path
    config: dict[str, dict[str, Any]]
    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "resumable"
    problem: str | None = None  # what is damaged in the directory, if anything

    @property
    def name(self) -> str:
        return self.path.name

    def series(self, kind: str, key: str) -> list[dict[str, Any]]:
        """Rows of one ``kind`` that carry ``key`` (e.g. every eval row's val_loss)."""
        return [r for r in self.rows if r.get("kind") == kind and r.get(key) is not None]

    @property
    def steps(self) -> int:
        return max((r["step"] for r in self.rows if "step" in r), default=0)

    @property
    def max_steps(self) -> int | None:
        """Steps the config asks for (max_steps, else total_tokens / tokens per step), if it is readable."""
        try:
            return config_from_dict(self.config, check=False).max_steps if self.config else None
        except (LmcliError, ZeroDivisionError):  # a config of an older lmcli, or one that never ran
            return None

    @property
    def best_val_loss(self) -> float | None:
        losses = [r["val_loss"] for r in self.series("eval", "val_loss") if math.isfinite(r["val_loss"])]
        return min(losses, default=None)

    @property
    def final_val_loss(self) -> float | None:
        final = self.series("final_eval", "val_loss")
        return final[-1]["val_loss"] if final else None

    @property
    def final_val_bpb(self) -> float | None:
        final = self.series("final_eval", "val_bpb")
        return final[-1]["val_bpb"] if final else None

    @property
    def final_val_by_source(self) -> dict[str, float]:
        """A mixture's final validation loss of each source (empty for one dataset)."""
        final = self.series("final_eval", "val_loss")
        prefix = "val_loss/"
        return {k[len(prefix):]: v for k, v in final[-1].items() if k.startswith(prefix)} if final else {}

    @property
    def tokens_per_s(self) -> float | None:
        """Median over the logged intervals: robust to the slow first steps and to evaluation pauses."""
        speeds = [r["tokens_per_s"] for r in self.series("train", "tokens_per_s")]
        return statistics.median(speeds) if speeds else None

    @property
    def elapsed_s(self) -> float | None:
        times = [r["elapsed_s"] for r in self.series("train", "elapsed_s")]
        return times[-1] if times else None

    def summary(self) -> dict[str, Any]:
        """The row of ``lmcli runs --json``."""
        return {
            "name": self.name,
            "path": str(self.path),
            "status": self.status,
            "steps": self.steps,
            "max_steps": self.max_steps,
            "best_val_loss": self.best_val_loss,
            "final_val_loss": finite_or_none(self.final_val_loss),
            "final_val_bpb": self.final_val_bpb,
            "final_val_by_source": self.final_val_by_source,
            "tokens_per_s": self.tokens_per_s,
            "elapsed_s": self.elapsed_s,
            "problem": self.problem,
        }


def is_run_dir(path: Path) -> bool:
    return path.is_dir() and ((path / CONFIG_FILE).is_file() or (path / METRICS_FILE).is_file())


def read_run(path: Path) -> Run:
    """Read a run directory (an LmcliError if it is not one). What is damaged in it (a config that
    is not TOML, lines of metrics that are not rows) makes its status "damaged", with the problem
    in ``Run.problem``; the rest of it is still read."""
    if not is_run_dir(path):
        raise LmcliError(f"{path} is not a run directory (it has no {CONFIG_FILE} or {METRICS_FILE})")
    problems = []
    config: dict[str, Any] = {}
    if (path / CONFIG_FILE).is_file():
        try:
            config = read_toml(path / CONFIG_FILE)
            config_from_dict(config, check=False)  # the resolved config lmcli wrote: keys and types must still check
        except LmcliError as e:
            problems.append(f"{path / CONFIG_FILE}: {e}" if str(path) not in str(e) else str(e))
    metrics = read_metrics(path / METRICS_FILE)
    if metrics.problem():
        problems.append(f"{path / METRICS_FILE}: {metrics.problem()}")
    status = "damaged" if problems else run_status(path, metrics.rows)
    return Run(path=path, config=config, rows=metrics.rows, status=status, problem="; ".join(problems) or None)


def run_status(path: Path, rows: list[dict[str, Any]]) -> str:
    if is_locked(path / LOG_FILE):
        return "running"
    terminal = TERMINAL_STATUS.get(rows[-1].get("kind")) if rows else None
    return terminal or "resumable"  # the process died (killed, out of memory) with steps left


def resolve_run(spec: str | os.PathLike, workspace: Workspace) -> Path:
    """A run given as a directory, or by name under the workspace's runs/."""
    for candidate in (Path(spec).expanduser(), workspace.runs_dir / str(spec)):
        if is_run_dir(candidate):
            return candidate
    raise LmcliError(f"no run {spec} (neither a run directory nor a run in {workspace.runs_dir})")


def workspace_runs(workspace: Workspace) -> list[Path]:
    """Every run directory under the workspace's runs/, oldest first."""
    if not workspace.runs_dir.is_dir():
        return []
    runs = [p for p in workspace.runs_dir.iterdir() if is_run_dir(p)]
    return sorted(runs, key=lambda p: (_created(p), p.name))


def _created(path: Path) -> float:
    marker = path / CONFIG_FILE if (path / CONFIG_FILE).is_file() else path / METRICS_FILE
    return marker.stat().st_mtime
