"""Causal multi-head self-attention with rotary position embeddings (RoPE).

Attention: softmax(Q Kᵀ / √d_k) V, where a boolean mask (True = may attend) hides future
positions. The softmax runs in float32, so the model is stable under bf16 autocast.

Multi-head: d_model is split into num_heads heads of d_k = d_model / num_heads; each head
attends on its own and the heads are concatenated and mixed by ``output_proj``.

RoPE: instead of adding a position vector, rotate each consecutive pair (x₀,x₁), (x₂,x₃), … of
a query/key at position i by the angle i·θ^(-2k/d_k). A dot product of two rotated vectors then
depends only on their relative offset. It is applied to Q and K, never V.

Training materialises the (queries × keys) score matrix once: ``CausalAttention`` is an
autograd Function that masks and normalises it in place and writes its backward by hand, with
the FlashAttention identity rowsum(dP ⊙ P) = rowsum(dO ⊙ O) (so no second pass over the scores
is needed for the softmax's backward). Autograd on the plain expression would keep the masked
scores, the exponentials and the probabilities, and run elementwise backward over each.

The forward is written in three steps (project, rotate, attend over keys). With a KV cache
(``lmcli.model.kv_cache``) the rotated keys and values of the new tokens are appended to the
cached ones between the last two steps; ``causal_mask`` handles more keys than queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lmcli.model.layers import Linear

if TYPE_CHECKING:
    from lmcli.model.kv_cache import LayerCache


class RotaryPositionalEmbedding(nn.Module):
    def __init__(self, theta: float, d_k: int, max_seq_len: int, device=None):
        super().__init__()
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
        return Rotation.apply(x, cos.to(x.dtype), sin.to(x.dtype))


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (x₂ₖ, x₂ₖ₊₁) of the last dim by the angle whose cosine/sine are cos[k]/sin[k]."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


class Rotation(torch.autograd.Function):
    """RoPE's rotation and its backward: a rotation is orthogonal, so the gradient is the
    output's gradient rotated back (the same angles, sine negated), one pass instead of the
    backward of every multiply, add and stack."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(cos, sin)
        return rotate_pairs(x, cos, sin)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return rotate_pairs(grad, cos, -sin), None, None


def scaled_dot_product_attention(
    Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V for (..., queries, d_k), (..., keys, d_k), (..., keys, d_v); mask True = attend."""
    Q = Q * Q.shape[-1] ** -0.5  # scale Q (…×d_k), cheaper than the scores (…×keys)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (Q, K, V)):
        return CausalAttention.apply(Q, K, V, mask)
    return attention_probabilities(Q, K, mask).to(V.dtype) @ V


def attention_probabilities(Q: torch.Tensor, K: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q Kᵀ) over the keys, masked, in (at least) float32; the score tensor is reused in place."""
    scores = (Q @ K.transpose(-2, -1)).to(torch.promote_types(Q.dtype, torch.float32))
    if mask is not None:
        scores.masked_fill_(mask.logical_not(), float("-inf"))
    scores -= scores.amax(dim=-1, keepdim=True)  # max-subtracted: exp never overflows
    return scores.exp_().mul_(scores.sum(dim=-1, keepdim=True).reciprocal_())


class CausalAttention(torch.autograd.Function):
    """O = P V with P = softmax(S), S = Q Kᵀ masked (Q already scaled), and its backward by hand:

        dV = Pᵀ dO        dP = dO Vᵀ        dS = P ⊙ (dP − D)        dQ = dS K        dK = dSᵀ Q

    where D = rowsum(dP ⊙ P) = rowsum(dO ⊙ O), since rowsum(dP ⊙ P)_i = Σ_j (dO_i · V_j) P_ij
    = dO_i · O_i: a (…×queries) reduction over d_v instead of over the keys. Masked entries have
    P = 0, so their dS is 0 without reapplying the mask. dS is computed in float32, in place in dP.
    """

    @staticmethod
    def forward(ctx, Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        P = attention_probabilities(Q, K, mask).to(V.dtype)
        O = P @ V
        ctx.save_for_backward(Q, K, V, P, O)
        return O

    @staticmethod
    def backward(ctx, dO: torch.Tensor):
        Q, K, V, P, O = ctx.saved_tensors
        dO = dO.to(O.dtype)
        dV = P.transpose(-2, -1) @ dO
        D = (dO * O).sum(dim=-1, keepdim=True, dtype=torch.promote_types(O.dtype, torch.float32))
        dS = (dO @ V.transpose(-2, -1)).to(D.dtype).sub_(D).mul_(P).to(Q.dtype)
        return dS @ K, dS.transpose(-2, -1) @ Q, dV, None


def causal_mask(num_queries: int, num_keys: int, device=None) -> torch.Tensor:
    """(queries, keys) mask where the queries are the last ``num_queries`` positions of the keys."""
    return torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).tril(num_keys - num_queries)


class MultiHeadSelfAttention(nn.Module):
    def __init__(
        self, d_model: int, num_heads: int, max_seq_len: int | None = None, theta: float | None = None,
        device=None, dtype=None,
    ):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        if theta is not None and max_seq_len is None:
            raise ValueError("RoPE needs max_seq_len to precompute its angles")
        self.rope = None if theta is None else RotaryPositionalEmbedding(theta, d_model // num_heads, max_seq_len, device)

    def forward(
        self, x: torch.Tensor, token_positions: torch.Tensor | None = None, kv_cache: LayerCache | None = None
    ) -> torch.Tensor:
        """x (..., seq, d_model) -> (..., seq, d_model); token_positions (..., seq) default 0..seq-1.
        With ``kv_cache`` (this layer's slot of a KVCache), x holds the tokens after the cached ones."""
        # Cached generation feeds one token at a time: three matrix-vector products read the same
        # weights as one, without copying them into a stacked matrix at every step.
        qkv = self.project_qkv(x) if kv_cache is None else (self.q_proj(x), self.k_proj(x), self.v_proj(x))
        q, k, v = (self.split_heads(t) for t in qkv)
        if self.rope is not None:
            positions = None if token_positions is None else token_positions.unsqueeze(-2)  # broadcast over heads
            q, k = self.rope(q, positions), self.rope(k, positions)
        if kv_cache is not None:
            k, v = kv_cache.update(k, v)
        # A single query (a generation step) is the last position: it may attend to every key.
        mask = None if q.shape[-2] == 1 else causal_mask(q.shape[-2], k.shape[-2], x.device)
        out = scaled_dot_product_attention(q, k, v, mask)
        return self.output_proj(out.transpose(-3, -2).flatten(-2))

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # One matmul against the stacked weights (one GPU kernel instead of three); on CPU at the
        # TinyStories shape it is within noise of three matmuls (benchmarks/bench_model.py). The
        # parameters stay separate so the state-dict keys match the CS336 checkpoints.
        w = torch.cat((self.q_proj.weight, self.k_proj.weight, self.v_proj.weight))
        return (x @ w.T).chunk(3, dim=-1)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(..., seq, d_model) -> (..., heads, seq, d_k)"""
        return x.unflatten(-1, (self.num_heads, -1)).transpose(-3, -2)
