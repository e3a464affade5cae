"""Cross-entropy of next-token predictions, computed stably from raw logits.

For logits ``o`` over a vocabulary and the true token ``y``::

    loss = -log softmax(o)[y] = -o[y] + log sum_j exp(o[j])
         = -(o[y] - m) + log sum_j exp(o[j] - m)        with m = max_j o[j]

Subtracting the maximum keeps every ``exp`` at most 1 (no overflow), and writing the loss as
``logsumexp - o[y]`` cancels the ``log`` against the ``exp`` of the softmax instead of taking
the log of a probability that may have underflowed to 0. The loss is averaged over every
leading (batch, time) position. Logits are upcast to float32 first, so the loss is accurate
even when the model runs under bf16 autocast.

``kernels="reference"`` computes exactly this expression and lets autograd differentiate it;
the default ``"fast"`` runs ``lmcli.model.kernels.cross_entropy``, the same loss with its
gradient (softmax(o) - onehot(y)) / N written by hand, in place.
"""

from __future__ import annotations

import torch

from lmcli.model import kernels as fast


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, kernels: str = "fast") -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [..., vocab] against integer ``targets`` [...]."""
    if kernels != "reference":
        return fast.cross_entropy(logits, targets)  # the same loss, its gradient written by hand
    logits = logits.float()
    shifted = logits - logits.amax(dim=-1, keepdim=True).detach()  # the shift changes no gradient
    log_sum_exp = shifted.exp().sum(dim=-1).log()
    return (log_sum_exp - shifted.gather(-1, targets.unsqueeze(-1)).squeeze(-1)).mean()
