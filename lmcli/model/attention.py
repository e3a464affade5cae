"""Causal multi-head self-attention with rotary position embeddings (RoPE).

Attention: softmax(Q Kᵀ / √d_k) V, where a boolean mask (True = may attend) hides future
positions. The softmax runs in float32, so the model is stable under bf16 autocast.

Multi-head: d_model is split into num_heads heads of d_k = d_model / num_heads; each head
attends on its own and the heads are concatenated and mixed by ``output_proj``.

Grouped-query attention (``num_kv_heads`` < num_heads): keys and values have fewer heads, each
shared by a group of num_heads / num_kv_heads consecutive query heads (Llama's layout). Only
the shared heads are projected and cached; ``repeat_kv_heads`` copies each out to its group
just before attending, so every attention kernel sees ordinary multi-head shapes.

RoPE: instead of adding a position vector, rotate each consecutive pair (x₀,x₁), (x₂,x₃), … of
a query/key at position i by the angle i·θ^(-2k/d_k). A dot product of two rotated vectors then
depends only on their relative offset. It is applied to Q and K, never V.

This file is the plain version, and what ``model.kernels = "reference"`` runs. With the
default ``"fast"``, the same steps run as the hand-written autograd functions of
``lmcli.model.kernels``, which equal them (``if reference: plain else: kernel``); ``"torch"``
runs the attention step as PyTorch's fused kernel (``lmcli.model.torch_kernels``).

The forward is written in three steps (project, rotate, attend over keys). With a KV cache
(``lmcli.model.kv_cache``) the rotated keys and values of the new tokens are appended to the
cached ones between the last two steps; ``causal_mask`` handles more keys than queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lmcli.model import kernels, torch_kernels
from lmcli.model.kernels import rms_norm_layer
from lmcli.model.layers import Linear, rotate_pairs, softmax

if TYPE_CHECKING:
    from lmcli.model.kv_cache import LayerCache


def scaled_dot_product_attention(
    Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V for (..., queries, d_k), (..., keys, d_k), (..., keys, d_v); mask True = attend."""
    scores = Q @ K.transpose(-2, -1) / Q.shape[-1] ** 0.5
    if mask is not None:
        scores = scores.masked_fill(mask.logical_not(), float("-inf"))
    return softmax(scores, dim=-1).to(V.dtype) @ V


def repeat_kv_heads(x: torch.Tensor, group: int) -> torch.Tensor:
    """(..., kv_heads, seq, d_k) -> (..., kv_heads · group, seq, d_k): each head repeated for its group."""
    if group == 1:
        return x
    return x.unsqueeze(-3).expand(*x.shape[:-2], group, *x.shape[-2:]).flatten(-4, -3)


def causal_mask(num_queries: int, num_keys: int, device=None) -> torch.Tensor:
    """(queries, keys) mask where the queries are the last ``num_queries`` positions of the keys."""
    return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(num_keys - num_queries)


class RotaryPositionalEmbedding(nn.Module):
    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None, kernels: str = "fast"):
        super().__init__()
        self.kernels = kernels
        inv_freq = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64, device=device) / d_k)
        angles = torch.arange(max_seq_len, dtype=torch.float64, device=device)[:, None] * inv_freq
        # Recomputable from the config, so not saved in checkpoints (the CS336 state dicts lack them).
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, token_positions: torch.Tensor | None = None) -> torch.Tensor:
        """Rotate x (..., seq, d_k); token_positions (..., seq) broadcasts against x's leading dims.
        Without positions, the tokens are at 0..seq-1 (a plain slice, no gather)."""
        if token_positions is None:
            cos, sin = self.cos[: x.shape[-2]], self.sin[: x.shape[-2]]
        else:
            cos, sin = self.cos[token_positions], self.sin[token_positions]
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        if self.kernels == "reference":
            return rotate_pairs(x, cos, sin)
        return kernels.rotate(x, cos, sin)  # the same rotation, with a one-pass backward


class MultiHeadSelfAttention(nn.Module):
    def __init__(
        self, d_model: int, num_heads: int, max_seq_len: int | None = None, theta: float | None = None,
        device=None, dtype=None, kernels: str = "fast", qk_norm: bool = False, num_kv_heads: int | None = None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        self.head_dim = d_model // num_heads
        kv_dim = self.num_kv_heads * self.head_dim
        self.kernels = kernels
        # QK-norm: each head's queries and keys RMS-normalized (one gain per dimension of a head)
        norm = rms_norm_layer(kernels)  # the plain layer for "reference", else the fused one
        self.q_norm = norm(self.head_dim, device=device, dtype=dtype) if qk_norm else None
        self.k_norm = norm(self.head_dim, device=device, dtype=dtype) if qk_norm else None
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, kv_dim, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, kv_dim, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        if theta is not None and max_seq_len is None:
            raise ValueError("RoPE needs max_seq_len to precompute its angles")
        self.rope = (
            None if theta is None
            else RotaryPositionalEmbedding(theta, self.head_dim, max_seq_len, device, kernels=kernels)
        )

    def forward(
        self, x: torch.Tensor, token_positions: torch.Tensor | None = None, kv_cache: LayerCache | None = None
    ) -> torch.Tensor:
        """x (..., seq, d_model) -> (..., seq, d_model); token_positions (..., seq) default 0..seq-1.
        With ``kv_cache`` (this layer's slot of a KVCache), x holds the tokens after the cached ones."""
        reference = self.kernels == "reference"
        # Cached generation feeds one token at a time: there three matrix-vector products read the
        # same weights as one, without copying them into a stacked matrix at every step.
        if reference or kv_cache is not None:
            qkv = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        else:
            qkv = kernels.project_qkv(x, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight)
        q, k, v = (self.split_heads(t) for t in qkv)  # (..., heads, seq, d_k); k, v: kv heads
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            positions = None if token_positions is None else token_positions.unsqueeze(-2)  # broadcast over heads
            q, k = self.rope(q, positions), self.rope(k, positions)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)  # the cache holds the kv heads only
        group = self.num_heads // self.num_kv_heads
        k, v = repeat_kv_heads(k, group), repeat_kv_heads(v, group)
        mask = None if kv_cache is None else kv_cache.visible(q.shape[-2])  # a static cache's written positions
        if mask is None and q.shape[-2] > 1:  # (a single query is the last position: it may attend to every key)
            mask = causal_mask(q.shape[-2], k.shape[-2], x.device)
        if reference:
            out = scaled_dot_product_attention(q, k, v, mask)
        elif self.kernels == "torch":  # PyTorch's FlashAttention: no score matrix in memory
            out = torch_kernels.attention(q, k, v, mask)
        else:  # the same attention, the score matrix reused in place and a hand-written backward
            out = kernels.attention(q, k, v, mask)
        return self.output_proj(out.transpose(-3, -2).flatten(-2))

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., seq, heads · d_k) -> (..., heads, seq, d_k), for the query heads or the kv heads"""
        return x.unflatten(-1, (-1, self.head_dim)).transpose(-3, -2)
