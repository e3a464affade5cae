"""The learning-rate schedule: linear warm-up, cosine decay, then a constant minimum.

With ``a_max``/``a_min`` the maximum/minimum rates, ``T_w`` warm-up and ``T_c`` cosine-cycle
iterations (CS336 assignment 1 semantics)::

    t < T_w:          a_t = t / T_w * a_max
    T_w <= t <= T_c:  a_t = a_min + 1/2 (1 + cos(pi (t - T_w) / (T_c - T_w))) (a_max - a_min)
    t > T_c:          a_t = a_min

Warm-up keeps the first, badly-scaled Adam updates small; the cosine tail anneals the rate so
the final iterations settle into a minimum instead of bouncing around it.
"""

from __future__ import annotations

import math


def cosine_lr(
    it: int, max_learning_rate: float, min_learning_rate: float, warmup_iters: int, cosine_cycle_iters: int
) -> float:
    """Learning rate at iteration ``it`` of a warm-up + cosine schedule."""
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    if it > cosine_cycle_iters:
        return min_learning_rate
    if cosine_cycle_iters == warmup_iters:  # a cycle of length zero: the warm-up ends at the minimum
        return min_learning_rate
    progress = (it - warmup_iters) / (cosine_cycle_iters - warmup_iters)
    return min_learning_rate + 0.5 * (1 + math.cos(math.pi * progress)) * (max_learning_rate - min_learning_rate)
