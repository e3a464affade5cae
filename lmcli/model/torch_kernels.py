"""PyTorch's own fused kernels, for speed on GPUs: NOT from scratch.

``model.kernels = "torch"`` swaps two steps of the from-scratch model for PyTorch's built-in
versions, which is the one place lmcli calls ``torch.nn.functional``:

- attention: ``scaled_dot_product_attention``, which on CUDA dispatches to FlashAttention or
  the memory-efficient kernel: the (queries × keys) scores never reach global memory;
- the loss: ``cross_entropy``, one fused kernel.

RoPE, the projections, the norms and the feed-forward stay lmcli's. The tests check that both
kernels equal the plain code of ``lmcli.model.attention`` and ``lmcli.model.loss``; use the
default ``"fast"`` set (from scratch) to learn from or to compare against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lmcli.model.kernels import IGNORE


def attention(Q: torch.Tensor, K: torch.Tensor, V: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(Q Kᵀ / √d_k) V; ``mask`` (True = attend) is the causal mask of ``attention.causal_mask`` or None."""
    if mask is not None and Q.shape[-2] == K.shape[-2]:
        return F.scaled_dot_product_attention(Q, K, V, is_causal=True)  # the flash kernels take no explicit mask
    return F.scaled_dot_product_attention(Q, K, V, attn_mask=mask)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not IGNORE, in float32."""
    return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=IGNORE)
