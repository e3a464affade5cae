"""Cross-entropy of next-token predictions, computed stably from raw logits.

For logits ``o`` over a vocabulary and the true token ``y``::

    loss = -log softmax(o)[y] = -o[y] + log sum_j exp(o[j])
         = -(o[y] - m) + log sum_j exp(o[j] - m)        with m = max_j o[j]

Subtracting the maximum keeps every ``exp`` at most 1 (no overflow), and writing the loss as
``logsumexp - o[y]`` cancels the ``log`` against the ``exp`` of the softmax instead of taking
the log of a probability that may have underflowed to 0. The loss is averaged over every
leading (batch, time) position. Logits are upcast to float32 first, so the loss is accurate
even when the model runs under bf16 autocast.
"""

from __future__ import annotations

import torch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [..., vocab] against integer ``targets`` [...]."""
    logits = logits.float()
    shifted = logits - logits.amax(dim=-1, keepdim=True).detach()  # a constant shift: no gradient needed
    log_normalizer = shifted.exp().sum(dim=-1).log()
    target_logit = shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (log_normalizer - target_logit).mean()
