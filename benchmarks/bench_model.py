"""Attention layer speed at the TinyStories shape: what ``lmcli.model.kernels`` buys.

Times forward + backward of one ``MultiHeadSelfAttention`` (d_model 512, 16 heads, 256 tokens,
RoPE) three ways, interleaved so machine load hits all alike, median of the repeats:

- lmcli, fast kernels (what the model runs by default): fused Q/K/V matmul, the attention and
  RoPE autograd functions of ``lmcli.model.kernels``;
- lmcli, reference: the plain code of ``lmcli.model.attention`` (``model.kernels = "reference"``);
- PyTorch: ``model.kernels = "torch"``, lmcli's projections and RoPE with PyTorch's fused
  ``F.scaled_dot_product_attention(is_causal=True)`` (not from scratch) instead of the explicit
  masked softmax.

Long contexts and large vocabularies (peak memory): benchmarks/bench_memory.py.

The whole training step against PyTorch's layers is benchmarks/train_throughput.py.
    python benchmarks/bench_model.py [--batch 8 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lmcli.model import MultiHeadSelfAttention

D_MODEL, HEADS, SEQ, THETA = 512, 16, 256, 10_000.0
FAST = "lmcli (fast kernels)"


def step_seconds(layer: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    layer(x).sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(0)
    reference = MultiHeadSelfAttention(D_MODEL, HEADS, SEQ, THETA)
    variants = {
        FAST: reference,
        "lmcli (reference)": MultiHeadSelfAttention(D_MODEL, HEADS, SEQ, THETA, kernels="reference"),
        "PyTorch sdpa (torch kernels)": MultiHeadSelfAttention(D_MODEL, HEADS, SEQ, THETA, kernels="torch"),
    }
    for layer in variants.values():
        layer.load_state_dict(reference.state_dict())
    print(f"MultiHeadSelfAttention forward+backward, d_model {D_MODEL}, {HEADS} heads, {SEQ} tokens, {torch.get_num_threads()} threads")
    for batch in args.batch:
        x = torch.randn(batch, SEQ, D_MODEL)
        expected = reference(x)
        for name, layer in variants.items():  # same computation, and warm-up
            torch.testing.assert_close(layer(x), expected, rtol=1e-4, atol=1e-4)
            step_seconds(layer, x)
        times = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, layer in variants.items():
                times[name].append(step_seconds(layer, x))
        ours = statistics.median(times[FAST])
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"  batch {batch:>3}  {name:<28} {median * 1e3:8.1f} ms   lmcli / this = {ours / median:.2f}")


if __name__ == "__main__":
    main()
