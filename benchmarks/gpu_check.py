"""The first thing to run on a GPU machine: everything lmcli's GPU path claims, measured in one go.

Needs one NVIDIA GPU and PyTorch; downloads nothing (the demo corpus is built in). Writes one
JSON summary (and prints it as a table):

- ``device``: the GPU's name, PyTorch and CUDA versions, the peak FLOP/s lmcli assumes for MFU;
- ``throughput``: ``train_throughput.py`` at bf16 + compile, for the TinyStories model (batch
  128 × 256) and at GPT-2-small shape (768 wide, 12 layers, 1,024 tokens, vocabulary 50,304,
  batch 16), with lmcli's ``fast`` (from scratch) and ``torch`` (PyTorch's fused attention and
  loss) kernel sets, each beside the same model built from PyTorch's own layers: tokens/s, MFU,
  peak memory, and the ratio lmcli / PyTorch;
- ``train``: a 300-step ``lmcli train`` of the demo model on a demo workspace made here: its
  first step (compilation) in seconds, the graphs dynamo compiled and its graph breaks (the
  claim: 2 graphs, one with gradients and one without, and no breaks), tokens/s after the
  first step, peak memory;
- ``generate``: ``lmcli generate`` tokens/s from that run's checkpoint.

    bash benchmarks/gpu_check.sh [OUT.json]             # on the GPU machine, from the repository
    python benchmarks/gpu_check.py --device cpu --quick  # the same steps, tiny, on a CPU (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

GPT2_SMALL = """
[model]
vocab_size = 50304
context_length = 1024
d_model = 768
num_layers = 12
num_heads = 12
d_ff = 2048
[training]
batch_size = 16
"""
TINY = """
[model]
vocab_size = 256
context_length = 32
d_model = 32
num_layers = 2
num_heads = 2
d_ff = 64
[training]
batch_size = 4
"""


def run(command: list[str], env: dict[str, str], timeout: float) -> str:
    """A command's stdout; its stderr's last lines in the error if it fails."""
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)
    if result.returncode:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(command[:6])}... exited {result.returncode}:\n{tail}")
    return result.stdout


def throughput(shape: str, config: Path | None, kernels: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """One train_throughput.py run (its own process: its own compile caches and memory)."""
    command = [sys.executable, str(HERE / "train_throughput.py"), "--device", args.device, "--kernels", kernels, "--json",
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    if args.device != "cpu":
        command += ["--dtype", "bf16", "--compile"]
    command += ["--config", str(config)] if config else []
    report = json.loads(run(command, env, timeout=600).strip().splitlines()[-1])
    return {"shape": shape, "kernels": kernels, **{k: report[k] for k in ("model", "batch_size", "lmcli", "pytorch", "ratio")}}


def demo_run(workspace: Path, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """A demo workspace, then a compiled ``lmcli train`` in this process, where dynamo's counters can be read."""
    lmcli = [sys.executable, "-m", "lmcli"]
    run([*lmcli, "data", "demo"], env, timeout=300)
    run([*lmcli, "train-bpe", "--vocab", "1024", "--force"], env, timeout=300)
    run([*lmcli, "encode"], env, timeout=300)

    import torch
    from torch._dynamo.utils import counters

    from lmcli.training.distributed import World
    from lmcli.training.run import RunSpec, run_training
    from lmcli.workspace import Workspace

    overrides = [f"training.max_steps={args.train_steps}", "training.log_interval=10", "optimizer.warmup_steps=10",
                 f"system.device='{args.device}'", f"system.compile='{'off' if args.device == 'cpu' else 'on'}'"]
    if args.quick:
        overrides += ["training.batch_size=8", "training.eval_batches=2", "training.final_eval_tokens=4096"]
    counters.clear()
    summary = run_training(RunSpec(config="demo", name="gpu-check", overrides=tuple(overrides)), Workspace(workspace), world=World())
    run_dir = Path(summary["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if r["kind"] == "train"][1:]
    result = {
        "steps": summary["steps"],
        "first_step_s": summary["first_step_s"],
        "graphs_compiled": counters["stats"]["unique_graphs"],
        "graph_breaks": sum(counters["graph_break"].values()),
        "tokens_per_s": statistics.median(rates) if rates else None,
        "peak_memory_bytes": summary["device_peak_memory_bytes"],
        "final_val_loss": summary["final_val_loss"],
        "elapsed_s": summary["elapsed_s"],
    }
    torch._dynamo.reset()
    generated = json.loads(run([*lmcli, "generate", "--prompt", "Once upon a time", "--checkpoint", str(run_dir),
                                "--max-tokens", str(args.generate_tokens), "--temperature", "0", "--device", args.device,
                                "--json"], env, timeout=300))
    return {"train": result, "generate": {"tokens": generated.get("tokens"), "tokens_per_s": generated.get("tokens_per_s")}}


def device_info(device: str) -> dict:
    import torch

    from lmcli.training.device import known_peak_flops, pick_device

    chosen = pick_device(device)
    name = torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else chosen.type
    return {"name": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "peak_bf16_flops": known_peak_flops(chosen, bf16=True), "peak_tf32_flops": known_peak_flops(chosen, bf16=False)}


def print_table(report: dict) -> None:
    d = report["device"]
    print(f"gpu_check on {d['name']} (torch {d['torch']}, CUDA {d['cuda']}) in {report['seconds']:.0f} s")
    print(f"{'shape':<14}{'kernels':<9}{'lmcli tok/s':>14}{'MFU':>7}{'PyTorch tok/s':>15}{'MFU':>7}{'ratio':>7}{'peak GB':>9}")
    for r in report["throughput"]:
        ours, theirs = r["lmcli"], r["pytorch"]
        mfu = lambda x: "-" if x["mfu"] is None else f"{x['mfu']:.0%}"  # noqa: E731
        peak = "-" if ours["peak_memory_bytes"] is None else f"{ours['peak_memory_bytes'] / 1e9:.1f}"
        print(f"{r['shape']:<14}{r['kernels']:<9}{ours['tokens_per_s']:>14,.0f}{mfu(ours):>7}"
              f"{theirs['tokens_per_s']:>15,.0f}{mfu(theirs):>7}{r['ratio']:>7.2f}{peak:>9}")
    t, g = report["train"], report["generate"]
    print(f"lmcli train, demo model, {t['steps']} steps: first step {t['first_step_s']} s, {t['graphs_compiled']} graphs, "
          f"{t['graph_breaks']} graph breaks, {t['tokens_per_s'] or 0:,.0f} tokens/s after it; "
          f"lmcli generate: {g['tokens_per_s'] or 0:,.1f} tokens/s")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-check.json"), help="where to write the JSON summary")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny shapes and few steps (to check the script itself)")
    args = parser.parse_args(argv)
    args.steps, args.warmup, args.repeats = (1, 1, 1) if args.quick else (20, 3, 3)
    args.train_steps, args.generate_tokens = (20, 16) if args.quick else (300, 256)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="lmcli-gpu-check-") as tmp:
        workspace = Path(tmp) / "workspace"
        env = {**os.environ, "PYTHONPATH": str(REPO), "LMCLI_WORKSPACE": str(workspace)}
        shapes = {"tiny": Path(tmp) / "tiny.toml"} if args.quick else {"tinystories": "tinystories",
                                                                      "gpt2-small": Path(tmp) / "gpt2-small.toml"}
        (Path(tmp) / "tiny.toml").write_text(TINY)
        (Path(tmp) / "gpt2-small.toml").write_text(GPT2_SMALL)
        report = {"device": device_info(args.device),
                  "throughput": [throughput(shape, config, kernels, args, env)
                                 for shape, config in shapes.items() for kernels in ("fast", "torch")],
                  **demo_run(workspace, args, env)}
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    print(f"written: {args.out}")
    return report


if __name__ == "__main__":
    main()
