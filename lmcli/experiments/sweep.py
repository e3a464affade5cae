"""``lmcli sweep``: train every point of a hyperparameter grid, one run after another, and compare them.

``--set section.key=v1,v2,...`` makes an axis of the grid (a single value is a fixed override
for every run); the grid is the cartesian product of the axes, in the order given::

    lmcli sweep --config demo --set optimizer.lr=1e-3,3e-3 --set training.batch_size=16,32

trains four runs, ``<sweep>-lr=1e-3-batch_size=16`` ... under the workspace's ``runs/``, each a
normal ``lmcli train`` run (same function, same directory layout). Commas inside brackets or
quotes do not split (``optimizer.betas=[0.9,0.95],[0.9,0.99]`` is two values).

Every grid point's config is loaded and checked before the first run starts, so a typo fails
in seconds rather than after an hour of training. A run that diverges (NaN/inf loss; the loop
records a ``diverged`` row and stops) or fails does not stop the sweep: the grid is meant to
find the edge of stability, so crossing it is an expected outcome. An error before a run
starts (missing data, say) would fail every run the same way, so it stops the sweep; Ctrl-C
stops it after saving the current run's checkpoint.

The sweep ends with a table of final and best validation losses, and writes into
``<workspace>/sweeps/<name>/`` a ``sweep.json`` of the results and the learning curves
(``val_loss.png``, ``train_loss.png``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli.atomic import atomic_open
from lmcli.errors import LmcliError
from lmcli.experiments.plot import build_curves, save_figure, short_keys
from lmcli.experiments.runs import Run, read_run
from lmcli.progress import SILENT
from lmcli.training.config import load_config, resolve_config_path
from lmcli.training.observers import TrainObserver
from lmcli.training.run import RunSpec, run_training
from lmcli.workspace import Workspace

SWEEPS_DIR = "sweeps"
RESULTS_FILE = "sweep.json"
PLOTS = ("val_loss", "train_loss")
BRACKETS = {"[": "]", "{": "}"}


@dataclass(frozen=True)
class GridPoint:
    name: str  # the run's directory name under runs/
    values: dict[str, str]  # axis key -> value text, as given on the command line

    def overrides(self, fixed: list[str]) -> list[str]:
        return [*fixed, *(f"{key}={value}" for key, value in self.values.items())]


@dataclass(frozen=True)
class Sweep:
    name: str
    dir: Path  # <workspace>/sweeps/<name>: sweep.json and the plots
    config: str
    fixed: list[str]  # overrides every run gets
    axes: dict[str, list[str]]
    points: list[GridPoint]


def split_values(text: str) -> list[str]:
    """Split a --set value on the commas that are not inside brackets, braces or quotes."""
    values, current, closers, quote = [], [], [], None
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in BRACKETS:
            closers.append(BRACKETS[ch])
        elif closers and ch == closers[-1]:
            closers.pop()
        elif ch == "," and not closers:
            values.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    values.append("".join(current).strip())
    if any(v == "" for v in values):
        raise LmcliError(f"--set value {text!r} has an empty item (write a,b,c)")
    return values


def parse_grid(settings: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """The ``--set`` options as (fixed overrides, grid axes ``key -> [values]``)."""
    fixed, axes = [], {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip()
        if not sep or "." not in key:
            raise LmcliError(f"--set {setting!r}: expected section.key=value[,value...], e.g. optimizer.lr=1e-3,3e-3")
        if key in axes or any(f.split("=", 1)[0].strip() == key for f in fixed):
            raise LmcliError(f"--set {key} is given twice (list all its values in one --set: {key}=a,b)")
        values = split_values(text)
        if len(values) == 1:
            fixed.append(f"{key}={values[0]}")
        else:
            axes[key] = values
    return fixed, axes


def grid_points(sweep: str, axes: dict[str, list[str]]) -> list[GridPoint]:
    """Every combination of the axes, named ``<sweep>-<key>=<value>-...`` (a key's last part when unambiguous)."""
    labels = short_keys(list(axes))
    points = []
    for combo in itertools.product(*axes.values()):
        values = dict(zip(axes, combo))
        parts = [f"{labels[key]}={safe_name(value)}" for key, value in values.items()]
        points.append(GridPoint(name="-".join([sweep, *parts]), values=values))
    return points


def safe_name(text: str) -> str:
    """A value as a file-name fragment: characters other than letters, digits and ``.+-`` become ``_``."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_") or "_"


def check_grid(sweep: Sweep, workspace: Workspace) -> None:
    """Load every grid point's config and check no directory would be overwritten, before any training."""
    for point in sweep.points:
        try:
            load_config(sweep.config, point.overrides(sweep.fixed))
        except LmcliError as e:
            raise LmcliError(f"grid point {point.name}: {e}") from None
        if (workspace.runs_dir / point.name).exists():
            raise LmcliError(f"run directory {workspace.runs_dir / point.name} already exists (choose another --name)")
    if sweep.dir.exists():
        raise LmcliError(f"sweep directory {sweep.dir} already exists (choose another --name)")


def plan_sweep(config: str, settings: list[str], name: str | None, workspace: Workspace) -> Sweep:
    """The grid of ``--set`` settings over ``config``, every point checked before anything runs."""
    fixed, axes = parse_grid(settings)
    if not axes:
        raise LmcliError("nothing to sweep: give at least one --set section.key=v1,v2 with two or more values")
    name = name or f"sweep-{resolve_config_path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    sweep = Sweep(name, workspace.root / SWEEPS_DIR / name, config, fixed, axes, grid_points(name, axes))
    check_grid(sweep, workspace)
    return sweep


class SilentRun(TrainObserver):
    """A run's observer and progress sink that shows nothing."""

    task = SILENT.task


class SweepObserver:
    """What a sweep tells the world; the default shows nothing. ``run_display`` gives each run's
    observer and progress sink (one object, as ``lmcli.ui.live.TrainDisplay`` is)."""

    def run_display(self, index: int, total: int, point: GridPoint) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext(SilentRun())

    def run_done(self, index: int, total: int, result: dict[str, Any]) -> None:
        pass

    def interrupted(self, results_path: Path) -> None:
        pass


def run_sweep(sweep: Sweep, workspace: Workspace, device: str | None = None, observer: SweepObserver = SweepObserver()) -> dict[str, Any]:
    """Train every grid point, one run after another; writes and returns the report (sweep.json and the plots)."""
    results: list[dict[str, Any]] = []
    total = len(sweep.points)
    try:
        for i, point in enumerate(sweep.points, 1):
            run_dir = workspace.runs_dir / point.name
            spec = RunSpec(config=sweep.config, overrides=tuple(point.overrides(sweep.fixed)), name=point.name, device=device)
            try:
                with observer.run_display(i, total, point) as display:
                    run_training(spec, workspace, [display], display)
                error = None
            except LmcliError as e:
                if not run_dir.exists():
                    raise  # it failed before training: every other point would fail the same way
                error = str(e)  # diverged or failed: recorded, and the sweep goes on
            except KeyboardInterrupt:
                if run_dir.exists():
                    results.append(run_result(run_dir, point, "interrupted"))
                observer.interrupted(sweep.dir / RESULTS_FILE)
                raise
            results.append(run_result(run_dir, point, error))
            observer.run_done(i, total, results[-1])
    finally:
        if results:  # also after Ctrl-C: the runs done so far are worth their table and plot
            report = write_results(sweep, results, workspace)
    return report


def run_result(run_dir: Path, point: GridPoint, error: str | None) -> dict[str, Any]:
    return {**read_run(run_dir).summary(), "values": point.values, "error": error}


def best_run(results: list[dict[str, Any]]) -> str | None:
    """The finished run with the lowest final validation loss."""
    finished = [r for r in results if r["status"] == "finished" and r["final_val_loss"] is not None]
    return min(finished, key=lambda r: r["final_val_loss"])["name"] if finished else None


def write_results(sweep: Sweep, results: list[dict[str, Any]], workspace: Workspace) -> dict[str, Any]:
    """sweep.json and the learning curves of the runs so far (also after an interruption)."""
    sweep.dir.mkdir(parents=True, exist_ok=True)
    report = {
        "sweep": sweep.name,
        "dir": str(sweep.dir),
        "config": sweep.config,
        "fixed": sweep.fixed,
        "grid": sweep.axes,
        "complete": len(results) == len(sweep.points),
        "best": best_run(results),
        "runs": results,
        "plots": write_plots([read_run(workspace.runs_dir / r["name"]) for r in results], sweep.dir),
    }
    with atomic_open(sweep.dir / RESULTS_FILE, encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    return report


def write_plots(runs: list[Run], sweep_dir: Path) -> list[str]:
    """One figure per metric in ``PLOTS``, of the runs that have points for it."""
    written = []
    for metric in PLOTS:
        try:
            curves, _ = build_curves(runs, metric, "step")
        except LmcliError:  # no run got as far as the first point of this metric
            continue
        written.append(str(save_figure(curves, metric, "step", sweep_dir / f"{metric}.png", title=f"{sweep_dir.name}: {metric}")))
    return written
