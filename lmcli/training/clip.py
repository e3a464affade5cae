"""Gradient clipping by global L2 norm.

All gradients are treated as one long vector ``g``. When ``||g||_2`` exceeds ``max_l2_norm``
every gradient is scaled by ``max_l2_norm / (||g||_2 + eps)``, so the update keeps its
direction but a rare huge gradient (a loss spike) cannot throw the weights far away.

The scale factor is clamped to 1 on the device instead of branching on ``||g||`` in Python:
that would force a GPU -> CPU synchronisation every step.

Under FSDP each rank holds a slice of every gradient (a DTensor): the squared norms of the
local slices are summed over the ranks, so every rank computes the same global norm and scales
its own slices.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.distributed.tensor import DTensor

from lmcli.training.distributed import all_reduce_sum

EPS = 1e-6


def clip_grad_norm(parameters: Iterable[torch.nn.Parameter], max_l2_norm: float) -> torch.Tensor:
    """Scale gradients in place so their global L2 norm is at most ``max_l2_norm``.

    Returns the norm before clipping (a 0-d tensor, for logging; call ``.item()`` when needed).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    sharded = any(isinstance(g, DTensor) for g in grads)
    if sharded:
        grads = [g.to_local() if isinstance(g, DTensor) else g for g in grads]
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    if sharded:
        total = all_reduce_sum(total.square()).sqrt()
    scale = (max_l2_norm / (total + EPS)).clamp(max=1.0)
    torch._foreach_mul_(grads, scale)
    return total
