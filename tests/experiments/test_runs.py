"""The runs table and run-directory reading, on small fake run directories (no training needed)."""

from __future__ import annotations

import fcntl
import json
import math
from pathlib import Path

import pytest

from lmcli.errors import LmcliError
from lmcli.experiments.runs import read_run, resolve_run, workspace_runs
from lmcli.workspace import Workspace


def write_run(
    runs_dir: Path, name: str, *, lr: float = 1e-3, batch_size: int = 4, steps: int = 40, end: str | None = "final_eval",
    loss0: float = 6.0, extra_rows: list[dict] = (),
) -> Path:
    """A run directory like `lmcli train` leaves: config.toml, metrics.jsonl (train rows every 10 steps,
    eval rows every 20, then ``end`` as the last row kind) and train.log."""
    run = runs_dir / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(
        f"[model]\ncontext_length = 16\nd_model = 32\n\n[optimizer]\nlr = {lr!r}\n\n"
        f"[training]\nbatch_size = {batch_size}\nmax_steps = {steps}\ntotal_tokens = 1000\n"
    )
    rows = []
    for step in range(10, steps + 1, 10):
        tokens = step * batch_size * 16
        loss = loss0 / (1 + step / 20)
        rows.append({"kind": "train", "step": step, "tokens": tokens, "elapsed_s": step * 0.5, "lr": lr * step / steps,
                     "loss": loss, "grad_norm": 1.0 + 1 / step, "tokens_per_s": 1000.0 + step, "mfu": None})
        if step % 20 == 0:
            rows.append({"kind": "eval", "step": step, "tokens": tokens, "val_loss": loss + 0.1,
                         "val_perplexity": math.exp(loss + 0.1)})
    rows += list(extra_rows)
    if end == "final_eval":
        rows.append({"kind": "final_eval", "step": steps, "tokens": steps * batch_size * 16, "val_loss": 1.5,
                     "val_perplexity": math.exp(1.5)})
    elif end is not None:
        rows.append({"kind": end, "step": steps})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "train.log").write_text("2025-01-01 00:00:00 training\n")
    return run


def test_summary_is_derived_from_the_run_files(tmp_path):
    run = read_run(write_run(tmp_path, "a", steps=40))
    s = run.summary()
    assert s["name"] == "a" and s["status"] == "finished"
    assert (s["steps"], s["max_steps"]) == (40, 40)
    assert s["best_val_loss"] == pytest.approx(6.0 / 3 + 0.1)  # eval at step 40 is the lowest
    assert s["final_val_loss"] == 1.5
    assert s["tokens_per_s"] == pytest.approx(1025.0)  # median of 1010, 1020, 1030, 1040
    assert s["elapsed_s"] == 20.0


@pytest.mark.parametrize("end, status", [("final_eval", "finished"), ("diverged", "diverged"),
                                         ("interrupted", "interrupted"), ("failed", "failed"), (None, "resumable")])
def test_status_comes_from_the_last_row(tmp_path, end, status):
    assert read_run(write_run(tmp_path, "r", end=end)).status == status


def test_a_resumed_run_is_judged_by_its_last_row_not_an_old_interruption(tmp_path):
    later = {"kind": "train", "step": 50, "tokens": 1, "elapsed_s": 30.0, "lr": 0.0, "loss": 1.0, "grad_norm": 1.0,
             "tokens_per_s": 1.0}
    path = write_run(tmp_path, "r", end=None, extra_rows=[{"kind": "interrupted", "step": 40}, later])
    assert read_run(path).status == "resumable"  # killed after it was resumed


def test_a_locked_log_means_running(tmp_path):
    path = write_run(tmp_path, "live", end=None)
    with open(path / "train.log", "a") as log:
        fcntl.flock(log, fcntl.LOCK_EX)  # what a live training process holds
        assert read_run(path).status == "running"
    assert read_run(path).status == "resumable"  # nothing holds the lock, and no final row: the process died


def test_a_cut_off_last_metrics_line_is_ignored_but_a_bad_middle_line_marks_the_run_damaged(tmp_path):
    path = write_run(tmp_path, "r", end=None)
    with open(path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "ste')
    run = read_run(path)
    assert run.steps == 40 and run.status == "resumable" and run.problem is None
    (path / "metrics.jsonl").write_text('{"kind": "tr\n{"kind": "train", "step": 1}\n\xff\xfe\n')
    run = read_run(path)
    assert run.status == "damaged" and run.steps == 1 and "2 line(s) of metrics.jsonl" in run.problem and "line 1" in run.problem


def test_resolve_run_by_path_or_name(tmp_path):
    ws = Workspace(tmp_path / "ws")
    path = write_run(ws.runs_dir, "base")
    assert resolve_run(str(path), ws) == path
    assert resolve_run("base", ws) == path
    with pytest.raises(LmcliError, match="no run nope"):
        resolve_run("nope", ws)
    (ws.runs_dir / "empty").mkdir()
    assert workspace_runs(ws) == [path]  # a directory without config or metrics is not a run


def test_runs_cli_json(cli, tmp_path):
    runs_dir = tmp_path / "workspace" / "runs"
    write_run(runs_dir, "first")
    write_run(runs_dir, "second", lr=1e3, end="diverged", steps=20)
    result = cli("runs", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    by_name = {r["name"]: r for r in report["runs"]}
    assert set(by_name) == {"first", "second"}
    assert by_name["first"]["status"] == "finished" and by_name["second"]["status"] == "diverged"
    assert by_name["second"]["steps"] == 20 and by_name["second"]["final_val_loss"] is None


def test_runs_cli_table_and_empty_workspace(cli, tmp_path):
    result = cli("runs")
    assert result.exit_code == 0 and "no runs in" in result.stdout
    write_run(tmp_path / "workspace" / "runs", "tiny-run", steps=40)
    result = cli("runs")
    assert result.exit_code == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if "tiny-run" in line)
    assert "finished" in line and "40/40" in line and "2.1000" in line and "1.5000" in line and "20.0s" in line
