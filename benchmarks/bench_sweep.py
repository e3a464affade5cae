"""Sweeps: trials in parallel against one at a time, and a pruned search against the full grid.

Both parts use the demo model (4 layers, d_model 128, the demo corpus and its 1,024-token BPE)
shortened to 120 steps of 16 x 128 tokens, evaluated every 10 steps, in a fresh workspace under
``.bench/sweep/``; every sweep is the ``lmcli sweep`` command, timed from outside.

1. A 4-point learning-rate grid with ``--parallel 2`` (1 thread per trial) against the same grid
   one trial at a time with 2 threads: the wall-time ratio (goal: at most 0.65x). One of its
   trials is also run alone on 1 thread: its losses must equal those of the same trial run beside
   another (a trial does not depend on what runs beside it; 1 and 2 threads differ in the last
   bits, since the threads split the sums differently). The trials' training speeds show the
   ratio's ceiling on this machine: the tokens/s of one trial on all cores against two trials
   side by side on one core each. It runs three times: on the demo model, and on two smaller ones
   (d_model 64, 2 layers; d_model 32, 1 layer), which use a second thread less well and so leave
   more to a second trial.
2. A 12-point learning-rate grid (log-spaced, 1e-4 to 1e-1) with ``--prune asha`` against the
   same grid without pruning (under a pruner a grid runs in a seeded random order): the best
   trial of each, their final validation losses, and the training tokens each spent (goal: the same best, or within 1% of its loss, with at most half
   the tokens).

Usage: python benchmarks/bench_sweep.py [--only parallel|pruning] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.bench_train_bpe import cpu_name  # noqa: E402

WORK = REPO / ".bench" / "sweep"
SHORT = ["training.batch_size=16", "training.total_tokens=245760", "optimizer.warmup_steps=10", "optimizer.min_lr=0",
         "training.eval_interval=10", "training.eval_batches=4", "training.checkpoint_interval=40", "system.device=cpu"]
PARALLEL_LRS = "1e-3,3e-3,1e-2,3e-2"
# The parallel part also runs on smaller models (d_model 64, 2 layers; d_model 32, 1 layer): the gain of
# --parallel is what one trial leaves of the cores unused, and a smaller model leaves more of them.
MODELS = {"demo": [], "small": ["model.d_model=64", "model.num_layers=2", "model.num_heads=2", "model.d_ff=192"],
          "tiny": ["model.d_model=32", "model.num_layers=1", "model.num_heads=2", "model.d_ff=96"]}
SEARCH_LRS = ",".join(f"{lr:.3g}" for lr in np.logspace(-4, -1, 12))


def lmcli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "lmcli", *args, "--workspace", str(WORK / "workspace")],
                            capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"lmcli {' '.join(args[:3])} failed: {result.stderr.strip()[-500:]}")
    return result


def prepare(keep: bool) -> None:
    """A fresh workspace with the demo corpus, its tokenizer and token ids (``keep``: only the sweeps to redo go)."""
    if keep and (WORK / "workspace" / "data" / "train.npy").is_file():
        for name in ("grid", "asha", *(sweep_name(part, model) for model in MODELS for part in ("seq", "par", "one"))):
            shutil.rmtree(WORK / "workspace" / "sweeps" / name, ignore_errors=True)
            for run in (WORK / "workspace" / "runs").glob(f"{name}-*"):
                shutil.rmtree(run)
        return
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    lmcli("train-bpe", "--vocab", "1024")
    lmcli("encode")


def sweep_name(part: str, model: str) -> str:
    """The name of a parallel-part sweep (or run) of ``model``: seq, par, one; seq-small, ..."""
    return part if model == "demo" else f"{part}-{model}"


def sweep(name: str, lrs: str, *extra: str, threads: int | None = None, model: Sequence[str] = ()) -> tuple[dict, float]:
    settings = [a for s in [f"optimizer.lr={lrs}", *SHORT, *model] for a in ("--set", s)]
    env = os.environ | ({"OMP_NUM_THREADS": str(threads)} if threads else {})
    start = time.perf_counter()
    result = lmcli("sweep", "--config", "demo", *settings, "--name", name, *extra, "--json", env=env)
    return json.loads(result.stdout), time.perf_counter() - start


def run_losses(run: str) -> list:
    rows = [json.loads(line) for line in (WORK / "workspace" / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    return [(r["kind"], r["step"], r.get("loss", r.get("val_loss"))) for r in rows if r["kind"] in ("train", "eval", "final_eval")]


def by_lr(report: dict) -> dict[str, dict]:
    return {r["values"]["optimizer.lr"]: r for r in report["runs"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--only", choices=("parallel", "pruning"), help="measure one part, keep the other from the last report")
    args = parser.parse_args()
    saved = WORK / "report.json"
    previous = json.loads(saved.read_text()) if args.only and saved.is_file() else {}
    prepare(keep=bool(args.only))
    cores = os.cpu_count() or 1
    result = {"machine": {"cores": cores, "cpu": cpu_name()}}
    result["parallel"] = previous.get("parallel") if args.only == "pruning" else {
        model: measure_parallel(cores, model, sets) for model, sets in MODELS.items()}
    result["pruning"] = previous.get("pruning") if args.only == "parallel" else measure_pruning()
    saved.write_text(json.dumps(result, indent=1))
    if args.json:
        print(json.dumps(result))
        return
    print_result(result)


def measure_parallel(cores: int, model: str, sets: list[str]) -> dict:
    sequential, seq_s = sweep(sweep_name("seq", model), PARALLEL_LRS, threads=cores, model=sets)
    parallel, par_s = sweep(sweep_name("par", model), PARALLEL_LRS, "--parallel", "2", model=sets)
    lr = PARALLEL_LRS.split(",")[0]
    one = f"{sweep_name('one', model)}-lr={lr}"
    settings = [a for s in [f"optimizer.lr={lr}", *SHORT, *sets] for a in ("--set", s)]
    lmcli("train", "--config", "demo", *settings, "--name", one, "-q", env=os.environ | {"OMP_NUM_THREADS": "1"})
    seq_speed = np.mean([training_speed(r["name"]) for r in sequential["runs"]])
    par_speed = np.mean([training_speed(r["name"]) for r in parallel["runs"]])
    return {"sets": sets, "sequential_s": seq_s, "parallel_s": par_s, "ratio": par_s / seq_s,
            "losses_identical": run_losses(one) == run_losses(by_lr(parallel)[lr]["name"]),
            "tokens_per_s": {"one_trial_all_cores": seq_speed, "one_trial_one_core": training_speed(one),
                             "two_trials_side_by_side": 2 * par_speed},
            "ceiling_ratio": seq_speed / (2 * par_speed)}


def training_speed(run: str) -> float:
    """A run's training tokens per second (its train rows' mean)."""
    rows = [json.loads(line) for line in (WORK / "workspace" / "runs" / run / "metrics.jsonl").read_text().splitlines()]
    return float(np.mean([r["tokens_per_s"] for r in rows if r["kind"] == "train"]))


def measure_pruning() -> dict:
    full, full_s = sweep("grid", SEARCH_LRS)
    pruned, pruned_s = sweep("asha", SEARCH_LRS, "--prune", "asha")
    best_full, best_pruned = (next(r for r in rep["runs"] if r["name"] == rep["best"]) for rep in (full, pruned))
    return {
        "grid_s": full_s, "asha_s": pruned_s,
        "grid_tokens": full["tokens_trained"], "asha_tokens": pruned["tokens_trained"],
        "token_ratio": pruned["tokens_trained"] / full["tokens_trained"],
        "pruned_trials": pruned["pruned"],
        "best_grid": {"lr": best_full["values"]["optimizer.lr"], "final_val_loss": best_full["final_val_loss"]},
        "best_asha": {"lr": best_pruned["values"]["optimizer.lr"], "final_val_loss": best_pruned["final_val_loss"]},
        "statuses": {lr: r["status"] for lr, r in by_lr(pruned).items()},
    }


def print_result(result: dict) -> None:
    """The parts measured (one may be missing: --only without an earlier report)."""
    cores = result["machine"]["cores"]
    print(f"sweep benchmark, {cores} cores ({result['machine']['cpu']})")
    for model, p in (result["parallel"] or {}).items():
        print(f"{model} model, 4-point lr grid: one at a time ({cores} threads) {p['sequential_s']:.1f} s, --parallel 2 (1 thread each) "
              f"{p['parallel_s']:.1f} s: {p['ratio']:.2f}x (goal <= 0.65x)")
        speed = p["tokens_per_s"]
        print(f"training tokens/s: one trial on {cores} threads {speed['one_trial_all_cores']:,.0f}, on 1 thread "
              f"{speed['one_trial_one_core']:,.0f}; two trials side by side {speed['two_trials_side_by_side']:,.0f} together: "
              f"the training alone allows {p['ceiling_ratio']:.2f}x")
        print(f"a trial's losses beside another = alone on the same threads: {p['losses_identical']}")
    q = result["pruning"]
    if q:
        print(f"12-point lr grid: full {q['grid_s']:.1f} s, {q['grid_tokens']:,} tokens; --prune asha {q['asha_s']:.1f} s, "
              f"{q['asha_tokens']:,} tokens: {q['token_ratio']:.2f}x the tokens (goal <= 0.5x), {q['pruned_trials']} pruned")
        gap = q["best_asha"]["final_val_loss"] / q["best_grid"]["final_val_loss"] - 1
        print(f"best: grid lr {q['best_grid']['lr']} ({q['best_grid']['final_val_loss']:.4f}), asha lr {q['best_asha']['lr']} "
              f"({q['best_asha']['final_val_loss']:.4f}): {gap:+.2%} (goal within 1%)")


if __name__ == "__main__":
    main()
