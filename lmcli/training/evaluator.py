"""When a run evaluates, and on what: the validation loss during training and at its end.

During training, every ``training.eval_interval`` steps (and at the last step) the loss is
measured on ``training.eval_batches`` random validation batches, the same ones every time, so
the losses of one run are comparable with each other. At the end, the loss over the whole
validation file (or its first ``training.final_eval_tokens``) in consecutive windows: every
token predicted once. ``lmcli eval`` reports that same measurement for any checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from lmcli.progress import SILENT, Progress
from lmcli.training.config import TrainConfig
from lmcli.training.data import get_batch, sequential_batches
from lmcli.training.device import Runtime
from lmcli.training.loss import cross_entropy

Batch = tuple[torch.Tensor, torch.Tensor]


class Evaluator:
    def __init__(self, valid: np.ndarray, config: TrainConfig, runtime: Runtime):
        t = config.training
        self.valid, self.runtime, self.kernels = valid, runtime, config.model.kernels
        self.batch_size, self.context = t.batch_size, config.model.context_length
        self.interval, self.max_steps, self.final_tokens = t.eval_interval, config.max_steps, t.final_eval_tokens
        self.batches = fixed_batches(valid, self.batch_size, self.context, runtime.device, t.eval_batches, t.seed + 1)

    def due(self, step: int) -> bool:
        return step % self.interval == 0 or step == self.max_steps

    def evaluate(self, model: torch.nn.Module) -> float:
        """The loss on the fixed validation batches."""
        return mean_loss(model, self.batches, self.runtime, self.kernels)

    def final(self, model: torch.nn.Module, progress: Progress = SILENT) -> float:
        """The loss over the whole validation file (or its first ``final_eval_tokens``)."""
        return validation_loss(model, self.valid, self.batch_size, self.context, self.final_tokens, self.runtime,
                               progress, kernels=self.kernels)


@torch.no_grad()
def mean_loss(model: torch.nn.Module, batches: Iterable[Batch], runtime: Runtime, kernels: str = "fast") -> float:
    """Mean cross-entropy over every predicted token of ``batches``."""
    total, count = torch.zeros((), device=runtime.device), 0
    for x, y in batches:
        with runtime.autocast_context():
            total += cross_entropy(model(x), y, kernels) * y.numel()
        count += y.numel()
    return (total / count).item()


def fixed_batches(
    x: np.ndarray, batch_size: int, context: int, device: torch.device, n_batches: int, seed: int
) -> list[Batch]:
    """The same random validation batches at every evaluation, so losses are comparable."""
    generator = torch.Generator().manual_seed(seed)
    return [get_batch(x, batch_size, context, device, generator) for _ in range(n_batches)]


def validation_loss(
    model: torch.nn.Module, tokens: np.ndarray, batch_size: int, context: int, max_tokens: int, runtime: Runtime,
    progress: Progress = SILENT, description: str = "final validation", kernels: str = "fast",
) -> float:
    """Loss over ``tokens`` (or their first ``max_tokens``) in consecutive windows of ``context`` tokens."""
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    task = progress.task(description, total=math.ceil((len(tokens) - 1) // context / batch_size))

    def counted(batches: Iterable[Batch]) -> Iterable[Batch]:
        for batch in batches:
            yield batch
            task.advance()

    return mean_loss(model, counted(sequential_batches(tokens, batch_size, context, runtime.device)), runtime, kernels)
