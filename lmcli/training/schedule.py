"""The learning-rate schedules: linear warm-up, then cosine decay (CS336), warmup-stable-decay, or linear.

With ``a_max``/``a_min`` the maximum/minimum rates, ``T_w`` warm-up and ``T_c`` cosine-cycle
iterations (CS336 assignment 1 semantics)::

    t < T_w:          a_t = t / T_w * a_max
    T_w <= t <= T_c:  a_t = a_min + 1/2 (1 + cos(pi (t - T_w) / (T_c - T_w))) (a_max - a_min)
    t > T_c:          a_t = a_min

Warm-up keeps the first, badly-scaled Adam updates small; the cosine tail anneals the rate so
the final iterations settle into a minimum instead of bouncing around it.

Warmup-stable-decay (``wsd``, "trapezoidal") holds ``a_max`` after the warm-up and decays only
over the last ``decay_fraction`` of the ``T`` steps, with shape ``linear``, ``cosine`` or
``1-sqrt`` (with p the progress through the decay, 0 to 1)::

    T_d = T - round(decay_fraction * T)
    T_w <= t < T_d:   a_t = a_max
    T_d <= t <= T:    a_t = a_min + (a_max - a_min) * f(p),   f = 1 - p,  (1 + cos(pi p)) / 2,  or 1 - sqrt(p)

Nothing before ``T_d`` depends on ``T``, so a run checkpointed in its stable phase can be
continued with a larger budget (``--resume`` with more ``training.total_tokens``): the decay
moves to the new end, and the result is the run that had the larger budget from the start.
``linear`` decays linearly from the end of the warm-up to ``T`` (wsd with the whole run decaying).
"""

from __future__ import annotations

import math

from lmcli.training.config import TrainConfig

DECAY_SHAPES = {
    "linear": lambda p: 1 - p,
    "cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)),
    "1-sqrt": lambda p: 1 - math.sqrt(p),
}


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


def wsd_lr(
    it: int, max_learning_rate: float, min_learning_rate: float, warmup_iters: int, total_iters: int,
    decay_fraction: float, shape: str = "linear",
) -> float:
    """Learning rate at iteration ``it`` of a warm-up + stable + decay schedule of ``total_iters``."""
    if it < warmup_iters:
        return it / warmup_iters * max_learning_rate
    decay_start = max(warmup_iters, total_iters - round(decay_fraction * total_iters))
    if it < decay_start:
        return max_learning_rate
    if it >= total_iters:
        return min_learning_rate
    progress = (it - decay_start) / (total_iters - decay_start)
    return min_learning_rate + DECAY_SHAPES[shape](progress) * (max_learning_rate - min_learning_rate)


def learning_rate(config: TrainConfig, it: int) -> float:
    """The rate of iteration ``it`` under the run's ``optimizer.schedule``."""
    o = config.optimizer
    if o.schedule == "cosine":
        return cosine_lr(it, o.lr, o.min_lr, o.warmup_steps, config.cosine_steps)
    if o.schedule == "linear":
        return wsd_lr(it, o.lr, o.min_lr, o.warmup_steps, config.max_steps, 1.0, "linear")
    return wsd_lr(it, o.lr, o.min_lr, o.warmup_steps, config.max_steps, o.decay_fraction, o.decay_shape)
