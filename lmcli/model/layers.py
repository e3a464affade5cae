"""The Transformer's building blocks, written with tensor operations only (no torch.nn.functional).

- ``Linear``: y = x Wᵀ with no bias; W has shape (out, in) and starts from a truncated normal
  with variance 2/(in+out) (cut at ±3σ), so activations keep their scale through the layer.
- ``Embedding``: a lookup table of shape (vocab, d_model), N(0, 1) truncated at ±3.
- ``RMSNorm``: x / sqrt(mean(x²) + ε) · g, computed in (at least) float32 because squaring overflows or
  loses precision in bf16/fp16, and returned in the input dtype.
- ``silu`` (x·σ(x)) and ``softmax`` (max-subtracted so exp never overflows, computed in float32).
- ``rotate_pairs``: RoPE's rotation of each pair (x₂ₖ, x₂ₖ₊₁) by an angle whose cosine and
  sine are given (``lmcli.model.attention`` computes the angles).
- ``SwiGLU``: W2 (SiLU(W1 x) ⊙ W3 x), the gated feed-forward of LLaMA; ``SiLUFeedForward`` is the
  ungated W2 SiLU(W1 x) the CS336 ablation compares it with; ``ReLU2FeedForward`` is W2 ReLU(W1 x)²
  (squared ReLU, as in modded-nanogpt).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        std = math.sqrt(2.0 / (in_features + out_features))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=std, a=-3 * std, b=3 * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def extra_repr(self) -> str:
        return f"in_features={self.weight.shape[1]}, out_features={self.weight.shape[0]}"


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim, device=device, dtype=dtype))
        nn.init.trunc_normal_(self.weight, mean=0.0, std=1.0, a=-3.0, b=3.0)

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.weight[token_ids]


class RMSNorm(nn.Module):
    def __init__(self, d_model: int, eps: float = 1e-5, device=None, dtype=None):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        in_dtype = x.dtype
        x = x.to(torch.promote_types(in_dtype, torch.float32))
        x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return (x * self.weight).to(in_dtype)


def silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def softmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax along ``dim``, computed in (at least) float32 and returned in the input dtype."""
    in_dtype = x.dtype
    x = x.to(torch.promote_types(in_dtype, torch.float32))
    # Shifting by the max changes nothing mathematically, so no gradient flows through it (detach
    # saves amax's backward, ~10% of an attention layer's time on CPU).
    x = torch.exp(x - x.amax(dim=dim, keepdim=True).detach())
    # Multiplying by the reciprocal of the (small) sums: a faster forward and backward than dividing.
    return (x * x.sum(dim=dim, keepdim=True).reciprocal()).to(in_dtype)


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x₂ₖ, x₂ₖ₊₁) of the last dim by the angle whose cosine/sine are cos[k]/sin[k]."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None):
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)
        self.w3 = Linear(d_model, d_ff, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(silu(self.w1(x)) * self.w3(x))


class SiLUFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, device=None, dtype=None):
        super().__init__()
        self.w1 = Linear(d_model, d_ff, device=device, dtype=dtype)
        self.w2 = Linear(d_ff, d_model, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(silu(self.w1(x)))


class ReLU2FeedForward(SiLUFeedForward):
    """W2 ReLU(W1 x)²: the same two matrices as the SiLU feed-forward, a squared ReLU between them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.w1(x).clamp(min=0).square())
