"""``lmcli sweep`` on Optuna: trials in parallel, random and TPE searches, pruning, resuming, and workers sharing a study.

Every test runs real (tiny) trainings through the CLI, as processes where the point is what
happens to processes (a worker killed mid-trial, two workers at once).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from lmcli.errors import LmcliError
from lmcli.experiments import trials
from lmcli.experiments.runs import read_run
from lmcli.experiments.search_space import parse_settings
from lmcli.experiments.study import Definition, open_study, pruner_for
from lmcli.experiments.trials import slots
from lmcli.workspace import RUN_CONFIG_FILE
from tests.postgres import postgres_url
from tests.tiny import tiny_workspace

optuna = pytest.importorskip("optuna", reason="lmcli sweep needs the sweep extra")

def make_workspace(root: Path, steps: int, eval_interval: int = 10) -> tuple[Path, Path]:
    return tiny_workspace(root, steps, eval_interval, log_interval=10)


def losses(ws: Path, run: str) -> list[tuple[str, int, float]]:
    rows = [json.loads(line) for line in (ws / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r.get("loss", r.get("val_loss"))) for r in rows if r["kind"] in ("train", "eval", "final_eval")]


def sweep_process(ws: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lmcli", "sweep", *args, "--workspace", str(ws), "-q", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return json.loads(out)


def test_ranges_and_choices_parse_and_bad_ones_are_one_line():
    fixed, axes = parse_settings(["optimizer.lr=loguniform:1e-4:1e-1", "training.batch_size=int:2:8",
                                  "model.ffn=choice:swiglu,silu", "optimizer.beta1=uniform:0.8:0.95", "training.max_steps=9"])
    assert fixed == ["training.max_steps=9"]
    assert {k: (a.kind, a.low, a.high, a.values) for k, a in axes.items()} == {
        "optimizer.lr": ("loguniform", 1e-4, 1e-1, ()), "training.batch_size": ("int", 2, 8, ()),
        "model.ffn": ("choice", 0.0, 0.0, ("swiglu", "silu")), "optimizer.beta1": ("uniform", 0.8, 0.95, ())}
    for bad, message in (("optimizer.lr=loguniform:0:1", "LOW > 0"), ("optimizer.lr=uniform:1:1", "below HIGH"),
                         ("training.batch_size=int:2:x", "expected int:LOW:HIGH"), ("optimizer.lr=uniform:1", "LOW:HIGH")):
        with pytest.raises(LmcliError, match=message):
            parse_settings([bad])


def test_a_trial_of_several_processes_takes_as_many_gpus_or_core_shares(monkeypatch):
    monkeypatch.setattr("lmcli.experiments.trials.available_cores", lambda: 16)
    node = slots(8, list(range(8)), nproc=2)
    assert [s.gpus for s in node] == [(0, 1), (2, 3), (4, 5), (6, 7)] and {s.threads for s in node} == {2}
    assert node[1].environment()["CUDA_VISIBLE_DEVICES"] == "2,3"
    assert [(s.gpus, s.threads, s.processes) for s in slots(5, [], nproc=2)] == [((), 3, 2)] * 2  # 16 cores / 5 slots
    assert len(slots(8, [3, 5], nproc=1)) == 2  # no more slots than GPUs
    with pytest.raises(LmcliError, match="needs 4 slots, and there are 2 \\(GPUs\\)"):
        slots(8, [3, 5], nproc=4)


def test_trials_share_the_cores_this_process_may_use_not_the_machines(monkeypatch):
    # Under SLURM or taskset a job is given some of a node's cores: the shares split those.
    monkeypatch.setattr("os.cpu_count", lambda: 64)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert [s.threads for s in slots(2, [])] == [2, 2]


def test_a_retry_resumes_its_run_even_before_its_first_checkpoint(tmp_path, monkeypatch):
    """A worker killed while its trial was starting leaves a run without latest.pt (or an empty directory):
    the retry must continue that run (from step 0), not start a new one that finds the name taken."""
    commands = []
    monkeypatch.setattr(trials.subprocess, "Popen", lambda argv, **kwargs: commands.append(argv[3:]))
    runs = tmp_path / "runs"

    def command_for(run: str) -> list[str]:
        trials.start_trial(None, run, ["optimizer.lr=1e-3"], "c.toml", tmp_path, trials.Slot(1), None, tmp_path / "logs")
        return commands[-1][:3]

    assert command_for("new") == ["train", "--config", "c.toml"]
    (runs / "emptied").mkdir(parents=True)  # killed between making its directory and writing its config
    assert command_for("emptied") == ["train", "--config", "c.toml"] and not (runs / "emptied").exists()
    (runs / "begun").mkdir()
    (runs / "begun" / RUN_CONFIG_FILE).write_text("")  # stopped before its first checkpoint
    assert command_for("begun") == ["train", "--resume", str(runs / "begun")]


@pytest.mark.parametrize(("warmup", "interval", "first"), [(10, 10, 20), (0, 25, 25), (49, 25, 50), (50, 25, 75)])
def test_successive_halving_decides_first_after_the_warmup(warmup, interval, first):
    fixed, axes = parse_settings(["optimizer.lr=1e-3,2e-3", f"optimizer.warmup_steps={warmup}", f"training.eval_interval={interval}"])
    for prune, pruner in (("asha", optuna.pruners.SuccessiveHalvingPruner), ("hyperband", optuna.pruners.HyperbandPruner)):
        chosen = pruner_for(optuna, Definition.of("demo", fixed, axes, "grid", None, prune, 0))
        assert isinstance(chosen, pruner) and chosen._min_resource == first


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "optimizer.lr=loguniform:1e-4:1e-1"], "--search grid takes listed values"),
    (["--set", "optimizer.lr=1e-3,2e-3", "--search", "tpe"], "--search tpe needs --trials N"),
    (["--set", "optimizer.lr=1e-3,2e-3", "--trials", "5"], "a grid has 2 trials"),
    (["--set", "optimizer.lr=1e-3,2e-3", "--search", "bayes"], "choose one of grid, random, tpe"),
    (["--set", "optimizer.lr=1e-3,2e-3", "--prune", "early"], "choose one of none, median, asha, hyperband"),
    (["--set", "optimizer.lr=1e-3,2e-3", "--storage", "redis://x"], "expected journal:PATH"),
    (["--resume", "nothing-here"], "no sweep 'nothing-here'"),
    (["--set", "optimizer.lr=1e-3,2e-3", "--nproc", "2"], "takes 2 slots: give --parallel 2 or more"),
])
def test_bad_sweeps_are_refused_before_training(cli, tmp_path, args, message):
    ws, config = make_workspace(tmp_path, steps=40)
    with_config = [] if args[0] == "--resume" else ["--config", config]
    result = cli("sweep", *with_config, *args, "--workspace", ws)
    assert result.exit_code == 1 and message in result.stderr, result.stderr
    assert not (ws / "runs").exists()


def test_parallel_trials_train_exactly_as_one_at_a_time(cli, tmp_path):
    ws, config = make_workspace(tmp_path, steps=40)
    grid = ["--config", config, "--set", "optimizer.lr=3e-3,1e-2", "--workspace", ws, "-q"]
    alone = cli("sweep", *grid, "--name", "alone", "--json")
    together = cli("sweep", *grid, "--name", "together", "--parallel", "2", "--json")
    assert alone.exit_code == 0 and together.exit_code == 0, alone.stderr + together.stderr
    for lr in ("3e-3", "1e-2"):
        assert losses(ws, f"alone-lr={lr}") == losses(ws, f"together-lr={lr}")
    report = json.loads(together.stdout)
    assert [r["status"] for r in report["runs"]] == ["finished"] * 2 and report["complete"]


def test_a_trial_of_two_processes_takes_two_slots_and_trains_as_one_process_does(cli, tmp_path):
    ws, config = make_workspace(tmp_path, steps=20)
    grid = ["--config", config, "--set", "optimizer.lr=3e-3,1e-2", "--workspace", ws, "-q", "--json"]
    alone = cli("sweep", *grid, "--name", "alone")
    ddp = cli("sweep", *grid, "--name", "ddp", "--parallel", "3", "--nproc", "2")  # 3 slots: one trial at a time
    assert alone.exit_code == 0 and ddp.exit_code == 0, alone.stderr + ddp.stderr
    for lr in ("3e-3", "1e-2"):
        assert "on cpu x 2 processes" in (ws / "sweeps" / "ddp" / "trials" / f"ddp-lr={lr}.log").read_text()
        one, two = losses(ws, f"alone-lr={lr}"), losses(ws, f"ddp-lr={lr}")
        assert [row[:2] for row in one] == [row[:2] for row in two]  # the same global batches: the same losses
        assert [row[2] for row in two] == pytest.approx([row[2] for row in one], rel=1e-5)


def test_tpe_search_with_pruning_reports_importance_and_saved_tokens(cli, tmp_path):
    ws, config = make_workspace(tmp_path, steps=100, eval_interval=10)
    result = cli("sweep", "--config", config, "--set", "optimizer.lr=loguniform:1e-6:3e-2", "--set", "training.batch_size=int:2:6",
                 "--search", "tpe", "--trials", "6", "--prune", "median", "--parallel", "2", "--name", "tpe", "--workspace", ws, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["name"] for r in report["runs"]] == [f"tpe-t{i:03d}" for i in range(6)]
    assert report["complete"] and set(report["importance"]) == {"optimizer.lr", "training.batch_size"}
    for run in report["runs"]:
        assert 1e-6 <= float(run["values"]["optimizer.lr"]) <= 3e-2 and run["values"]["training.batch_size"] in "23456"
        assert run["status"] in ("finished", "pruned")
    assert [r["status"] for r in report["runs"][:5]] == ["finished"] * 5  # the median pruner's first 5 trials run in full
    pruned = [r for r in report["runs"] if r["status"] == "pruned"]
    assert report["pruned"] == len(pruned)
    assert all(r["steps"] < 100 and r["stopped_at_step"] == r["steps"] for r in pruned)
    assert report["tokens_saved_by_pruning"] == sum(r["planned_tokens"] - r["tokens"] for r in pruned)
    assert all((ws / "runs" / r["name"] / "latest.pt").is_file() for r in pruned)  # a pruned run keeps its checkpoint


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_a_stopped_sweep_resumes_its_trials_from_their_checkpoints(tmp_path, how):
    ws, config = make_workspace(tmp_path, steps=120, eval_interval=10)
    args = ["--config", str(config), "--set", "optimizer.lr=1e-3,2e-3", "--name", "k"]
    first = sweep_process(ws, *args)
    run = ws / "runs" / "k-lr=1e-3"
    deadline = time.monotonic() + 120
    while not (run / "latest.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    first.send_signal(how)
    _, err = first.communicate(timeout=60)
    if how == signal.SIGINT:  # the sweep itself stopped its trials after they saved
        assert first.returncode == 130 and "sweep interrupted" in err and "Traceback" not in err
    while read_run(run).status == "running" and time.monotonic() < deadline:  # after kill -9 the kernel tells it
        time.sleep(0.1)
    assert read_run(run).status == "interrupted"  # it saved its checkpoint on the way out
    done_before = max(step for _, step, _ in losses(ws, "k-lr=1e-3"))
    assert done_before < 120

    report = finish(sweep_process(ws, *args))
    assert [r["status"] for r in report["runs"]] == ["finished", "finished"]
    steps = [step for kind, step, _ in losses(ws, "k-lr=1e-3") if kind == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 120  # continued, not started again beside old rows
    assert "resum" in (run / "train.log").read_text().lower()


def test_two_workers_share_one_study_and_finish_a_killed_workers_trial(tmp_path):
    ws, config = make_workspace(tmp_path, steps=60, eval_interval=10)
    storage = f"journal:{tmp_path / 'shared-study.log'}"
    args = ["--config", str(config), "--set", "optimizer.lr=loguniform:1e-4:1e-2", "--search", "random", "--trials", "6",
            "--name", "shared", "--storage", storage, "--parallel", "2"]
    doomed, survivor = sweep_process(ws, *args), sweep_process(ws, *args)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((ws / "runs").glob("shared-t*/latest.pt")) if (ws / "runs").is_dir() else []) < 2:
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=60)
    report = finish(survivor)
    names = [r["name"] for r in report["runs"]]
    outcomes = [(r["trial"], r["name"], r["status"], r["error"]) for r in report["runs"]]
    assert len(names) == len(set(names)) == 6 and report["complete"], outcomes  # six trials, none taken twice
    assert "shared-t000" in names  # the killed worker's first trial, finished by the other (as a retry: a new trial number)
    assert all(r["status"] == "finished" and r["steps"] == 60 for r in report["runs"])
    for name in names:
        steps = [step for kind, step, _ in losses(ws, name) if kind == "train"]
        assert steps == sorted(set(steps))  # each run trained once through (a resumed one continued)
    assert sorted(p.name for p in (ws / "runs").iterdir()) == sorted(names)  # no run beyond the study's six


def test_a_sqlite_study_is_resumed_by_name_and_read_by_optuna_and_trials_write_tensorboard(cli, tmp_path):
    ws, config = make_workspace(tmp_path, steps=20)
    storage = f"sqlite:///{tmp_path / 'sweeps.db'}"
    first = cli("sweep", "--config", config, "--set", "optimizer.lr=1e-3,3e-3", "--name", "sq", "--storage", storage,
                "--tensorboard", "--workspace", ws, "--json")
    assert first.exit_code == 0, first.stderr
    assert all(any((ws / "runs" / r["name"] / "tensorboard").iterdir()) for r in json.loads(first.stdout)["runs"])
    again = cli("sweep", "--resume", "sq", "--storage", storage, "--workspace", ws, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["runs"] == json.loads(first.stdout)["runs"]
    study = optuna.load_study(study_name="sq", storage=storage)  # Optuna's own API reads it as it is
    assert sorted(t.params["optimizer.lr"] for t in study.trials) == ["1e-3", "3e-3"]
    assert study.best_value == min(r["final_val_loss"] for r in json.loads(first.stdout)["runs"])


def test_workers_on_two_processes_share_a_postgresql_study(tmp_path):
    """The cluster set-up: a database server, and workers started together (both create its tables)
    that each take trials no other took."""
    ws, config = make_workspace(tmp_path, steps=20)
    with postgres_url() as storage:
        args = ["--config", str(config), "--set", "optimizer.lr=1e-3,2e-3,3e-3,4e-3", "--name", "pg", "--storage", storage]
        first, second = sweep_process(ws, *args), sweep_process(ws, *args)
        report = [finish(first), finish(second)][-1]
        study = optuna.load_study(study_name="pg", storage=storage)
        assert sorted(t.params["optimizer.lr"] for t in study.trials) == ["1e-3", "2e-3", "3e-3", "4e-3"]
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({r["name"] for r in report["runs"]}) == 4 and report["complete"]
    assert sorted(p.name for p in (ws / "runs").iterdir()) == sorted(r["name"] for r in report["runs"])  # each trained once


def test_a_trial_whose_process_ends_before_its_run_is_tried_again(tmp_path):
    """A trial process stopped from outside the sweep (a SIGTERM from elsewhere, the out-of-memory killer)
    leaves its run interrupted, not over: the sweep retries it from its checkpoint, not records it so."""
    ws, config = make_workspace(tmp_path, steps=60, eval_interval=10)
    worker = sweep_process(ws, "--config", str(config), "--set", "optimizer.lr=loguniform:1e-3:2e-3", "--search", "random",
                           "--trials", "1", "--name", "lost")
    run = ws / "runs" / "lost-t000"
    deadline = time.monotonic() + 120
    while not (run / "latest.pt").is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    [trial_process] = psutil.Process(worker.pid).children()
    trial_process.send_signal(signal.SIGTERM)
    report = finish(worker)
    [row] = report["runs"]
    assert (row["name"], row["status"], row["steps"], row["trial"]) == ("lost-t000", "finished", 60, 1), row  # trial 1: the retry
    assert report["complete"]
    steps = [step for kind, step, _ in losses(ws, "lost-t000") if kind == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 60  # resumed, not started again


def test_a_trial_whose_worker_died_as_it_asked_for_it_is_failed_without_using_the_budget(tmp_path):
    """Killed between asking the study for a trial and naming its run, a worker leaves a running trial
    with nothing to resume: it is failed, left out of the results, and the budget still has its place."""
    _, axes = parse_settings(["optimizer.lr=loguniform:1e-4:1e-2"])
    study = open_study("s", f"journal:{tmp_path / 'study.log'}", Definition.of("demo", [], axes, "random", 2, "none", 0))
    orphan = study.study.ask()  # as a worker's next_trial does, before it sets the run's name
    assert study.requeue(orphan.number)
    assert study.frozen(orphan.number).state == optuna.trial.TrialState.FAIL
    assert not study.waiting() and study.results() == [] and study.has_work()  # nothing queued; two trials still to run
    first = study.next_trial()
    assert study.run_name(first) == f"s-t{first.number:03d}"
