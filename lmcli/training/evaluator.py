"""When a run evaluates, and on what: the validation loss during training and at its end.

During training, every ``training.eval_interval`` steps (and at the last step) the loss is
measured on ``training.eval_batches`` random validation batches of ``training.batch_size``
windows, the same ones every time, so the losses of one run are comparable with each other.
At the end, the loss over the whole validation data (or its first ``training.final_eval_tokens``)
in consecutive windows: every token predicted once. ``lmcli eval`` reports that same
measurement for any checkpoint.

Several processes share the work (each the rows ``batch_plan`` gives it, in micro-batches)
and sum their losses and token counts over all ranks, so the result is the same number on
every rank and for any number of processes.

Each measurement is a ``Validation``: the loss in nats per token and, where the bytes of text
each id stands for are known, bits per byte (the total loss / ln 2 / the evaluated text's
bytes), which compares models whatever their tokenizers.

Every forward pass has the training micro-batch's shape: a shorter last batch is padded with
rows whose targets are ``IGNORE`` (they count for nothing), so a compiled model (compiled for
fixed shapes) compiles once for evaluation and never again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from lmcli.data.token_shards import TokenShards
from lmcli.model.kernels import IGNORE
from lmcli.progress import SILENT, Progress
from lmcli.training.batch_plan import BatchPlan
from lmcli.training.config import TrainConfig
from lmcli.training.data import draw_positions, read_batch
from lmcli.training.device import Runtime
from lmcli.training.distributed import all_reduce_sum

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Validation:
    loss: float  # mean cross-entropy, nats per predicted token
    bits_per_byte: float | None  # None when the bytes per id are unknown
    tokens: float = 0.0  # the predicted tokens it averages over
    text_bytes: float = 0.0  # the bytes of text they stand for
    sources: dict[str, Validation] = field(default_factory=dict)  # each source of a mixture's own

    def rows(self) -> dict[str, float]:
        """What a metrics row adds for a mixture: ``val_loss/NAME`` and ``val_bpb/NAME`` of each source."""
        row = {}
        for name, part in self.sources.items():
            row[f"val_loss/{name}"] = part.loss
            row[f"val_bpb/{name}"] = part.bits_per_byte
        return row


def combined(parts: dict[str, Validation]) -> Validation:
    """One validation of several sources: every predicted token of all of them counted once."""
    tokens, text = sum(p.tokens for p in parts.values()), sum(p.text_bytes for p in parts.values())
    loss_sum = sum(p.loss * p.tokens for p in parts.values())
    return Validation(loss_sum / tokens if tokens else math.nan, loss_sum / math.log(2) / text if text else None,
                      tokens, text, parts)


class Evaluator:
    """Validation of a run: its data, or each source of a mixture apart and all of them together."""

    def __init__(self, valid: TokenShards, config: TrainConfig, runtime: Runtime, plan: BatchPlan,
                 text_bytes: np.ndarray | None = None):
        t = config.training
        self.runtime, self.plan = runtime, plan
        self.text_bytes = None if text_bytes is None else torch.as_tensor(text_bytes, device=runtime.device)
        self.context = config.model.context_length
        self.interval, self.max_steps, self.final_tokens = t.eval_interval, config.max_steps, t.final_eval_tokens
        self.sources = {g.name: valid.group(i) for i, g in enumerate(valid.groups)} if len(valid.groups) > 1 else {"": valid}
        generator = torch.Generator().manual_seed(t.seed + 1)
        self.batches = {}
        for name, data in self.sources.items():
            positions = [draw_positions(data, t.batch_size, self.context, generator) for _ in range(t.eval_batches)]
            self.batches[name] = [(read_batch(data, micro, self.context, runtime.device), 1.0)
                                  for batch in positions for micro in plan.micro_batches(batch)]

    def due(self, step: int) -> bool:
        return step % self.interval == 0 or step == self.max_steps

    def evaluate(self, model: torch.nn.Module) -> Validation:
        """The loss on the fixed validation batches."""
        return self._per_source(lambda name, data: mean_loss(model, self.batches[name], self.runtime,
                                                             self.plan.micro_batch_size, self.text_bytes))

    def final(self, model: torch.nn.Module, progress: Progress = SILENT) -> Validation:
        """The loss over the whole validation data (or its first ``final_eval_tokens`` of each source)."""
        return self._per_source(lambda name, data: validation_loss(
            model, data, self.plan, self.context, self.final_tokens, self.runtime, progress,
            description=f"final validation {name}".strip(), text_bytes=self.text_bytes))

    def _per_source(self, measure) -> Validation:
        if list(self.sources) == [""]:
            return measure("", self.sources[""])
        return combined({name: measure(name, data) for name, data in self.sources.items()})


@torch.no_grad()
def mean_loss(
    model: torch.nn.Module, batches: Iterable[tuple[Batch, float]], runtime: Runtime, rows: int,
    text_bytes: torch.Tensor | None = None,
) -> Validation:
    """Mean cross-entropy over every predicted token of the (batch, weight) pairs of all ranks, each
    batch run as ``rows`` rows (padded); bits per byte with ``text_bytes`` (bytes per id, on the device)."""
    # float64 sums where the device has them (MPS does not): a long evaluation adds up many losses
    dtype = torch.float32 if runtime.device.type == "mps" else torch.float64
    totals = torch.zeros(3, dtype=dtype, device=runtime.device)  # loss x tokens, tokens, bytes of text
    for (x, y), weight in batches:
        tokens = torch.tensor(y.numel(), dtype=dtype, device=x.device)
        text = text_bytes[y].sum().to(dtype) if text_bytes is not None else torch.zeros((), dtype=dtype, device=x.device)
        x, y = padded(x, y, rows)
        with runtime.autocast_context():
            loss = model(x, targets=y)
        totals += torch.stack([loss.to(dtype) * tokens, tokens, text]) * weight
    loss_sum, count, text_sum = all_reduce_sum(totals).tolist()
    return Validation(loss_sum / count if count else math.nan, loss_sum / math.log(2) / text_sum if text_sum else None,
                      count, text_sum)


def padded(x: torch.Tensor, y: torch.Tensor, rows: int) -> Batch:
    """(inputs, targets) of ``rows`` rows: the batch, then rows of token 0 whose targets are IGNORE."""
    missing = rows - x.shape[0]
    if missing <= 0:
        return x, y
    return torch.cat([x, x.new_zeros(missing, x.shape[1])]), torch.cat([y, y.new_full((missing, y.shape[1]), IGNORE)])


def validation_loss(
    model: torch.nn.Module, data: TokenShards | np.ndarray, plan: BatchPlan, context: int, max_tokens: int,
    runtime: Runtime, progress: Progress = SILENT, description: str = "final validation",
    text_bytes: torch.Tensor | None = None,
) -> Validation:
    """Loss over ``data`` (or its first ``max_tokens``) in consecutive windows of ``context`` tokens, each
    rank evaluating its share in micro-batches of ``plan``."""
    data = (data if isinstance(data, TokenShards) else TokenShards([data])).prefix(max_tokens, context)
    positions = data.sequential_positions(context)
    batches = plan.shared_batches(positions)
    task = progress.task(description, total=len(batches))

    def read(pairs: list[tuple[np.ndarray, float]]) -> Iterable[tuple[Batch, float]]:
        for micro, weight in pairs:
            yield read_batch(data, micro, context, runtime.device), weight
            task.advance()

    return mean_loss(model, read(batches), runtime, plan.micro_batch_size, text_bytes)
