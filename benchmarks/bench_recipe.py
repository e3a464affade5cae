"""The modern recipe, measured: each switch alone against the CS336 baseline, then the winners combined.

A small Llama (d_model 128, 4 layers, 4 heads, context 128, a 2,048-token BPE) is trained on
the 20 MB bench corpus (``../shared/bench/docs-bench.txt.xz``: Python and Perl documentation,
split by document into train and validation) for the same number of tokens, same seed, same
data order, in every run. The baseline is CS336's recipe (AdamW, cosine schedule). Each
variant changes one thing:

    wsd       optimizer.schedule = "wsd"        (warmup-stable-decay)
    muon      optimizer.name = "muon"           (Muon for the blocks' matrices, AdamW for the rest)
    qk_norm   model.qk_norm = true
    z_loss    training.z_loss = 1e-4
    softcap   model.logit_softcap = 30
    relu2     model.ffn = "relu2"               (d_ff 576: the same parameters as SwiGLU's 384)
    gqa       model.num_kv_heads = 2            (2 key/value heads for 4 query heads)
    group_lr  optimizer.embedding_lr, head_lr   (AdamW with the embeddings' and the head's own rates)

Every variant runs at its own best settings, each from a 3-point ``lmcli sweep`` (x0.5, x1, x2)
extended by up to two more points (x2 or x0.5 each) while the best lies on the grid's edge, in
turn: Muon's matrices' rate ``optimizer.muon_lr`` (Muon only), the learning rate
``optimizer.lr`` (under Muon, that of the embeddings, head and gains), the embeddings' and the
head's own rates ``optimizer.embedding_lr`` and ``head_lr`` (from the learning rate; Muon and
group_lr only), and a WSD schedule's ``optimizer.decay_fraction`` (from 0.2). Where a setting
moves, the best of the others can move too, so the combination (whose settings the bundled speedrun
configs take) goes round its settings again until each has been swept without moving since the
last one that moved (at most MAX_PASSES rounds); the switches alone get one round. The table gives,
for each, its final validation loss and the fraction of the baseline's tokens (and wall time)
it needed to reach the baseline's final validation loss, read off its validation curve
(interpolated between evaluations; "-" when it never did); time is those tokens at the variant's training rate
(``interleaved_speeds``: every variant's steps in one process, in turn, so Muon's extra matrix work counts
and the machine's drift falls on all alike). Then the variants that won (a final loss more than
WIN_MARGIN below the baseline's) are combined, swept and measured the same way, and the
stability check trains the baseline and the combination at 3x and 10x their best rates.

A caveat on reading the ratios: they are read from one run per variant at the full budget. A
schedule that does its decay at the end (WSD) reaches a given loss late in such a run, so its
ratio understates what a shorter WSD run would give.

Usage: python benchmarks/bench_recipe.py [--steps 300] [--only VARIANT ...] [--out docs/recipe-curves.png] [--json]
A run takes about a minute and a half on 2 CPU cores; ``--only wsd group_lr muon qk_norm`` (about 90 runs,
the combination in three rounds) about two hours.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the speeds import this checkout's lmcli
BENCH_XZ = REPO.parent / "shared" / "bench" / "docs-bench.txt.xz"
WORK = REPO / ".bench" / "recipe"
EOT = "<|endoftext|>"
VALID_SHARE = 0.05  # the last 5% of the documents

BASE_CONFIG = """
[model]
vocab_size = 2048
context_length = 128
d_model = 128
num_layers = 4
num_heads = 4
d_ff = 384
rope_theta = 10000.0

[optimizer]
lr = {lr}
min_lr = {min_lr}
warmup_steps = {warmup}
betas = [0.9, 0.95]
weight_decay = 0.1
no_decay = ["*ln*", "token_embeddings.weight"]
grad_clip = 1.0

[training]
batch_size = 16
max_steps = {steps}
log_interval = 5
eval_interval = {eval_interval}
eval_batches = 8
final_eval_tokens = 65536
checkpoint_interval = {steps}
seed = 0

[system]
device = "cpu"
"""
BASE_LR = 3e-3
VARIANTS = {  # name -> the --set values that make it
    "baseline": [],
    "wsd": ["optimizer.schedule=wsd"],
    "muon": ["optimizer.name=muon"],
    "qk_norm": ["model.qk_norm=true", 'optimizer.no_decay=["*ln*","*_norm*","token_embeddings.weight"]'],  # gains: no decay
    "z_loss": ["training.z_loss=1e-4"],
    "softcap": ["model.logit_softcap=30"],
    "relu2": ["model.ffn=relu2", "model.d_ff=576"],
    "gqa": ["model.num_kv_heads=2"],
    "group_lr": [],  # AdamW with the embeddings' and the head's own rates (swept), the rest as the baseline
}
GROUP_RATES = ["optimizer.embedding_lr", "optimizer.head_lr"]  # swept for muon and group_lr, from optimizer.lr
SWEEP_FACTORS = (0.5, 1.0, 2.0)
DECAY_FRACTION = 0.2  # where a WSD sweep of optimizer.decay_fraction starts (lmcli's default)
UPPER = {"optimizer.decay_fraction": 1.0}  # sweeps stop short of values past these
MAX_EXTENSIONS = 2  # extra points past the grid's edge when the best rate lies on it
# One pass of one-setting-at-a-time sweeps depends on where it starts (two runs whose combinations
# started from different settings ended 0.010 apart, and a hand probe beat both): the combination
# goes round its settings until none moves.
MAX_PASSES = 3
STABILITY_FACTORS = (3.0, 10.0)
# A switch wins (and joins the combination) when its final validation loss is lower than the
# baseline's by more than this. z-loss and soft-capping once won by 0.0005 nats each, and the
# combination paid their cost in time for nothing; the baseline alone ends 0.028 apart between
# seeds 0 and 1 (variants share seed 0 and its data order, so they differ less by chance).
WIN_MARGIN = 0.01


def lmcli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "LMCLI_WORKSPACE": str(WORK / "ws"), "PYTHONPATH": str(REPO), "COLUMNS": "120"}
    result = subprocess.run([sys.executable, "-m", "lmcli", *args], env=env, capture_output=True, text=True, check=False)
    if check and result.returncode:
        sys.exit(f"lmcli {' '.join(args)} failed:\n{result.stderr}")
    return result


def prepare_data() -> None:
    """Train/validation text split by document, a 2,048-token BPE, and their token ids (once)."""
    data = WORK / "ws" / "data"
    if (data / "valid.npy").exists() and (WORK / "ws" / "tokenizer").is_dir():
        return
    if not BENCH_XZ.exists():
        sys.exit(f"{BENCH_XZ} is missing (the shared bench corpus)")
    data.mkdir(parents=True, exist_ok=True)
    documents = lzma.decompress(BENCH_XZ.read_bytes()).decode("utf-8").split(EOT)
    cut = int(len(documents) * (1 - VALID_SHARE))
    (data / "train.txt").write_text(EOT.join(documents[:cut]) + EOT, encoding="utf-8")
    (data / "valid.txt").write_text(EOT.join(documents[cut:]), encoding="utf-8")
    lmcli("train-bpe", str(data / "train.txt"), "--vocab", "2048", "--force")
    lmcli("encode", str(data / "train.txt"), str(data / "valid.txt"))


def sweep(name: str, config: Path, sets: list[str], key: str, values: list[float]) -> dict:
    """An ``lmcli sweep`` over ``key``; returns its report (sweep.json)."""
    grid = f"{key}={','.join(f'{v:.4g}' for v in values)}"
    args = ["sweep", "--config", str(config), "--name", name, "--set", grid, "--quiet", "--json"]
    for value in sets:
        args += ["--set", value]
    return json.loads(lmcli(*args).stdout)


def rows(run_dir: Path, kind: str) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def crossing(points: list[tuple[float, float]], target: float) -> float | None:
    """The first x where the curve of (x, loss) points reaches ``target`` (linear between points)."""
    previous = None
    for x, loss in points:
        if loss <= target:
            if previous is None:
                return x
            x0, loss0 = previous
            return x0 + (x - x0) * (loss0 - target) / (loss0 - loss)
        previous = (x, loss)
    return None


def measured(run: str, values: dict[str, float], sweeps: dict[str, dict[str, float | None]]) -> dict:
    """The run's learning rates, final validation loss and curves, and the sweeps it won (rate -> value -> loss)."""
    run_dir = WORK / "ws" / "runs" / run
    return {
        "run": run, "values": values, "final_val_loss": rows(run_dir, "final_eval")[-1]["val_loss"],
        "curve": [(r["tokens"], r["val_loss"]) for r in rows(run_dir, "eval")],
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows(run_dir, "train")),
        "sweeps": sweeps,
    }


def compare(result: dict, baseline: dict) -> dict:
    """Tokens and training time ``result`` needed to reach the baseline's last evaluation, as fractions
    of the baseline's. Time is tokens over the run's median training rate (evaluations left out; the
    median, so that a moment of contention on a shared machine does not count)."""
    tokens = crossing(result["curve"], baseline["curve"][-1][1])
    if tokens is None:
        return {"token_ratio": None, "time_ratio": None}
    token_ratio = tokens / baseline["curve"][-1][0]
    return {"token_ratio": token_ratio, "time_ratio": token_ratio * baseline["tokens_per_s"] / result["tokens_per_s"]}


def train_one(run: str, config: Path, sets: list[str]) -> dict:
    """One ``lmcli train`` run: finished or diverged, and its final validation loss (None if it diverged)."""
    if (WORK / "ws" / "runs" / run).exists():  # train would refuse it, and its old metrics would pass for this run's
        sys.exit(f"run {run} exists already: two measurements share a name")
    lmcli("train", "--config", str(config), "--name", run, "--quiet", *[a for s in sets for a in ("--set", s)],
          check=False)  # a diverged run exits 1: that is a result here
    run_dir = WORK / "ws" / "runs" / run
    final = rows(run_dir, "final_eval")
    return {"status": "diverged" if rows(run_dir, "diverged") else "finished",
            "final_val_loss": final[-1]["val_loss"] if final else None}


def sets_of(members: list[str]) -> list[str]:
    """The --set values that make the variant of the switches ``members``."""
    return [s for m in members for s in VARIANTS[m]]


def knobs(members: list[str]) -> list[str]:
    """What a variant made of the switches ``members`` sweeps, in this order: Muon's matrices' rate, the
    (AdamW) learning rate, the embeddings' and the head's own rates, and a WSD schedule's decay fraction
    (Muon's faster progress was seen to want a longer decay)."""
    return (["optimizer.muon_lr"] if "muon" in members else []) + ["optimizer.lr"] + (
        GROUP_RATES if {"muon", "group_lr"} & set(members) else []) + (
        ["optimizer.decay_fraction"] if "wsd" in members else [])


def run_variant(name: str, config: Path, members: list[str], rates: dict[str, float], passes: int = 1) -> dict:
    """The variant made of the switches ``members`` at its best settings: each of its ``knobs`` in turn,
    a 3-point sweep around ``rates`` (x0.5, x1, x2; a group's own rate starts at the learning rate)
    extended past an edge that wins (up to MAX_EXTENSIONS points), the others held at their best so
    far; its best run, measured. With ``passes`` > 1, round and round until every knob has been swept
    without moving since the last one that moved (at most ``passes`` rounds); a later round's sweeps
    are keyed "pass N: key" in ``sweeps``."""
    keys, sets = knobs(members), sets_of(members)
    rates, sweeps, best_run = dict(rates), {}, None
    if "optimizer.decay_fraction" in keys:
        rates.setdefault("optimizer.decay_fraction", DECAY_FRACTION)
    started, settled = time.perf_counter(), 0  # knobs swept in a row, each at its best given the others
    for turn in range(passes * len(keys)):
        key, pass_ = keys[turn % len(keys)], turn // len(keys) + 1
        label = name if pass_ == 1 else f"{name}-pass{pass_}"
        start = rates.setdefault(key, rates["optimizer.lr"])  # (the group rates, once the learning rate is swept)
        tried = sweep_rate(label, config, sets, rates, key, best_run)
        rates[key] = lowest(tried)
        sweeps[key if pass_ == 1 else f"pass {pass_}: {key}"] = {
            f"{v:.4g}": loss for v, (_, loss) in sorted(tried.items())}
        best_run = tried[rates[key]]
        print(f"  {label}: best {key} = {rates[key]:.4g} of {', '.join(f'{v:.4g}' for v in sorted(tried))}, "
              f"final val loss {best_run[1]:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
        settled = settled + 1 if rates[key] == float(f"{start:.4g}") else 1  # one that moved is at its best too
        if settled == len(keys):
            break
    result = measured(best_run[0], {key: rates[key] for key in keys}, sweeps)
    return {**result, "sets": sets, "passes": pass_}


def sweep_rate(name: str, config: Path, sets: list[str], rates: dict[str, float], key: str,
               known: tuple[str, float | None] | None) -> dict[float, tuple[str, float | None]]:
    """``key`` at x0.5, x1 and x2 of ``rates[key]`` (``known``: the run at x1, already trained), then
    x2 or x0.5 past the best while it lies on an edge: value -> (run, final validation loss)."""
    fixed = rate_sets({k: v for k, v in rates.items() if k != key})
    factors = [f for f in SWEEP_FACTORS if not (known and f == 1.0)]
    short = key.split(".")[-1]
    report = sweep(f"recipe-{name}-{short}", config, sets + fixed, key, [rates[key] * f for f in factors])
    tried = {float(r["values"][key]): (r["name"], r["final_val_loss"]) for r in report["runs"]}
    if known:
        tried[float(f"{rates[key]:.4g}")] = known
    for _ in range(MAX_EXTENSIONS):
        best = lowest(tried)
        value = float(f"{best * 2 if best == max(tried) else best / 2:.4g}")
        if min(tried) < best < max(tried) or value > UPPER.get(key, math.inf):
            break
        run = f"recipe-{name}-{short}={value:.4g}"
        tried[value] = (run, train_one(run, config, sets + fixed + [f"{key}={value:.4g}"])["final_val_loss"])
    return tried


def lowest(tried: dict[float, tuple[str, float | None]]) -> float:
    """The value whose run ended with the lowest validation loss (a diverged run never wins)."""
    return min(tried, key=lambda v: math.inf if tried[v][1] is None else tried[v][1])


def stability(name: str, config: Path, sets: list[str], best: dict[str, float]) -> list[dict]:
    """The run at 3x and 10x its best rates (every learning rate scaled, the rest of ``best`` kept):
    finished or diverged, and its final loss."""
    return [{"factor": factor, **train_one(f"recipe-{name}-x{factor:g}", config, sets + rate_sets(
        {k: v * factor if k.endswith("lr") else v for k, v in best.items()}))}
            for factor in STABILITY_FACTORS]


def rates_of(result: dict, base_rates: dict[str, float]) -> dict[str, float]:
    return {**base_rates, **result["values"]}


def rate_sets(rates: dict[str, float]) -> list[str]:
    """The --set values of ``rates`` (4 significant digits, as the sweeps write them)."""
    return [f"{k}={v:.4g}" for k, v in rates.items()]


def plot(results: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, result in results.items():
        tokens, losses = zip(*result["curve"])
        ax.plot([t / 1e6 for t in tokens], losses, label=name, linewidth=2.5 if name in ("baseline", "combination") else 1.2)
    ax.set(xlabel="training tokens (millions)", ylabel="validation loss (nats/token)",
           title="Each switch at its best learning rate (bench corpus, 2 CPU cores)")
    low = min(min(l for _, l in r["curve"]) for r in results.values())
    ax.set_ylim(low - 0.05, low + 1.5)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def interleaved_speeds(config: Path, variants: dict[str, list[str]], steps: int = 60, warmup: int = 5) -> dict[str, float]:
    """Training tokens/s of every variant (name -> its --set values), all measured in this one process
    with their steps interleaved, each round in another order: the machine's speed drifts (separate runs
    of one variant differed by up to 20%), and a slow moment here falls on every variant alike. A step is
    ``lmcli train``'s own (``train_step``: the batch, forward, loss, backward, clipping, the optimizer's
    update, so Muon's extra matrix work counts); a variant's rate is its tokens over its median step."""
    from lmcli.training.batch_plan import BatchPlan
    from lmcli.training.config import load_config
    from lmcli.training.data import load_training_data
    from lmcli.training.device import setup_runtime
    from lmcli.training.distributed import World
    from lmcli.training.loop import parallelize, train_step
    from lmcli.training.run import data_sources
    from lmcli.training.state import TrainState
    from lmcli.workspace import Workspace

    resolve = Workspace(WORK / "ws").path
    trainers, tokens = {}, {}
    for name, sets in variants.items():
        c = load_config(config, sets)
        runtime = setup_runtime(c.system.device, "off", c.system.autocast, c.training.peak_flops)
        data = load_training_data(data_sources(c, "train", resolve), data_sources(c, "valid", resolve),
                                  resolve(c.data.tokenizer), c.model.vocab_size, c.model.context_length)
        state = TrainState.create(c, runtime.device)
        trainers[name] = (state, parallelize(state, c, World(), runtime), BatchPlan.of(c, World()), data, c, runtime)
        tokens[name] = c.training.batch_size * c.model.context_length  # of one step
    times: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    for round_ in range(warmup + steps):
        for name in order[round_ % len(order):] + order[:round_ % len(order)]:
            started = time.perf_counter()
            train_step(*trainers[name])
            if round_ >= warmup:
                times[name].append(time.perf_counter() - started)
    return {name: tokens[name] / statistics.median(times[name]) for name in variants}


def budget_ratio(name: str, config: Path, sets: list[str], rates: dict[str, float], steps: int, target: float,
                 full: float) -> float | None:
    """The fraction of the baseline's tokens the variant needs to reach ``target`` when it plans for
    that budget (its schedule decaying at its own end): runs of 7/8, 6/8, ... of the steps, down to
    the first that ends above the target, interpolated between the two budgets around it (``full``:
    its final loss with all the steps). None when even the full budget ends above the target."""
    if full > target:
        return None
    above, below = None, (1.0, full)
    for eighths in range(7, 2, -1):
        fraction = eighths / 8
        run = f"recipe-budget-{name}-{eighths}of8"
        loss = train_one(run, config, sets + rate_sets(rates)
                         + [f"training.max_steps={round(steps * fraction)}"])["final_val_loss"]
        if loss is None or loss > target:
            above = (fraction, loss)
            break
        below = (fraction, loss)
    if above is None or above[1] is None:
        return below[0]
    (f0, l0), (f1, l1) = above, below
    return f0 + (f1 - f0) * (l0 - target) / (l0 - l1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="steps of every run (a multiple of 10)")
    parser.add_argument("--only", nargs="*", default=list(VARIANTS), help="variants to measure (baseline always)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "recipe-curves.png")
    parser.add_argument("--reuse", type=Path, help="a report.json of an earlier run: its speeds (and budgets it lacks) are measured again")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    prepare_data()
    WORK.mkdir(parents=True, exist_ok=True)
    config = WORK / "base.toml"
    config.write_text(BASE_CONFIG.format(lr=BASE_LR, min_lr=BASE_LR / 10, warmup=args.steps // 20, steps=args.steps,
                                         eval_interval=args.steps // 10))
    lmcli("runs")  # the workspace exists
    # every measurement from scratch (with --reuse, those of the report are kept)
    patterns = [] if args.reuse else ["runs/recipe-*", "sweeps/recipe-*"]
    for stale in [p for pattern in patterns for p in (WORK / "ws").glob(pattern)]:
        shutil.rmtree(stale)

    print(f"recipe benchmark: {args.steps} steps of 16 x 128 tokens per run, 3 learning rates per variant", flush=True)
    report = json.loads(args.reuse.read_text()) if args.reuse else measure(args, config)
    results, base_rates = report["variants"], report["variants"]["baseline"]["values"]
    target = results["baseline"]["final_val_loss"]
    for name in [n for n in BUDGETED if n in results]:
        r = results[name]
        if "budget_ratio" not in r:  # (a reused report may have them)
            r["budget_ratio"] = budget_ratio(name, config, r["sets"], rates_of(r, base_rates), report["steps"], target,
                                             r["final_val_loss"])
            print(f"  {name}: {r['budget_ratio']} of the baseline's tokens at its own budget", flush=True)
    print("speeds: all variants in this one process, 60 steps each, interleaved", flush=True)
    speeds = interleaved_speeds(config, {name: r["sets"] + rate_sets(rates_of(r, base_rates)) for name, r in results.items()})
    for name, r in results.items():
        r["tokens_per_s"] = speeds[name]
        slower = results["baseline"]["tokens_per_s"] / r["tokens_per_s"]
        r["time_ratio"] = None if r["token_ratio"] is None else r["token_ratio"] * slower
        r["budget_time_ratio"] = None if r.get("budget_ratio") is None else r["budget_ratio"] * slower
    WORK.joinpath("report.json").write_text(json.dumps(report, indent=1))
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_table(report, args.out)


BUDGETED = ("wsd", "muon", "combination")  # those whose gains justify runs at smaller budgets


def measure(args, config: Path) -> dict:
    """The sweeps, the combination of the winners, the stability check and the figure: the report."""
    results = {"baseline": run_variant("baseline", config, [], {"optimizer.lr": BASE_LR})}
    base_rates = rates_of(results["baseline"], {"optimizer.lr": BASE_LR})
    for name in [n for n in args.only if n != "baseline"]:
        start = {**base_rates, "optimizer.muon_lr": 0.02} if name == "muon" else base_rates
        results[name] = run_variant(name, config, [name], start)
    for name, result in results.items():
        result.update(compare(result, results["baseline"]))
    target = results["baseline"]["final_val_loss"] - WIN_MARGIN
    winners = [n for n, r in results.items() if n != "baseline" and r["final_val_loss"] < target]
    combined = sets_of(winners)
    combo_rates = dict(base_rates)
    for name in winners:  # each winner's best settings (where two set one, the later's): the sweeps start there
        combo_rates.update(results[name]["values"])
    if winners:
        results["combination"] = run_variant("combination", config, winners, combo_rates, passes=MAX_PASSES)
        results["combination"].update(compare(results["combination"], results["baseline"]))
        results["combination"]["values"] = {**combo_rates, **results["combination"]["values"]}
    checks = {"baseline": stability("baseline", config, [], base_rates)}
    if winners:
        checks["combination"] = stability("combination", config, combined, rates_of(results["combination"], combo_rates))
    plot(results, args.out)
    return {"steps": args.steps, "tokens_per_run": args.steps * 16 * 128, "winners": winners, "stability": checks,
            "variants": {n: {k: v for k, v in r.items() if k != "curve"} for n, r in results.items()}}


def print_table(report: dict, figure: Path) -> None:
    results = report["variants"]
    base_final = results["baseline"]["final_val_loss"]

    def ratio(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}x"

    print(f"\n{'variant':<12} {'best rate':<22} {'final val':>9} {'vs base':>8} {'tokens/s':>9} {'tokens':>7} {'time':>6} "
          f"{'budget':>7} {'time':>6}")
    for name, r in results.items():
        rate = ", ".join(f"{k.split('.')[-1]}={v:g}" for k, v in r["values"].items())
        print(f"{name:<12} {rate:<22} {r['final_val_loss']:>9.4f} {r['final_val_loss'] - base_final:>+8.4f} "
              f"{r['tokens_per_s']:>9,.0f} {ratio(r['token_ratio']):>7} {ratio(r['time_ratio']):>6} "
              f"{ratio(r.get('budget_ratio')):>7} {ratio(r.get('budget_time_ratio')):>6}")
    print(f"\nwinners (final val loss more than {WIN_MARGIN} below the baseline's): {', '.join(report['winners']) or 'none'}")
    for name, outcomes in report["stability"].items():
        print(f"stability, {name}: " + "; ".join(
            f"x{o['factor']:g} {o['status']}, final val {o['final_val_loss'] if o['final_val_loss'] is None else round(o['final_val_loss'], 4)}"
            for o in outcomes))
    print(f"curves: {figure}")


if __name__ == "__main__":
    main()
