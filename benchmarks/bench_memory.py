"""Peak memory and time of the two steps whose memory grows with the context and the vocabulary:
attention over long contexts, and the output head + cross-entropy over large vocabularies.

Each case runs forward + backward in a fresh subprocess, which reports its peak RSS above what
it held once the inputs existed (``ru_maxrss`` minus the RSS before the step) and the step's
time; the cases are:

- attention (batch 1, 12 heads of 64, causal) at 1,024 and 2,048 tokens: lmcli's fast kernel
  (``TiledAttention`` above ``KEY_BLOCK`` keys: O(T·d) memory), the same kernel untiled
  (``CausalAttention``: saves the T × T probabilities), the plain reference code, and PyTorch's
  ``scaled_dot_product_attention`` (``model.kernels = "torch"``; on a CPU its math or flash
  backend);
- head + loss (4 × 1,024 positions, d_model 768) at vocabularies 32,000 and 50,304: lmcli's fused
  chunked ``linear_cross_entropy`` (what the model runs), the logits then lmcli's fast
  cross-entropy (unfused), the reference formula, and PyTorch's ``F.cross_entropy``.

Ratios are lmcli's fast kernel / each: below 1.0 means lmcli's takes less.
    python benchmarks/bench_memory.py [--json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import json, resource, sys, time
import psutil, torch
from lmcli.model import kernels
from lmcli.model.attention import causal_mask, scaled_dot_product_attention
from lmcli.model.loss import cross_entropy, linear_cross_entropy
torch.manual_seed(0)
case, variant, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
if case == "attention":
    inputs = [torch.randn(1, 12, size, 64, requires_grad=True) for _ in range(3)]
    mask = causal_mask(size, size)
    if variant == "untiled":
        kernels.KEY_BLOCK = 1 << 30
    step = {"fast": lambda q, k, v: kernels.attention(q, k, v, mask),
            "untiled": lambda q, k, v: kernels.attention(q, k, v, mask),
            "reference": lambda q, k, v: scaled_dot_product_attention(q, k, v, mask),
            "torch": lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)}[variant]
    run = lambda: step(*inputs).sum().backward()
else:
    x, w = torch.randn(4, 1024, 768, requires_grad=True), (torch.randn(size, 768) * 0.02).requires_grad_()
    y = torch.randint(0, size, (4, 1024))
    run = lambda: {"fast": lambda: linear_cross_entropy(x, w, y, "fast"),
                   "untiled": lambda: cross_entropy(x @ w.T, y, "fast"),
                   "reference": lambda: cross_entropy(x @ w.T, y, "reference"),
                   "torch": lambda: cross_entropy(x @ w.T, y, "torch")}[variant]().backward()
before = psutil.Process().memory_info().rss
start = time.perf_counter()
run()
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"peak_mb": max(0, peak - before) / 1e6, "seconds": seconds}))
"""

CASES = {
    "attention": ([1024, 2048], {"fast": "lmcli fast (tiled)", "untiled": "lmcli untiled", "reference": "reference",
                                 "torch": "PyTorch sdpa"}),
    "loss": ([32_000, 50_304], {"fast": "lmcli fused chunked", "untiled": "lmcli unfused", "reference": "reference",
                                "torch": "PyTorch cross_entropy"}),
}


def measure(case: str, variant: str, size: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, case, variant, str(size)], capture_output=True, text=True,
                         cwd=REPO, check=True)
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = {case: {size: {v: measure(case, v, size) for v in names} for size in sizes}
              for case, (sizes, names) in CASES.items()}
    if args.json:
        print(json.dumps(report))
        return
    for case, (sizes, names) in CASES.items():
        unit = "tokens" if case == "attention" else "vocabulary"
        print(f"{case}: forward + backward, peak memory above the inputs (MB) and time (s), CPU")
        for size in sizes:
            fast = report[case][size]["fast"]
            for variant, name in names.items():
                r = report[case][size][variant]
                ratio = fast["peak_mb"] / r["peak_mb"] if r["peak_mb"] else float("nan")
                print(f"  {unit} {size:>6,}  {name:<22} {r['peak_mb']:9.1f} MB {r['seconds']:7.2f} s   "
                      f"lmcli fast / this: memory {ratio:.2f}x, time {fast['seconds'] / r['seconds']:.2f}x")


if __name__ == "__main__":
    main()
