"""Training past one process: what gradient accumulation and data parallelism cost, as ratios.

Every row runs the real ``lmcli train`` (subprocesses, a temporary workspace of random token
ids, nothing written elsewhere) and reads its tokens/s from ``metrics.jsonl`` (the rows after
the first, so start-up and the first steps are left out). The global batch is the same in
every row, so every row computes the same steps:

- accumulation overhead: 1 process, batch B as one micro-batch vs as B/4-sequence micro-batches
  (goal on CPU: >= 0.9x);
- data-parallel efficiency: N processes x T/N threads vs 1 process x T threads, T the cores
  (goal on this 2-core machine: >= 0.85x). On a GPU node (``--device cuda --nproc 8``) the
  anchor is 1 GPU and the ratio is tokens/s(N GPUs) / (N x tokens/s(1 GPU)), the scaling efficiency.

    python benchmarks/bench_parallel.py                                  # CPU, 2 processes
    python benchmarks/bench_parallel.py --device cuda --nproc 8 --config tinystories --compile
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from lmcli.tokenizer.files import save_tokenizer
from lmcli.training.config import load_config

# On a CPU: a small TinyStories-like shape (micro-batches of 4 x 256 tokens still keep the matmuls
# efficient; at 128 x 128 the per-operation cost of a forward pass makes accumulation ~0.8x)
CPU_SHAPE = ["model.vocab_size=1024", "model.context_length=256", "model.d_model=256", "model.num_layers=4",
             "model.num_heads=4", "model.d_ff=704"]


def make_workspace(root: Path, vocab_size: int, tokens: int) -> None:
    """A byte-level tokenizer padded to ``vocab_size`` and random ids (throughput does not depend on the text)."""
    vocab = {i: bytes([i]) if i < 256 else f"<t{i}>".encode() for i in range(vocab_size)}
    save_tokenizer(root / "tokenizer", vocab, [], [])
    (root / "data").mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train", tokens), ("valid", tokens // 10)):
        np.save(root / "data" / f"{name}.npy", rng.integers(0, vocab_size, n, dtype=np.uint32 if vocab_size > 65_536 else np.uint16))


def tokens_per_s(root: Path, name: str, settings: list[str], nproc: int, threads: int, device: str) -> float:
    """Median tokens/s of ``lmcli train`` with these settings, after its first logged interval."""
    args = [sys.executable, "-m", "lmcli", "train", "--config", settings[0], "--name", name, "--quiet", "--device", device]
    for setting in settings[1:]:
        args += ["--set", setting]
    if nproc > 1:
        args += ["--nproc", str(nproc)]
    env = {**os.environ, "LMCLI_WORKSPACE": str(root), "OMP_NUM_THREADS": str(threads)}
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, timeout=1800)
    rows = [json.loads(line) for line in (root / "runs" / name / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in rows if r["kind"] == "train"][1:]
    return statistics.median(speeds)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="demo", help="config whose model and batch are run [default: demo, with a CPU-sized shape]")
    p.add_argument("--device", default="cpu", help="cpu or cuda [default: cpu]")
    p.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel row [default: 2]")
    p.add_argument("--batch-size", type=int, default=16, help="the global batch of every row [default: 16]")
    p.add_argument("--steps", type=int, default=30, help="steps per row [default: 30]")
    p.add_argument("--compile", action="store_true", help="torch.compile (system.compile = on)")
    p.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32", help="bf16 autocast or not [default: fp32]")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    shape = CPU_SHAPE if args.config == "demo" and args.device == "cpu" else []
    base = [args.config, *shape, f"training.batch_size={args.batch_size}", f"training.max_steps={args.steps}",
            "training.log_interval=5", "training.eval_interval=100000", "training.checkpoint_interval=100000",
            "training.final_eval_tokens=4096", "optimizer.warmup_steps=1", "data.train='data/train.npy'",
            "data.valid='data/valid.npy'", "data.tokenizer='tokenizer'",
            f"system.compile='{'on' if args.compile else 'off'}'",
            f"system.autocast='{'on' if args.dtype == 'bf16' else 'off'}'"]
    model = load_config(args.config, shape).model
    micro = max(1, args.batch_size // 4)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_workspace(root, model.vocab_size, 2_000_000)
        gpu = args.device != "cpu"
        one = tokens_per_s(root, "one", base, 1, cores, args.device)
        accumulated = tokens_per_s(root, "accumulated", [*base, f"training.micro_batch_size={micro}"], 1, cores, args.device)
        parallel = tokens_per_s(root, "parallel", base, args.nproc, max(1, cores // args.nproc), args.device)
    efficiency = parallel / (args.nproc * one) if gpu else parallel / one
    report = {
        "device": args.device, "cores": cores, "batch_size": args.batch_size, "micro_batch_size": micro, "nproc": args.nproc,
        "tokens_per_s": {"one_process": one, "accumulated": accumulated, "data_parallel": parallel},
        "accumulation_ratio": accumulated / one, "data_parallel_ratio": efficiency,
    }
    if args.json:
        print(json.dumps(report))
        return
    anchor = f"1 GPU x {args.nproc}" if gpu else f"1 process x {cores} threads"
    print(f"global batch {args.batch_size} x {model.context_length} tokens, {args.steps} steps on {args.device}")
    print(f"  1 process, micro-batch {args.batch_size:<4}         {one:>12,.0f} tokens/s")
    print(f"  1 process, {args.batch_size // micro} x micro-batch {micro:<4}    {accumulated:>12,.0f} tokens/s   "
          f"{accumulated / one:.2f}x  (accumulation overhead; goal >= 0.9x)")
    print(f"  {args.nproc} processes x {max(1, cores // args.nproc)} thread(s)        {parallel:>12,.0f} tokens/s   "
          f"{efficiency:.2f}x of {anchor}  (data parallel; goal >= 0.85x)")


if __name__ == "__main__":
    main()
