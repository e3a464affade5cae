"""``lmcli sweep``: search hyperparameters with trials in parallel, stop losing ones early, and compare them.

A sweep is an Optuna study (``lmcli.experiments.study``) whose trials are ordinary ``lmcli
train`` runs in the workspace's ``runs/`` (``lmcli.experiments.trials``)::

    lmcli sweep --config demo --set optimizer.lr=1e-3,3e-3 --set training.batch_size=16,32
    lmcli sweep --config demo --set optimizer.lr=loguniform:1e-4:1e-1 --search tpe --trials 12 --prune asha --parallel 2

One worker (this process) keeps ``--parallel`` trials running (``--parallel / --nproc`` of trials
that train in several processes each): when one ends it tells the study
how (final validation loss, pruned, diverged, failed) and starts the next the study hands out.
Between, it follows each trial's evaluations, reports them to the study, and stops a trial the
pruner gives up on (SIGTERM: the run saves its checkpoint). Any number of workers may run the
same sweep against one ``--storage``; each takes trials nobody else has.

Every point's config is loaded, and the data it names opened, before the study is created, so
a typo fails in seconds rather than after an hour of training; a trial that fails before its
run starts (the same failure would hit every trial) stops the worker. A run that diverges or
fails does not stop the sweep: it is recorded and the others go on. Ctrl-C stops the trials
after they save their checkpoints, and they are queued again; running the same command again
(or ``lmcli sweep --resume NAME``) skips finished trials, resumes interrupted ones from their
``latest.pt`` and starts the rest.

The sweep ends with a table, and writes into ``<workspace>/sweeps/<name>/`` a ``sweep.json`` of
the results (with, for random and TPE searches, each parameter's importance, and the training
tokens pruning saved) and the learning curves (``val_loss.png``, ``train_loss.png``; pruned
trials are drawn to where they stopped). Each trial's output is in ``sweeps/<name>/trials/``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmcli.atomic import atomic_open
from lmcli.data.token_files import open_token_ids
from lmcli.errors import LmcliError
from lmcli.experiments.plot import build_curves, save_figure
from lmcli.experiments.runs import Run, is_run_dir, read_run
from lmcli.experiments.search_space import Axis, grid, parse_settings
from lmcli.experiments.study import ERROR, HEARTBEAT_S, LOST, LOST_TRIES, RUN, STATUS, STOPPED_AT, Definition, Study, default_storage, grid_run_names, open_study
from lmcli.experiments.trials import Slot, TrialProcess, slots, start_trial, visible_gpus
from lmcli.training.config import load_config, resolve_config_path
from lmcli.training.metrics import require_tensorboard
from lmcli.training.run import data_sources
from lmcli.workspace import Workspace, is_locked

SWEEPS_DIR = "sweeps"
RESULTS_FILE = "sweep.json"
PLOTS = ("val_loss", "train_loss")
POLL_S = 0.25
STALE_CHECK_S = 2.0
STOP_WAIT_S = 120.0  # how long a stopped trial may take to save its checkpoint before it is killed


@dataclass(frozen=True)
class SweepPlan:
    """One worker's part in a sweep: which study, where its runs go, how many trials at once."""

    name: str
    dir: Path  # <workspace>/sweeps/<name>
    workspace: Workspace
    storage: str
    definition: Definition | None  # None: the one stored (--resume NAME)
    parallel: int = 1  # slots: GPUs, or shares of the cores
    device: str | None = None
    tensorboard: bool = False  # each trial also writes TensorBoard event files
    nproc: int = 1  # processes (slots) per trial


def config_reference(config: str) -> str:
    """The config as every worker finds it: a file by its absolute path, a bundled config by its name."""
    path = Path(config).expanduser()
    return str(path.resolve()) if path.is_file() else config


def plan_sweep(config: str | None, settings: list[str], name: str | None, workspace: Workspace, search: str = "grid",
               trials: int | None = None, prune: str = "none", seed: int = 0, storage: str | None = None,
               parallel: int = 1, device: str | None = None, resume: str | None = None, tensorboard: bool = False,
               nproc: int = 1) -> SweepPlan:
    """The sweep the command line describes, its points checked; ``resume`` names one to continue as it was."""
    if parallel < 1 or nproc < 1:
        raise LmcliError("--parallel and --nproc must be at least 1")
    if nproc > parallel:
        raise LmcliError(f"a trial of --nproc {nproc} takes {nproc} slots: give --parallel {nproc} or more")
    if tensorboard:
        require_tensorboard()  # here, not once per trial
    if resume is not None:
        if config is not None or settings:
            raise LmcliError("--resume NAME continues a sweep as it was created: give no --config or --set")
        name, definition = resume, None
    else:
        if config is None:
            raise LmcliError("give --config (a new sweep, or the same command again to continue it) or --resume NAME")
        fixed, axes = parse_settings(settings)
        definition = Definition.of(config_reference(config), fixed, axes, search, trials, prune, seed)
        name = name or f"sweep-{resolve_config_path(config).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        check_points(definition, workspace)
    sweep_dir = workspace.root / SWEEPS_DIR / name
    return SweepPlan(name, sweep_dir, workspace, storage or default_storage(sweep_dir), definition, parallel, device, tensorboard,
                     nproc)


def check_points(definition: Definition, workspace: Workspace) -> None:
    """Load the config of every grid point (of every listed value and range end otherwise) and open its data."""
    axes = definition.axis_objects()
    if definition.search == "grid":
        points = grid(axes)
    else:  # each value alone: a combination that fails only together is found when its trial starts
        points = [{key: value} for key, axis in axes.items() for value in axis_ends(axis)]
    for point in points:
        label = ", ".join(f"{k}={v}" for k, v in point.items())
        try:
            config = load_config(definition.config, [*definition.fixed, *(f"{k}={v}" for k, v in point.items())])
        except LmcliError as e:
            raise LmcliError(f"point {label}: {e}") from None
    for split in ("train", "valid"):
        for source_name, _, paths in data_sources(config, split, workspace.path):
            for path in paths:
                open_token_ids(path, f"{split} data ({source_name})", config.model.context_length + 1)


def axis_ends(axis: Axis) -> list[str]:
    if axis.kind == "choice":
        return list(axis.values)
    return [str(int(axis.low)), str(int(axis.high))] if axis.kind == "int" else [repr(axis.low), repr(axis.high)]


def check_new_runs(name: str, definition: Definition, workspace: Workspace) -> None:
    """A new sweep overwrites no run: its grid runs (or NAME-t* runs) must not exist yet."""
    if definition.search == "grid":
        taken = [run for _, run in grid_run_names(name, definition.axis_objects()) if (workspace.runs_dir / run).exists()]
    else:
        taken = [p.name for p in workspace.runs_dir.glob(f"{name}-t*")] if workspace.runs_dir.is_dir() else []
    if taken:
        raise LmcliError(f"run directory {workspace.runs_dir / taken[0]} already exists (choose another --name)")


class SweepObserver:
    """What a sweep tells the world; the default shows nothing."""

    def update(self, running: list[TrialProcess], done: int, total: int) -> None:
        pass

    def trial_done(self, row: dict[str, Any], done: int, total: int) -> None:
        pass

    def interrupted(self, results_path: Path) -> None:
        pass


def run_sweep(plan: SweepPlan, observer: SweepObserver | None = None) -> dict[str, Any]:
    """Work on the sweep until its study has no trial left to run; writes and returns the report."""
    observer = observer or SweepObserver()
    new_dir = not plan.dir.exists()
    plan.dir.mkdir(parents=True, exist_ok=True)
    try:
        study = open_study(plan.name, plan.storage, plan.definition,
                           before_create=lambda definition: check_new_runs(plan.name, definition, plan.workspace))
    except LmcliError:
        if new_dir:  # nothing was started: nothing is left that looks like a sweep
            shutil.rmtree(plan.dir, ignore_errors=True)
        raise
    try:
        Worker(study, plan, observer).work()
    except KeyboardInterrupt:
        observer.interrupted(plan.dir / RESULTS_FILE)
        write_results(study, plan)
        raise
    return write_results(study, plan)


class Worker:
    """Keeps ``plan.parallel // plan.nproc`` trials running until the study has none left."""

    def __init__(self, study: Study, plan: SweepPlan, observer: SweepObserver):
        self.study, self.plan, self.observer = study, plan, observer
        self.free: list[Slot] = slots(plan.parallel, visible_gpus(plan.device), plan.nproc)
        self.running: dict[int, TrialProcess] = {}
        # Trials taken whose run another process still holds, each with its slot and until when it may wait:
        # the retry of a dead worker's trial can come while that trial's process still saves its checkpoint
        # on the SIGTERM the death sent it. Started then, it would find the run taken and fail; waiting in
        # the loop (not in a sleep) keeps the heartbeats of this worker's other trials going.
        self.held: dict[int, tuple[Any, Slot, float]] = {}
        self.last_beat = self.last_stale_check = -float("inf")

    def work(self) -> None:
        try:
            while True:
                for trial in list(self.running.values()):
                    self.follow(trial)
                self.keep_alive()
                self.start_released()
                while self.free and (trial := self.study.next_trial()) is not None:
                    self.start(trial, self.free.pop(0), time.monotonic() + STOP_WAIT_S)
                if not self.running and not self.held and not self.others_running():
                    break
                self.observer.update(list(self.running.values()), *self.counts())
                time.sleep(POLL_S)
        except BaseException:  # Ctrl-C, or a trial that could not start: the others save and are queued again
            self.stop_all()
            raise

    def counts(self) -> tuple[int, int]:
        results = self.study.results()
        done = sum(t.state.is_finished() for t in results)
        return done, self.study.definition.trials

    def others_running(self) -> bool:
        """Whether a trial of another worker is still running (it may yet fail and be queued again)."""
        return any(t.state == self.study.optuna.trial.TrialState.RUNNING for t in self.study.all_trials())

    def start(self, trial: Any, slot: Slot, deadline: float) -> None:
        """Start the trial in ``slot``, or hold it while another process has its run (until ``deadline``:
        then it starts anyway, and fails on the taken run, which is recorded)."""
        run = self.study.run_name(trial)
        if is_locked(self.plan.workspace.run_dir(run)) and time.monotonic() < deadline:
            self.held[trial.number] = (trial, slot, deadline)
            return
        self.held.pop(trial.number, None)
        overrides = [*self.study.definition.fixed, *(f"{k}={override_text(v)}" for k, v in trial.params.items())]
        self.running[trial.number] = start_trial(trial, run, overrides, self.study.definition.config, self.plan.workspace.root,
                                                 slot, self.plan.device, self.plan.dir / "trials", self.plan.tensorboard)

    def start_released(self) -> None:
        for trial, slot, deadline in list(self.held.values()):
            self.start(trial, slot, deadline)

    def follow(self, trial: TrialProcess) -> None:
        """Report the trial's new evaluations (stopping it if the pruner says so); finish it once it exited."""
        for step, val_loss in trial.tail.new_evals():
            trial.trial.report(val_loss, step)
            if trial.trial.should_prune():
                trial.stop("pruned")
        if trial.process.poll() is None:
            return
        trial.tail.new_evals()
        del self.running[trial.trial.number]
        self.free.append(trial.slot)
        self.finish(trial)

    def finish(self, trial: TrialProcess) -> None:
        run = read_run(trial.run_dir) if is_run_dir(trial.run_dir) else None
        status = run.status if run is not None else "failed"
        if trial.stop_reason == "interrupted" and status != "finished":
            self.study.requeue(trial.trial.number)
            return
        if run is None:  # it failed before its run started: every other trial would fail the same way
            self.study.finish(trial.trial, "failed", None, error=trial.error_line())
            raise LmcliError(f"trial {trial.run}: {trial.error_line()} (see {trial.log})")
        if trial.stop_reason == "pruned" and status != "finished":
            self.study.finish(trial.trial, "pruned", None, stopped_at=run.steps)
        elif status == "finished":
            self.study.finish(trial.trial, "finished", run.final_val_loss)
        elif status in ("diverged", "failed"):
            self.study.finish(trial.trial, status, None, error=trial.error_line())
        elif trial.trial.user_attrs.get(LOST, 0) + 1 < LOST_TRIES:  # its process ended unasked, the run not over: tried again
            self.study.requeue(trial.trial.number, lost=True)
            return
        else:
            self.study.finish(trial.trial, "failed", None,
                              error=f"{trial.error_line()} (its process ended {LOST_TRIES} times in a row before its run did)")
        frozen = self.study.frozen(trial.trial.number)
        self.observer.trial_done(result_row(frozen, trial_run(frozen, self.plan.workspace)), *self.counts())

    def keep_alive(self) -> None:
        """A heartbeat for each running trial every HEARTBEAT_S; a retry for trials whose worker died, every STALE_CHECK_S."""
        now = time.monotonic()
        if now - self.last_beat >= HEARTBEAT_S:
            self.last_beat = now
            for number in [*self.running, *self.held]:
                self.study.beat(number)
        if now - self.last_stale_check >= STALE_CHECK_S:
            self.last_stale_check = now
            self.study.requeue_stale()

    def stop_all(self) -> None:
        """Every running trial saves its checkpoint and stops, and is queued to be resumed."""
        for trial in self.running.values():
            trial.stop("interrupted")
        deadline = time.monotonic() + STOP_WAIT_S
        for trial in self.running.values():
            try:
                trial.process.wait(max(0.1, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001  a second Ctrl-C, or a trial that will not stop: it is killed
                trial.process.kill()
                trial.process.wait()
            self.study.requeue(trial.trial.number)
        for number in self.held:  # never started: queued again as they are
            self.study.requeue(number)
        self.running.clear()
        self.held.clear()


def override_text(value: Any) -> str:
    """A trial's value as a config override: floats in full (the run trains exactly what the study recorded)."""
    return repr(value) if isinstance(value, float) else str(value)


def trial_run(frozen: Any, workspace: Workspace) -> Run | None:
    """The run of a trial (an Optuna FrozenTrial), read once; None before it started."""
    run_dir = workspace.runs_dir / frozen.user_attrs.get(RUN, "")
    return read_run(run_dir) if frozen.user_attrs.get(RUN) and is_run_dir(run_dir) else None


def result_row(frozen: Any, run: Run | None) -> dict[str, Any]:
    """One trial of the results: its values, outcome and run."""
    status = frozen.user_attrs.get(STATUS) or frozen.state.name.lower()
    summary = run.summary() if run is not None else {"name": frozen.user_attrs.get(RUN), "steps": 0, "max_steps": None,
                                                       "best_val_loss": None, "final_val_loss": None, "elapsed_s": None}
    tokens = trained_tokens(run) if run is not None else 0
    return {
        **summary,
        "trial": frozen.number,
        "values": {k: override_text(v) for k, v in frozen.params.items()},
        "status": status,
        "error": frozen.user_attrs.get(ERROR),
        "stopped_at_step": frozen.user_attrs.get(STOPPED_AT),
        "tokens": tokens,
        "planned_tokens": planned_tokens(run, tokens),
    }


def trained_tokens(run: Run) -> int:
    return max((row.get("tokens") or 0 for row in run.rows), default=0)


def planned_tokens(run: Run | None, tokens: int) -> int:
    """The tokens the run would have trained to its last step (from its tokens per step so far)."""
    if run is None or not run.steps or not run.max_steps:
        return tokens
    return round(tokens / run.steps * run.max_steps)


def best_run(rows: list[dict[str, Any]]) -> str | None:
    """The finished run with the lowest final validation loss."""
    finished = [r for r in rows if r["status"] == "finished" and r["final_val_loss"] is not None]
    return min(finished, key=lambda r: r["final_val_loss"])["name"] if finished else None


def write_results(study: Study, plan: SweepPlan) -> dict[str, Any]:
    """sweep.json and the learning curves of the trials so far (also after an interruption)."""
    trials = [(t, trial_run(t, plan.workspace)) for t in study.results()]
    rows = [r for r in (result_row(t, run) for t, run in trials) if r["name"]]
    finished = sum(r["status"] in ("finished", "pruned", "diverged", "failed") for r in rows)
    pruned = [r for r in rows if r["status"] == "pruned"]
    definition = study.definition
    report = {
        "sweep": study.name,
        "dir": str(plan.dir),
        "storage": plan.storage,
        "config": definition.config,
        "fixed": definition.fixed,
        "axes": {key: axis.describe() for key, axis in definition.axis_objects().items()},
        "search": definition.search,
        "prune": definition.prune,
        "trials": definition.trials,
        "complete": finished >= definition.trials,
        "best": best_run(rows),
        "importance": study.importance(),
        "pruned": len(pruned),
        "tokens_trained": sum(r["tokens"] for r in rows),
        "tokens_saved_by_pruning": sum(r["planned_tokens"] - r["tokens"] for r in pruned),
        "runs": rows,
        "plots": write_plots([run for _, run in trials if run is not None], plan.dir),
    }
    with atomic_open(plan.dir / RESULTS_FILE, encoding="utf-8") as f:
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

