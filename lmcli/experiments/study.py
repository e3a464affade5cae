"""A sweep as an Optuna study: where it is stored, how trials are chosen, stopped, shared and retried.

lmcli does not search by itself: Optuna's samplers choose the points (``grid``: every listed
combination, enqueued when the study is created, in the order given, or in a seeded random
order under a pruner, as Optuna's GridSampler draws them: a pruner compares each trial with
those before it, and an ordered axis would show it the worst first; ``random``; ``tpe``), its pruners
stop losing trials (``median``, ``asha`` = successive halving, ``hyperband``) from the
validation losses each trial reports at its evaluations, and its storages hold the study, so
any number of workers on any machines share one. The study is named by the sweep's name; each
parameter by its config key (``optimizer.lr``); the objective is the final validation loss,
minimized; ``optuna-dashboard`` and Optuna's API read the study as it is.

Storage URLs: ``journal:PATH`` (a journal file; a shared file system for several machines),
``sqlite:///PATH`` (one machine), ``postgresql://...`` or ``mysql://...`` (a cluster). Without
``--storage`` the study is the journal file ``sweeps/NAME/study.log`` of the workspace.

Trials and runs. Each trial trains one ordinary run, whose name the trial carries in its user
attribute ``lmcli_run``: for a grid, named after its values; otherwise ``NAME-tNNN``. A worker
that stops a trial before it finishes (Ctrl-C) marks it failed and enqueues a *retry*: a new
trial with the same parameters and run, which the next worker resumes from the run's
checkpoint. A worker that dies cannot do that, so every worker writes a heartbeat into each
trial it runs (``lmcli_heartbeat``: host, pid, time); a running trial whose heartbeat is older
than ``GRACE_S``, or whose worker was on this host and is gone, is stale, and the first worker
to notice fails it and enqueues its retry (the storage lets only one of them do so). A trial
whose process ended before its run did, unasked (a SIGTERM from elsewhere, the kernel's
out-of-memory killer, its run held by a process that outlived another sweep), is retried too,
up to ``LOST_TRIES`` times in a row before it counts as failed. Failed trials that were
retried, and trials asked for beyond ``--trials`` by workers racing for the last one, are left
out of the results.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lmcli.errors import LmcliError
from lmcli.experiments.plot import short_keys
from lmcli.experiments.search_space import Axis, grid, safe_name
from lmcli.extras import optional_module
from lmcli.training.config import load_config

SEARCHES = ("grid", "random", "tpe")  # with a pruner, a grid's points run in a seeded random order
PRUNERS = ("none", "median", "asha", "hyperband")
HEARTBEAT_S = 10.0
GRACE_S = 120.0  # a trial whose worker wrote no heartbeat for this long is taken to be dead
DEFINITION = "lmcli_sweep"
RUN, RETRY_OF, EXTRA, HEARTBEAT = "lmcli_run", "lmcli_retry_of", "lmcli_extra", "lmcli_heartbeat"
LOST = "lmcli_lost"  # how many tries of the run before this one ended unasked, in a row
LOST_TRIES = 3
STATUS, ERROR, STOPPED_AT = "lmcli_status", "lmcli_error", "lmcli_stopped_at_step"


@dataclass(frozen=True)
class Definition:
    """What a sweep is: stored in the study, so every worker (and ``--resume NAME``) runs the same one."""

    config: str
    fixed: list[str]
    axes: dict[str, dict[str, Any]]  # key -> Axis fields
    search: str
    trials: int
    prune: str = "none"
    seed: int = 0

    def axis_objects(self) -> dict[str, Axis]:
        return {key: Axis(**{**fields, "values": tuple(fields["values"])}) for key, fields in self.axes.items()}

    @staticmethod
    def of(config: str, fixed: list[str], axes: dict[str, Axis], search: str, trials: int | None, prune: str,
           seed: int) -> Definition:
        if search not in SEARCHES:
            raise LmcliError(f"--search {search!r}: choose one of {', '.join(SEARCHES)}")
        if prune not in PRUNERS:
            raise LmcliError(f"--prune {prune!r}: choose one of {', '.join(PRUNERS)}")
        if not axes:
            raise LmcliError("nothing to sweep: give at least one --set section.key=v1,v2 (or a range such as loguniform:1e-4:1e-1)")
        if search == "grid":
            points = len(grid(axes))
            if trials is not None and trials != points:
                raise LmcliError(f"a grid has {points} trials, one per combination; --trials goes with --search random or tpe")
            trials = points
        elif trials is None:
            raise LmcliError(f"--search {search} needs --trials N, the number of trials to run")
        fields = {key: {**asdict(axis), "values": list(axis.values)} for key, axis in axes.items()}
        return Definition(str(config), list(fixed), fields, search, trials, prune, seed)


@dataclass
class Study:
    """An opened Optuna study and the storage it lives in."""

    name: str
    definition: Definition
    optuna: Any  # the optuna module
    storage: Any
    study: Any
    study_id: int
    host: str = field(default_factory=socket.gethostname)

    # ---- choosing trials

    def distributions(self) -> dict[str, Any]:
        dists = self.optuna.distributions
        out = {}
        for key, axis in self.definition.axis_objects().items():
            if axis.kind == "choice":
                out[key] = dists.CategoricalDistribution(list(axis.values))
            elif axis.kind == "int":
                out[key] = dists.IntDistribution(int(axis.low), int(axis.high))
            else:
                out[key] = dists.FloatDistribution(axis.low, axis.high, log=axis.kind == "loguniform")
        return out

    def counted(self, trials: list[Any]) -> list[Any]:
        """The trials that use the budget: not failed-and-retried (a retry names them), not asked beyond it."""
        retried = {t.user_attrs.get(RETRY_OF) for t in trials}
        return [t for t in trials if t.number not in retried and not t.user_attrs.get(EXTRA)]

    def waiting(self) -> bool:
        return any(t.state == self.optuna.trial.TrialState.WAITING for t in self.all_trials())

    def all_trials(self) -> list[Any]:
        return self.study.get_trials(deepcopy=False)

    def has_work(self) -> bool:
        """Whether a trial could still be started: one is queued, or the budget is not used up."""
        return self.waiting() or (self.definition.search != "grid" and len(self.counted(self.all_trials())) < self.definition.trials)

    def next_trial(self) -> Any | None:
        """A new trial to run (queued ones first: grid points and retries), or None if the budget is used up."""
        if not self.has_work():
            return None
        trial = self.study.ask(self.distributions())
        attrs = trial.user_attrs
        if RUN not in attrs:  # sampled, not taken from the queue
            before = [t for t in self.counted(self.all_trials()) if t.number < trial.number]
            if self.definition.search == "grid" or len(before) >= self.definition.trials:
                trial.set_user_attr(EXTRA, True)  # another worker took the last one first
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                return None
            trial.set_user_attr(RUN, f"{self.name}-t{trial.number:03d}")
        self.beat(trial.number)
        return trial

    def frozen(self, number: int) -> Any:
        return next(t for t in self.all_trials() if t.number == number)

    def run_name(self, trial: Any) -> str:
        return trial.user_attrs[RUN]

    # ---- the end of a trial

    def finish(self, trial: Any, status: str, final_val_loss: float | None, error: str | None = None,
               stopped_at: int | None = None) -> None:
        """Tell the study how the trial ended: finished (its loss), pruned, or failed (diverged, error)."""
        states = self.optuna.trial.TrialState
        trial.set_user_attr(STATUS, status)
        if error:
            trial.set_user_attr(ERROR, error)
        if stopped_at is not None:
            trial.set_user_attr(STOPPED_AT, stopped_at)
        if status == "finished" and final_val_loss is not None:
            self.study.tell(trial, final_val_loss)
        elif status == "pruned":
            self.study.tell(trial, state=states.PRUNED)
        else:
            self.study.tell(trial, state=states.FAIL)

    def requeue(self, number: int, lost: bool = False) -> bool:
        """Fail a trial that stopped short and enqueue its retry (``lost``: its process ended unasked);
        False if another worker already did."""
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        frozen = self.storage.get_trial(trial_id)
        try:
            if RUN not in frozen.user_attrs:  # its worker died as it asked for it: nothing ran, nothing to retry
                self.storage.set_trial_user_attr(trial_id, EXTRA, True)
            if not self.storage.set_trial_state_values(trial_id, self.optuna.trial.TrialState.FAIL):
                return False
        except (self.optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
            return False
        if RUN in frozen.user_attrs:
            lost_before = frozen.user_attrs.get(LOST, 0) + 1 if lost else 0
            self.study.enqueue_trial(frozen.params, user_attrs={RUN: frozen.user_attrs[RUN], RETRY_OF: number, LOST: lost_before})
        return True

    # ---- liveness

    def beat(self, number: int) -> None:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        self.storage.set_trial_user_attr(trial_id, HEARTBEAT, {"host": self.host, "pid": os.getpid(), "time": time.time()})

    def requeue_stale(self) -> list[int]:
        """Retry every running trial whose worker is gone; returns their numbers."""
        running = self.optuna.trial.TrialState.RUNNING
        return [t.number for t in self.all_trials() if t.state == running and self.is_stale(t) and self.requeue(t.number)]

    def is_stale(self, trial: Any) -> bool:
        beat = trial.user_attrs.get(HEARTBEAT)
        if not beat:  # its worker died between taking it and its first heartbeat
            started = trial.datetime_start
            return started is not None and time.time() - started.timestamp() > GRACE_S
        if beat["host"] == self.host and beat["pid"] != os.getpid() and not pid_alive(beat["pid"]):
            return True
        return time.time() - beat["time"] > GRACE_S

    # ---- results

    def results(self) -> list[Any]:
        """The trials that are results (retried and extra ones left out), in trial order."""
        return sorted(self.counted(self.all_trials()), key=lambda t: t.number)

    def importance(self) -> dict[str, float] | None:
        """Each parameter's share of the variation in final loss (Optuna's fANOVA); None where it cannot say."""
        complete = [t for t in self.all_trials() if t.state == self.optuna.trial.TrialState.COMPLETE]
        if self.definition.search == "grid" or len(complete) < 2:
            return None
        try:
            return dict(self.optuna.importance.get_param_importances(self.study))
        except (ValueError, RuntimeError):  # e.g. every trial has the same value
            return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def default_storage(sweep_dir: Path) -> str:
    return f"journal:{sweep_dir / 'study.log'}"


def open_storage(optuna: Any, url: str) -> Any:
    """An Optuna storage from a URL: ``journal:PATH`` or an SQLAlchemy URL (sqlite, postgresql, mysql)."""
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:")).expanduser()
        if not path.parent.is_dir():
            raise LmcliError(f"--storage {url}: the folder {path.parent} does not exist")
        from optuna.storages.journal import JournalFileBackend  # optuna is an extra: imported when a sweep opens

        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.split(":", 1)[0].split("+", 1)[0] in ("sqlite", "postgresql", "mysql"):
        return database_storage(optuna, url)
    raise LmcliError(f"--storage {url!r}: expected journal:PATH, sqlite:///PATH, postgresql://... or mysql://...")


def database_storage(optuna: Any, url: str, tries: int = 5) -> Any:
    """Optuna's RDBStorage. Workers started together on a new database all create its tables, and
    PostgreSQL lets two ``CREATE TABLE IF NOT EXISTS`` collide (a unique violation in its catalog):
    the loser tries again and finds the tables made."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError  # optuna's own dependency, imported with it

    if url.startswith("postgresql") and "+" not in url.split(":", 1)[0]:
        optional_module("psycopg", "sweep-postgres", "a PostgreSQL --storage")  # SQLAlchemy's default driver for it
    for attempt in range(1, tries + 1):
        try:
            return optuna.storages.RDBStorage(url)
        except (IntegrityError, ProgrammingError) as e:  # a concurrent creation of the schema
            if attempt < tries:
                time.sleep(0.2 + random.random() * attempt)
                continue
            error = e
        except Exception as e:  # noqa: BLE001  a driver missing, a server down: one line
            error = e
        raise LmcliError(f"--storage {url}: {str(error).splitlines()[0]}") from None


def sampler_for(optuna: Any, search: str, seed: int | None) -> Any:
    if search == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)  # constant_liar: parallel trials spread out
    return optuna.samplers.RandomSampler(seed=seed)  # grid: every trial comes from the queue


def pruner_for(optuna: Any, definition: Definition) -> Any:
    """The study's pruner. Successive halving (ASHA, and Hyperband's brackets of it) decides its first
    rung at the first evaluation after the learning-rate warmup: earlier, larger rates are ahead
    only because they warm up faster (with Optuna's default, a rung at the first evaluation, ASHA
    stopped the best rate of a 120-step search at step 10 of a 10-step warmup)."""
    pruners = optuna.pruners
    if definition.prune in ("asha", "hyperband"):
        first = first_rung_step(definition)
        if definition.prune == "asha":
            return pruners.SuccessiveHalvingPruner(min_resource=first)
        return pruners.HyperbandPruner(min_resource=first)
    return pruners.MedianPruner() if definition.prune == "median" else pruners.NopPruner()


def first_rung_step(definition: Definition) -> int:
    """The step of the first evaluation after the warmup, in the sweep's config with its fixed overrides."""
    config = load_config(definition.config, definition.fixed)
    interval = config.training.eval_interval
    return (config.optimizer.warmup_steps // interval + 1) * interval


def grid_run_names(name: str, axes: dict[str, Axis]) -> list[tuple[dict[str, str], str]]:
    """Every grid point with its run name ``<sweep>-<key>=<value>-...`` (a key's last part when unambiguous)."""
    labels = short_keys(list(axes))
    return [(point, "-".join([name, *(f"{labels[k]}={safe_name(v)}" for k, v in point.items())])) for point in grid(axes)]


def open_study(name: str, storage_url: str, definition: Definition | None,
               before_create: Callable[[Definition], None] = lambda definition: None) -> Study:
    """Create the study (enqueueing a grid; ``before_create`` may refuse) or join it.

    ``definition`` None means "the one stored" (``--resume NAME``); otherwise a study that exists
    must have been created with the same definition.
    """
    optuna = optional_module("optuna", "sweep", "lmcli sweep")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(optuna, storage_url)
    try:
        stored = {s.study_name: s for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}.get(name)
    except Exception as e:  # noqa: BLE001  an unreadable journal, a database refusing: one line
        raise LmcliError(f"--storage {storage_url}: {str(e).splitlines()[0]}") from None
    if stored is None:
        if definition is None:
            raise LmcliError(f"no sweep {name!r} in {storage_url}")
        before_create(definition)
        return create(optuna, storage, name, definition)
    return join(optuna, storage, name, definition, storage_url)


def create(optuna: Any, storage: Any, name: str, definition: Definition) -> Study:
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize",
                                    sampler=sampler_for(optuna, definition.search, definition.seed),
                                    pruner=pruner_for(optuna, definition))
    except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
        return join(optuna, storage, name, definition, "the storage")
    if definition.search == "grid":
        points = grid_run_names(name, definition.axis_objects())
        if definition.prune != "none":  # in the order given, a pruner would see the worst of an ordered axis first
            random.Random(definition.seed).shuffle(points)
        for point, run in points:
            study.enqueue_trial(point, user_attrs={RUN: run})
    study.set_user_attr(DEFINITION, asdict(definition))  # last: joining workers wait for it
    return Study(name, definition, optuna, storage, study, storage.get_study_id_from_name(name))


def join(optuna: Any, storage: Any, name: str, definition: Definition | None, where: str) -> Study:
    deadline = time.monotonic() + 60
    while True:
        study = optuna.load_study(study_name=name, storage=storage, sampler=None, pruner=None)
        stored = study.user_attrs.get(DEFINITION)
        if stored is not None or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # its creator is still enqueueing the grid
    if stored is None:
        raise LmcliError(f"study {name!r} in {where} was not made by lmcli sweep (it has no {DEFINITION} attribute)")
    stored = Definition(**stored)
    if definition is not None and definition != stored:
        raise LmcliError(f"sweep {name!r} exists with other settings ({describe_difference(stored, definition)}); "
                         f"run it again as it was, or choose another --name")
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler_for(optuna, stored.search, None),
                              pruner=pruner_for(optuna, stored))
    return Study(name, stored, optuna, storage, study, storage.get_study_id_from_name(name))


def describe_difference(stored: Definition, given: Definition) -> str:
    for field_name in ("config", "fixed", "axes", "search", "trials", "prune", "seed"):
        if getattr(stored, field_name) != getattr(given, field_name):
            return f"{field_name}: {getattr(stored, field_name)} there, {getattr(given, field_name)} here"
    return "unknown"
