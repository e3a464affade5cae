"""``lmcli sweep``: grid parsing, and a real tiny sweep (2 learning rates, one of them diverging)."""

from __future__ import annotations

import json
import os
import time
from types import SimpleNamespace

import pytest

from lmcli.commands.sweep import print_report
from lmcli.errors import LmcliError
from lmcli.experiments import sweep
from lmcli.experiments.search_space import parse_settings, split_values
from lmcli.experiments.study import LOST, LOST_TRIES, grid_run_names
from lmcli.experiments.trials import TrialProcess
from lmcli.training.run import claim_run_dir
from lmcli.ui.console import console
from lmcli.workspace import Workspace
from tests.tiny import tiny_workspace as make_tiny_workspace


def test_values_split_on_top_level_commas_only():
    assert split_values("1e-4, 3e-4,1e-3") == ["1e-4", "3e-4", "1e-3"]
    assert split_values("[0.9,0.95],[0.9, 0.99]") == ["[0.9,0.95]", "[0.9, 0.99]"]
    assert split_values('"a,b",c') == ['"a,b"', "c"]
    with pytest.raises(LmcliError, match="empty item"):
        split_values("1,,2")


def test_grid_is_the_cartesian_product_with_fixed_overrides_apart():
    fixed, axes = parse_settings(["optimizer.lr=1e-3,3e-3", "training.max_steps=20", "training.batch_size=4,8"])
    assert fixed == ["training.max_steps=20"]
    points = grid_run_names("s", axes)
    assert [name for _, name in points] == ["s-lr=1e-3-batch_size=4", "s-lr=1e-3-batch_size=8",
                                            "s-lr=3e-3-batch_size=4", "s-lr=3e-3-batch_size=8"]
    assert points[1][0] == {"optimizer.lr": "1e-3", "training.batch_size": "8"}
    # keys whose last parts clash keep their full names; odd characters do not reach the file name
    _, named = parse_settings(["model.x=1,2", "optimizer.x=[1, 2],3"])
    assert grid_run_names("s", named)[0][1] == "s-model.x=1-optimizer.x=1_2"


@pytest.mark.parametrize("settings, message", [
    (["optimizer.lr"], "expected section.key=value"),
    (["optimizer.lr=1,2", "optimizer.lr=3,4"], "given twice"),
    (["optimizer.lr=1"], "nothing to sweep"),
])
def test_bad_grids(cli, settings, message):
    args = [a for s in settings for a in ("--set", s)]
    result = cli("sweep", "--config", "demo", *args)
    assert result.exit_code == 1 and message in result.stderr


@pytest.fixture
def tiny_workspace(tmp_path):
    return make_tiny_workspace(tmp_path)


def test_sweep_goes_on_past_a_diverging_run(cli, tiny_workspace):
    ws, config = tiny_workspace
    result = cli("sweep", "--config", config, "--set", "optimizer.lr=1e-3,1e6", "--name", "lr", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    runs = {r["name"]: r for r in report["runs"]}
    assert list(runs) == ["lr-lr=1e-3", "lr-lr=1e6"]
    good, bad = runs["lr-lr=1e-3"], runs["lr-lr=1e6"]
    assert good["status"] == "finished" and good["steps"] == 6 and good["final_val_loss"] is not None
    assert bad["status"] == "diverged" and "diverged" in bad["error"] and bad["final_val_loss"] is None
    assert report["best"] == "lr-lr=1e-3" and report["complete"]
    sweep_dir = ws / "sweeps" / "lr"
    assert json.loads((sweep_dir / "sweep.json").read_text())["runs"] == report["runs"]
    assert sorted(p.name for p in sweep_dir.iterdir()) == ["study.log", "sweep.json", "train_loss.png", "trials", "val_loss.png"]
    assert sorted(p.name for p in (sweep_dir / "trials").iterdir()) == ["lr-lr=1e-3.log", "lr-lr=1e6.log"]
    # the runs are ordinary runs: `lmcli runs` sees both with their status
    statuses = {r["name"]: r["status"] for r in json.loads(cli("runs", "--json").stdout)["runs"]}
    assert statuses == {"lr-lr=1e-3": "finished", "lr-lr=1e6": "diverged"}
    # the same sweep again has nothing left to do: it trains nothing and reports the same runs
    mtimes = {p: p.stat().st_mtime_ns for p in (ws / "runs").rglob("*")}
    again = cli("sweep", "--config", config, "--set", "optimizer.lr=1e-3,1e6", "--name", "lr", "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["runs"] == report["runs"]
    assert {p: p.stat().st_mtime_ns for p in (ws / "runs").rglob("*")} == mtimes
    # another sweep under the same name is refused before training anything
    other = cli("sweep", "--config", config, "--set", "optimizer.lr=1e-3,1e-2", "--name", "lr")
    assert other.exit_code == 1 and "exists with other settings" in other.stderr


def test_sweep_errors_come_before_any_training(cli, tiny_workspace):
    ws, config = tiny_workspace
    bad_value = cli("sweep", "--config", config, "--set", "training.batch_size=2,-1", "--name", "b")
    assert bad_value.exit_code == 1 and "point training.batch_size=-1: training.batch_size must be positive" in bad_value.stderr
    assert not (ws / "runs").exists()
    (ws / "data" / "train.npy").unlink()
    no_data = cli("sweep", "--config", config, "--set", "optimizer.lr=1e-3,2e-3", "--name", "d")
    assert no_data.exit_code == 1 and "train.npy does not exist" in no_data.stderr
    assert not (ws / "sweeps").exists()  # nothing was trained, so nothing looks like a result


def test_the_final_table_names_every_run_and_the_best(capsys, monkeypatch):
    monkeypatch.setattr(console, "_width", 160)  # the private field: undoing a set of the property would pin the width
    run = {"steps": 6, "best_val_loss": 5.5, "elapsed_s": 61.0}
    report = {"sweep": "lr", "dir": "/ws/sweeps/lr", "axes": {"optimizer.lr": "1e-3,1e3"}, "search": "grid", "prune": "none",
              "complete": True, "best": "lr-lr=1e-3", "plots": ["/ws/sweeps/lr/val_loss.png"], "pruned": 0, "importance": None,
              "runs": [
                  {**run, "trial": 0, "name": "lr-lr=1e-3", "values": {"optimizer.lr": "1e-3"}, "status": "finished", "final_val_loss": 5.25},
                  {**run, "trial": 1, "name": "lr-lr=1e3", "values": {"optimizer.lr": "1e3"}, "status": "diverged", "final_val_loss": None}]}
    print_report(report, as_json=False)
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if "lr-lr=" in line and "│" in line]
    assert "1e-3" in rows[0] and "finished" in rows[0] and "5.2500" in rows[0] and "5.5000" in rows[0] and "1:01" in rows[0]
    assert "1e3" in rows[1] and "diverged" in rows[1] and " - " in rows[1]
    assert "best: lr-lr=1e-3" in out and "wrote /ws/sweeps/lr/val_loss.png" in out and "results: /ws/sweeps/lr/sweep.json" in out


class OneTrialStudy:
    """What a sweep worker asks of its study, for one trial whose run is "r"; records the heartbeats."""

    definition = SimpleNamespace(fixed=[], config="tiny.toml", trials=1)

    def __init__(self):
        self.beats: list[int] = []

    def run_name(self, trial) -> str:
        return "r"

    def beat(self, number: int) -> None:
        self.beats.append(number)

    def requeue_stale(self) -> list[int]:
        return []


def test_a_trial_whose_run_is_held_waits_without_stopping_the_worker(tmp_path, monkeypatch):
    """A retry of a dead worker's trial must not start while that trial's process still holds the run
    (it saves its checkpoint on the SIGTERM its worker's death sent it): started then, it would fail.
    It waits in the worker's loop, which keeps beating for it (and for the worker's other trials)."""
    started = []
    monkeypatch.setattr(sweep, "start_trial", lambda trial, run, *args: started.append(run) or SimpleNamespace(run=run))
    study = OneTrialStudy()
    plan = sweep.SweepPlan("s", tmp_path / "sweeps" / "s", Workspace(tmp_path), "journal", None)
    worker = sweep.Worker(study, plan, sweep.SweepObserver())
    held = claim_run_dir(tmp_path / "runs" / "r", new=True)  # the dying trial's lock
    trial = SimpleNamespace(number=7, params={})
    worker.start(trial, worker.free.pop(0), time.monotonic() + 60)
    assert not started and 7 in worker.held and not worker.free  # held, keeping its slot
    worker.keep_alive()
    assert study.beats == [7]
    worker.start_released()
    assert not started  # still held
    os.close(held)  # the dying trial saved and exited
    worker.start_released()
    assert started == ["r"] and not worker.held and 7 in worker.running
    # a run held past the deadline is started anyway (it fails on the taken run, and that is recorded)
    held = claim_run_dir(tmp_path / "runs" / "r", new=False)
    worker.start(SimpleNamespace(number=8, params={}), sweep.Slot(1), time.monotonic() - 1)
    assert started == ["r", "r"]
    os.close(held)


class EndingStudy(OneTrialStudy):
    """Records how the worker ends trials."""

    def __init__(self):
        super().__init__()
        self.ends: list[tuple] = []

    def requeue(self, number: int, lost: bool = False) -> bool:
        self.ends.append(("retry", number, lost))
        return True

    def finish(self, trial, status: str, final_val_loss, error=None, stopped_at=None) -> None:
        self.ends.append(("finish", status, error))

    def frozen(self, number: int):
        return SimpleNamespace(number=number, user_attrs={})

    def results(self) -> list:
        return []


@pytest.mark.parametrize("run_status", ["interrupted", "resumable", "running"])
def test_a_trial_whose_process_ended_unasked_is_retried_until_it_counts_as_failed(tmp_path, monkeypatch, run_status):
    """Its process ended while its run was not over (killed from outside, or its run held by a process that
    outlived another sweep): retried, up to LOST_TRIES tries in a row, then recorded as failed."""
    monkeypatch.setattr(sweep, "read_run", lambda path: SimpleNamespace(status=run_status))
    monkeypatch.setattr(sweep, "is_run_dir", lambda path: True)
    monkeypatch.setattr(sweep, "result_row", lambda frozen, run: {})
    study = EndingStudy()
    plan = sweep.SweepPlan("s", tmp_path / "sweeps" / "s", Workspace(tmp_path), "journal", None)
    worker = sweep.Worker(study, plan, sweep.SweepObserver())
    log = tmp_path / "r.log"
    log.write_text("error: killed\n")
    for lost_before in range(LOST_TRIES):
        optuna_trial = SimpleNamespace(number=lost_before, user_attrs={LOST: lost_before} if lost_before else {})
        worker.finish(TrialProcess(optuna_trial, "r", tmp_path / "r", sweep.Slot(1), SimpleNamespace(returncode=1), log))
    assert study.ends[:-1] == [("retry", n, True) for n in range(LOST_TRIES - 1)]
    assert study.ends[-1] == ("finish", "failed", f"killed (its process ended {LOST_TRIES} times in a row before its run did)")
