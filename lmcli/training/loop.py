"""The training loop, readable top to bottom (in the spirit of nanoGPT's train.py).

Each step: set the learning rate from the schedule, draw a random batch of windows, run the
model (under bf16 autocast on GPUs) and the cross-entropy, backpropagate, clip the global
gradient norm, take an AdamW step. Around that, each concern has its own object:

- ``TrainState`` (state): the model, optimizer, batch sampler and counters a checkpoint saves;
- ``Evaluator`` (evaluator): every ``eval_interval`` steps the loss on fixed validation
  batches, at the end the loss on the whole validation file;
- ``Checkpointer`` (checkpointer): ``latest.pt`` every ``checkpoint_interval`` steps,
  ``best.pt`` at a new lowest validation loss;
- observers (observers): every ``log_interval`` steps a metrics row (loss, grad norm, lr,
  tokens/s, MFU); the loss is only read back from the device then, so a GPU is not stalled
  every step. The run's files and the live panel are observers.

A NaN or infinite loss stops the run with the last good checkpoint untouched. Ctrl-C (or
SIGTERM, what schedulers send) finishes the current step, saves ``latest.pt`` and stops; a
second one stops at once. ``lmcli train --resume`` continues bit for bit where the checkpoint
left off, because the checkpoint holds the batch sampler's random state with the weights.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from lmcli.accounting.costs import forward_flops
from lmcli.errors import LmcliError
from lmcli.json_output import finite_or_none
from lmcli.progress import SILENT, Progress
from lmcli.training.checkpoint import LATEST
from lmcli.training.checkpointer import Checkpointer
from lmcli.training.clip import clip_grad_norm
from lmcli.training.config import TrainConfig
from lmcli.training.data import TrainingData, get_batch
from lmcli.training.device import Runtime
from lmcli.training.evaluator import Evaluator
from lmcli.training.loss import cross_entropy
from lmcli.training.metrics import perplexity
from lmcli.training.observers import Observers, RunPlan, TrainObserver
from lmcli.training.schedule import cosine_lr
from lmcli.training.state import TrainState


class TrainingDiverged(LmcliError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    state: TrainState
    train_loss: float  # of the last logged step
    final_val_loss: float


def train(
    config: TrainConfig, data: TrainingData, runtime: Runtime, state: TrainState, checkpointer: Checkpointer,
    observers: list[TrainObserver], resume: dict[str, Any] | None = None, progress: Progress = SILENT,
) -> TrainResult:
    """Train ``state`` (fresh from ``TrainState.create``), or the ``resume`` checkpoint dict restored into
    it, to ``config.max_steps``."""
    if resume is not None:
        try:
            state.load_state_dict(resume)
        except LmcliError as e:
            raise LmcliError(f"{checkpointer.run_dir / LATEST}: {e}") from None
    model = runtime.compile_model(state.model)
    evaluator, events = Evaluator(data.valid, config, runtime), Observers(observers)
    tokens_per_step, log_interval = config.training.batch_size * config.model.context_length, config.training.log_interval
    meter = Throughput(config, runtime, state.step)
    events.on_note(
        f"training {count_parameters(state.model):,} parameters on {runtime.describe()} for {config.max_steps:,} "
        f"steps of {tokens_per_step:,} tokens" + (f", resuming at step {state.step:,}" if state.step else "")
    )
    events.on_note(f"unigram entropy of the training ids: {data.train_stats.unigram_entropy():.3f} nats (the loss to beat)")
    events.on_start(RunPlan(state.step, config.max_steps, tokens_per_step, finite_or_none(state.best_val_loss)))
    loss_value = math.nan
    with StopRequest() as stop:
        for step in range(state.step + 1, config.max_steps + 1):
            lr, loss, grad_norm = train_step(state, model, data.train, config, runtime)
            state.step = step
            events.on_step(step)
            evaluating, saving = evaluator.due(step), checkpointer.due(step, stop.requested)
            if not (step % log_interval == 0 or evaluating or saving):
                continue
            # Reading the loss synchronises with the device: only done on these steps.
            loss_value, norm_value = loss.item(), grad_norm.item()
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                events.on_row({"kind": "diverged", "step": step, "loss": loss_value, "grad_norm": norm_value})
                raise TrainingDiverged(
                    f"training diverged at step {step:,}: loss {loss_value}, gradient norm {norm_value}; "
                    f"{checkpointer.kept()}. Lower optimizer.lr or enable optimizer.grad_clip"
                )
            tokens_per_s, mfu = meter.measure(step)
            events.on_row({"kind": "train", "step": step, "tokens": step * tokens_per_step,
                           "elapsed_s": round(state.elapsed_s, 3), "lr": lr, "loss": loss_value,
                           "grad_norm": norm_value, "tokens_per_s": round(tokens_per_s, 1), "mfu": mfu})
            if evaluating:
                val_loss = evaluator.evaluate(model)
                events.on_row({"kind": "eval", "step": step, "tokens": step * tokens_per_step, "val_loss": val_loss,
                               "val_perplexity": perplexity(val_loss)})
                events.on_note(f"step {step:,}: train loss {loss_value:.4f}, val loss {val_loss:.4f}, lr {lr:.2e}, "
                               f"{tokens_per_s:,.0f} tokens/s")
                if val_loss < state.best_val_loss:
                    state.best_val_loss = val_loss
                    checkpointer.save_best(state)
            if saving:
                checkpointer.save_latest(state)
            if stop.requested:
                events.on_row({"kind": "interrupted", "step": step})
                events.on_note(f"interrupted: checkpoint of step {step:,} saved; continue with "
                               f"`lmcli train --resume {checkpointer.run_dir}`")
                raise KeyboardInterrupt
            meter.restart(step)  # evaluating and saving are not training time

    final_val_loss = evaluator.final(model, progress)
    events.on_row({"kind": "final_eval", "step": config.max_steps, "tokens": config.max_steps * tokens_per_step,
                   "val_loss": final_val_loss, "val_perplexity": perplexity(final_val_loss)})
    return TrainResult(state, loss_value, final_val_loss)


def train_step(
    state: TrainState, model: torch.nn.Module, train_ids: np.ndarray, config: TrainConfig, runtime: Runtime
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimizer step of ``model`` (``state.model``, maybe compiled); returns (lr, loss, gradient norm)."""
    o = config.optimizer
    lr = cosine_lr(state.step + 1, o.lr, o.min_lr, o.warmup_steps, config.cosine_steps)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    x, y = get_batch(train_ids, config.training.batch_size, config.model.context_length, runtime.device, state.batch_rng)
    with runtime.autocast_context():
        loss = cross_entropy(model(x), y, config.model.kernels)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = clip_grad_norm(state.model.parameters(), o.grad_clip or math.inf)
    state.optimizer.step()
    return lr, loss, grad_norm


class Throughput:
    """Tokens per second, and model FLOPs utilization where the device's peak is known, over the
    steps since the last measurement."""

    def __init__(self, config: TrainConfig, runtime: Runtime, step: int):
        self.tokens_per_step = config.training.batch_size * config.model.context_length
        self.flops_per_token = training_flops_per_token(config) if runtime.peak_flops else None
        self.peak_flops = runtime.peak_flops
        self.restart(step)

    def restart(self, step: int) -> None:
        self.since, self.since_step = time.perf_counter(), step

    def measure(self, step: int) -> tuple[float, float | None]:
        tokens_per_s = (step - self.since_step) * self.tokens_per_step / (time.perf_counter() - self.since)
        mfu = tokens_per_s * self.flops_per_token / self.peak_flops if self.flops_per_token else None
        return tokens_per_s, mfu


def training_flops_per_token(config: TrainConfig) -> float:
    """Matmul FLOPs of a training step per token: forward + backward ~ 3 x forward."""
    context = config.model.context_length
    return 3 * forward_flops(config.model, context)["total"] / context


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class StopRequest:
    """Turns the first Ctrl-C (SIGINT) or SIGTERM into a request to stop after the current step.

    The loop then checkpoints a consistent state; a second signal raises KeyboardInterrupt at
    once. Signal handlers can only be set from the main thread; elsewhere the signals keep
    their default behaviour.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
