"""AdamW: Adam with decoupled weight decay (Loshchilov & Hutter, 2019, algorithm 2).

For every parameter ``p`` with gradient ``g`` at step ``t`` (first step ``t = 1``)::

    p <- p - lr * weight_decay * p                  decay, decoupled from the gradient
    m <- beta1 * m + (1 - beta1) * g                running mean of the gradient
    v <- beta2 * v + (1 - beta2) * g^2              running mean of its square
    p <- p - lr / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)

The bias corrections ``1 - beta^t`` undo the zero initialisation of ``m`` and ``v``. Decay is
applied to the weights before the update (``p_{t-1}`` as in the paper), which is also what
``torch.optim.AdamW`` does, so the two agree to rounding error.

The step applies the formula to a whole parameter group at once with ``torch._foreach_*``
tensor operations (one kernel launch per operation for the group instead of one per
parameter), which matters for models with many small tensors. ``compile_step`` (training does
it when it compiles the model) runs the same formula as one compiled function per group, which
fuses it into a few kernels with no temporaries in memory; the learning rate and the bias
corrections go in as tensors, so their change at every step compiles nothing again.

``decay_groups`` builds the parameter groups: names matching a ``no_decay`` glob pattern
(norm gains, embeddings) get ``weight_decay = 0``.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable

import torch

from lmcli.errors import LmcliError


class AdamW(torch.optim.Optimizer):
    def __init__(
        self,
        params: Iterable[torch.nn.Parameter] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
    ):
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"invalid eps {eps} or weight_decay {weight_decay}: must be >= 0")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self._compiled_update = None

    def hyperparameters(self) -> dict:
        """The constructor's arguments besides the parameters: what a copy over other parameters needs."""
        return {key: self.defaults[key] for key in ("lr", "betas", "eps", "weight_decay")}

    def compile_step(self, options: dict) -> None:
        """Run each group's update through ``torch.compile(compiled_update, **options)`` from now on."""
        self._compiled_update = torch.compile(compiled_update, **options)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update_group(group, params)
        return loss

    def _update_group(self, group: dict, params: list[torch.nn.Parameter]) -> None:
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        grads = [p.grad for p in params]
        states = [self._state_of(p) for p in params]
        exp_avgs = [s["exp_avg"] for s in states]
        exp_avg_sqs = [s["exp_avg_sq"] for s in states]
        for s in states:
            s["step"] += 1
        steps = {s["step"] for s in states}
        if self._compiled_update is not None and len(steps) == 1:  # (parameters added later step apart: eager)
            t = steps.pop()
            # 0-d CPU tensors: scalars to any device's kernels without a copy or a wait, and not compiled in as constants
            scalars = [torch.tensor(x, dtype=torch.float64) for x in (lr, -lr / (1 - beta1**t), math.sqrt(1 - beta2**t))]
            self._compiled_update(params, grads, exp_avgs, exp_avg_sqs, *scalars, beta1, beta2, eps, weight_decay)
            return

        if weight_decay != 0:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)

        # denominator sqrt(v / (1 - beta2^t)) + eps, and step size lr / (1 - beta1^t), per parameter
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denoms, [math.sqrt(1 - beta2 ** s["step"]) for s in states])
        torch._foreach_add_(denoms, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr / (1 - beta1 ** s["step"]) for s in states])

    def _state_of(self, p: torch.nn.Parameter) -> dict:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state


def compiled_update(
    params: list[torch.Tensor], grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
    lr: torch.Tensor, step_size: torch.Tensor, bias2_sqrt: torch.Tensor, beta1: float, beta2: float, eps: float,
    weight_decay: float,
) -> None:
    """``AdamW._update_group``'s formula for one step count, written for torch.compile: ``lr``, the step size
    −lr / (1 − beta1^t) and √(1 − beta2^t) are 0-d tensors, so new values need no new compilation."""
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if weight_decay != 0:
            p.mul_(1 - lr * weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        p.add_(m / (v.sqrt() / bias2_sqrt + eps) * step_size)


def decay_groups(model: torch.nn.Module, weight_decay: float, no_decay: list[str]) -> list[dict]:
    """Two parameter groups: decayed weights, and those whose name matches a ``no_decay`` pattern.

    Every pattern must match some parameter, so a typo in a config cannot silently decay
    everything.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    for pattern in no_decay:
        if not any(fnmatch.fnmatchcase(n, pattern) for n, _ in named):
            names = ", ".join(n for n, _ in named)
            raise LmcliError(f"optimizer.no_decay pattern {pattern!r} matches no parameter (parameters: {names})")
    exempt = {n for n, _ in named if any(fnmatch.fnmatchcase(n, pattern) for pattern in no_decay)}
    groups = [
        {"params": [p for n, p in named if n not in exempt], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n in exempt], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
