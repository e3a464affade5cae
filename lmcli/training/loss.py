"""Cross-entropy of next-token predictions, computed stably from raw logits.

For logits ``o`` over a vocabulary and the true token ``y``::

    loss = -log softmax(o)[y] = -o[y] + log sum_j exp(o[j])
         = -(o[y] - m) + log sum_j exp(o[j] - m)        with m = max_j o[j]

Subtracting the maximum keeps every ``exp`` at most 1 (no overflow), and writing the loss as
``logsumexp - o[y]`` cancels the ``log`` against the ``exp`` of the softmax instead of taking
the log of a probability that may have underflowed to 0. The loss is averaged over every
leading (batch, time) position. Logits are upcast to float32 first, so the loss is accurate
even when the model runs under bf16 autocast.

The gradient is written by hand (``CrossEntropy``, an autograd Function): with N positions,

    d loss / d o[j] = (softmax(o)[j] - [j = y]) / N,

one pass over the (N × vocab) logits, written in place over the exponentials the forward
saved. So the graph can be run backward once (a second ``backward(retain_graph=True)`` raises
PyTorch's "modified by an inplace operation" error rather than returning a wrong gradient).
Autograd on the expression above would keep the shifted logits and their exponentials and run
the backward of the subtraction, the exp and the gather, each a full (N × vocab) tensor.
"""

from __future__ import annotations

import torch


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` [..., vocab] against integer ``targets`` [...]."""
    return CrossEntropy.apply(logits.float(), targets)


class CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.unsqueeze(-1)
        maxes = logits.amax(dim=-1, keepdim=True)
        exps = (logits - maxes).exp_()  # one (N × vocab) tensor, exponentiated in place
        sums = exps.sum(dim=-1, keepdim=True)
        ctx.save_for_backward(exps, sums, targets)
        return (sums.log() - (logits.gather(-1, targets) - maxes)).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        exps, sums, targets = ctx.saved_tensors
        scale = grad / targets.numel()
        grad_logits = exps.mul_(scale / sums)  # softmax(o) · scale, in place: backward runs once
        grad_logits.scatter_add_(-1, targets, (-scale).expand(targets.shape))
        return grad_logits, None
