"""Learning curves: one metric of several runs on one figure, against steps, tokens or wall-clock time.

Curves come from each run's ``metrics.jsonl``: ``val_loss`` from the ``eval`` rows,
``train_loss``, ``lr`` and ``grad_norm`` from the ``train`` rows. Eval rows carry no time of
their own; the loop writes a train row at every evaluation step, whose ``elapsed_s`` gives it
(the wall-clock axis the CS336 deliverables ask for).

The legend names each run and the config values that differ between the plotted runs (the
resolved ``config.toml`` files are flattened to ``table.key`` and compared), so a sweep or an
ablation labels itself. A diverged run's curve ends with a cross.

The figure is drawn with matplotlib's Agg backend (no display needed) and written atomically;
``lmcli plot --terminal`` draws the same curves with braille characters (``lmcli.ui.braille``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli.atomic import atomic_path
from lmcli.errors import LmcliError
from lmcli.experiments.runs import Run, read_run, resolve_run, workspace_runs
from lmcli.workspace import Workspace

# metric -> (row kind, row key, axis label)
METRICS = {
    "val_loss": ("eval", "val_loss", "validation loss"),
    "train_loss": ("train", "loss", "training loss"),
    "lr": ("train", "lr", "learning rate"),
    "grad_norm": ("train", "grad_norm", "gradient norm (before clipping)"),
}
PER_SOURCE = {"val_loss": "validation loss", "val_bpb": "validation bits per byte"}  # val_loss/NAME: a mixture's source
X_AXES = ("step", "tokens", "time")
TIME_UNITS = ((3600, "hours"), (60, "minutes"), (1, "seconds"))


@dataclass(frozen=True)
class Curve:
    label: str
    xs: list[float]
    ys: list[float]
    diverged: bool


def curve_points(run: Run, metric: str, x_axis: str) -> tuple[list[float], list[float]]:
    """(xs, ys) of ``metric`` against ``x_axis`` ("step", "tokens" or "time" in seconds)."""
    kind, key, _ = metric_spec(metric)
    elapsed_at = {r["step"]: r["elapsed_s"] for r in run.series("train", "elapsed_s")}
    xs, ys = [], []
    for row in run.series(kind, key):
        x = elapsed_at.get(row["step"]) if x_axis == "time" else row.get(x_axis)
        if x is not None:
            xs.append(float(x))
            ys.append(float(row[key]))
    return xs, ys


def metric_spec(metric: str) -> tuple[str, str, str]:
    """(row kind, row key, axis label) of a metric: one of METRICS, val_bpb, or val_loss/NAME and
    val_bpb/NAME for the source NAME of a mixture; an error naming the choices otherwise."""
    if metric in METRICS:
        return METRICS[metric]
    base, _, source = metric.partition("/")
    if base in PER_SOURCE and (source or base != "val_loss"):
        return "eval", metric, PER_SOURCE[base] + (f" ({source})" if source else "")
    raise LmcliError(f"unknown metric {metric!r} (choose {', '.join(METRICS)}, val_bpb, or val_loss/NAME for a mixture's source)")


def flat_config(run: Run) -> dict[str, Any]:
    return {f"{table}.{key}": value for table, values in run.config.items() if isinstance(values, dict)
            for key, value in values.items()}


def differing_values(runs: list[Run]) -> list[dict[str, Any]]:
    """For each run, the config values (``table.key`` -> value) that are not the same in every run."""
    flats = [flat_config(r) for r in runs]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({repr(f.get(k)) for f in flats}) > 1]
    return [{k: f.get(k) for k in differing} for f in flats]


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each ``table.key`` as its last part (``lr``), or whole where two keys share that part."""
    short = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if short.count(s) == 1 else k) for k, s in zip(keys, short)}


def legend_labels(runs: list[Run]) -> list[str]:
    """``name (lr=0.001, batch_size=64)``: the differing keys as ``short_keys`` names them."""
    diffs = differing_values(runs)
    names = short_keys(list(diffs[0]) if diffs else [])
    labels = []
    for run, diff in zip(runs, diffs):
        values = ", ".join(f"{names[k]}={v}" for k, v in diff.items())
        labels.append(f"{run.name} ({values})" if values else run.name)
    return labels


def build_curves(runs: list[Run], metric: str, x_axis: str) -> tuple[list[Curve], list[str]]:
    """The curves of the runs that have points for ``metric``, and the names of those that have
    none yet (left out); an error when no run has any."""
    metric_spec(metric)
    if x_axis not in X_AXES:
        raise LmcliError(f"unknown x axis {x_axis!r} (choose {', '.join(X_AXES)})")
    curves, left_out = [], []
    for run, label in zip(runs, legend_labels(runs)):
        xs, ys = curve_points(run, metric, x_axis)
        if xs:
            curves.append(Curve(label, xs, ys, run.status == "diverged"))
        else:
            left_out.append(run.name)
    if not curves:
        raise LmcliError(f"none of the runs has {metric} points yet ({', '.join(r.name for r in runs)})")
    return curves, left_out


def time_unit(curves: list[Curve]) -> tuple[float, str]:
    """The largest unit in which the longest run lasts at least 2 (seconds, minutes or hours)."""
    longest = max(max(c.xs) for c in curves)
    return next(((s, name) for s, name in TIME_UNITS if longest >= 2 * s), TIME_UNITS[-1])


def axis_labels(curves: list[Curve], metric: str, x_axis: str) -> tuple[list[Curve], str, str]:
    """Curves with their x scaled for display, and the x and y axis labels."""
    if x_axis != "time":
        return curves, {"step": "step", "tokens": "tokens processed"}[x_axis], metric_spec(metric)[2]
    scale, unit = time_unit(curves)
    scaled = [Curve(c.label, [x / scale for x in c.xs], c.ys, c.diverged) for c in curves]
    return scaled, f"wall-clock time ({unit})", metric_spec(metric)[2]


def loss_ceiling(curves: list[Curve]) -> float | None:
    """For losses: the highest starting value, so one exploding run does not flatten the others."""
    firsts = [c.ys[0] for c in curves if math.isfinite(c.ys[0])]
    peak = max((y for c in curves for y in c.ys if math.isfinite(y)), default=None)
    if not firsts or peak is None or peak <= 1.05 * max(firsts):
        return None
    return 1.05 * max(firsts)


def save_figure(curves: list[Curve], metric: str, x_axis: str, out: Path, title: str | None = None) -> Path:
    """Draw the curves with matplotlib (Agg) and write the image atomically; returns ``out``."""
    # matplotlib takes ~0.5 s to import: only when a figure is drawn
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fmt = out.suffix.lstrip(".").lower()
    fig = Figure(figsize=(8, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    supported = fig.canvas.get_supported_filetypes()
    if fmt not in supported:
        raise LmcliError(f"cannot write a figure to {out}: use one of .{', .'.join(sorted(supported))}")
    curves, x_label, y_label = axis_labels(curves, metric, x_axis)
    ax = fig.add_subplot()
    for curve in curves:
        finite = [(x, y) for x, y in zip(curve.xs, curve.ys) if math.isfinite(y)]
        (line,) = ax.plot([p[0] for p in finite], [p[1] for p in finite], label=curve.label + (" [diverged]" if curve.diverged else ""))
        if curve.diverged and finite:
            ax.plot(*finite[-1], marker="x", markersize=10, color=line.get_color())
    if metric in ("val_loss", "train_loss") and (top := loss_ceiling(curves)) is not None:
        ax.set_ylim(top=top)
    if metric == "lr":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title(title or f"{y_label} vs {x_label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt)
    return out


def gather_runs(specs: list[str], workspace: Workspace) -> list[Run]:
    """Runs named by directory or name; with none named, every run of the workspace."""
    paths = [resolve_run(s, workspace) for s in specs] if specs else workspace_runs(workspace)
    if not paths:
        raise LmcliError(f"no runs to plot in {workspace.runs_dir} (name run directories, or train one first)")
    return [read_run(p) for p in paths]
