"""Attention layer speed at the TinyStories shape: the design choices of ``lmcli.model.attention``.

Times forward + backward of one ``MultiHeadSelfAttention`` (d_model 512, 16 heads, 256 tokens,
RoPE) three ways, interleaved so machine load hits all alike, median of the repeats:

- lmcli: Q, K, V from one matmul against the concatenated weights (what the model does);
- separate: the same layer with three Q, K, V matmuls (the alternative the fused one is chosen over);
- PyTorch: lmcli's projections and RoPE, but ``F.scaled_dot_product_attention(is_causal=True)``
  (a fused kernel lmcli may not use) instead of the explicit masked softmax.

The whole training step against PyTorch's layers is benchmarks/train_throughput.py.
    python benchmarks/bench_model.py [--batch 8 32] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from lmcli.model import MultiHeadSelfAttention

D_MODEL, HEADS, SEQ, THETA = 512, 16, 256, 10_000.0


class SeparateQKV(MultiHeadSelfAttention):
    def project_qkv(self, x):
        return self.q_proj(x), self.k_proj(x), self.v_proj(x)


class TorchSDPA(MultiHeadSelfAttention):
    def forward(self, x, token_positions=None):
        q, k, v = (self.split_heads(t) for t in self.project_qkv(x))
        q, k = self.rope(q), self.rope(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.output_proj(out.transpose(-3, -2).flatten(-2))


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
    variants = {"lmcli (fused QKV)": reference, "separate QKV": SeparateQKV(D_MODEL, HEADS, SEQ, THETA), "PyTorch sdpa": TorchSDPA(D_MODEL, HEADS, SEQ, THETA)}
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
        ours = statistics.median(times["lmcli (fused QKV)"])
        for name, samples in times.items():
            median = statistics.median(samples)
            print(f"  batch {batch:>3}  {name:<18} {median * 1e3:8.1f} ms   lmcli / this = {ours / median:.2f}")


if __name__ == "__main__":
    main()
