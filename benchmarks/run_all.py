"""Run every lmcli benchmark one after another (never in parallel: they would share the CPU).

Each script runs lmcli and its comparator side by side in one process tree and prints its own
table and ratios; this runner only sequences them and stops at the first failure.
Usage: python benchmarks/run_all.py [name ...]   (names: train_bpe encode model memory generate adamw train_throughput parallel recipe scale sweep)
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = {
    "train_bpe": "bench_train_bpe.py",
    "encode": "bench_encode.py",
    "model": "bench_model.py",
    "memory": "bench_memory.py",
    "generate": "bench_generate.py",
    "adamw": "bench_adamw.py",
    "train_throughput": "train_throughput.py",
    "parallel": "bench_parallel.py",
    "recipe": "bench_recipe.py",
    "scale": "bench_scale.py",
    "sweep": "bench_sweep.py",
}


def main(names: list[str]) -> int:
    unknown = set(names) - set(BENCHMARKS)
    if unknown:
        print(f"unknown benchmark(s): {', '.join(sorted(unknown))}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names or BENCHMARKS:
        print(f"\n=== {name} ({BENCHMARKS[name]})", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / BENCHMARKS[name])])
        print(f"=== {name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
