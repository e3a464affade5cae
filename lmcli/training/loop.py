"""The training loop, readable top to bottom (in the spirit of nanoGPT's train.py).

Each step: set the learning rate from the schedule, draw a random batch of windows, run the
model and its cross-entropy (one call: the model returns the loss when given the targets, so
compilation covers both; bf16 autocast on GPUs), backpropagate, clip the global gradient norm,
take an AdamW step. The batch may be run as several micro-batches whose
gradients add up (gradient accumulation) and shared among processes (``batch_plan``,
``parallelize``): each micro-batch's loss is divided by their number, so the step's gradient
is that of the mean loss over the global batch. Around that, each concern has its own object:

- ``TrainState`` (state): the model, optimizer, batch sampler and counters a checkpoint saves;
- ``Evaluator`` (evaluator): every ``eval_interval`` steps the loss on fixed validation
  batches, at the end the loss on the whole validation file;
- ``Checkpointer`` (checkpointer): ``latest.pt`` every ``checkpoint_interval`` steps,
  ``best.pt`` at a new lowest validation loss, written in the background;
- observers (observers): every ``log_interval`` steps a metrics row (loss, grad norm, lr,
  tokens/s, MFU); the loss is only read back from the device then, so a GPU is not stalled
  every step. The run's files and the live panel are observers.

A NaN or infinite loss stops the run with the last good checkpoint untouched. Ctrl-C (or
SIGTERM, what schedulers send) finishes the current step, saves ``latest.pt`` and stops; a
second one (a second later: the launcher forwards the first) stops at once. With several
processes they agree after every step whether one was asked to stop, so all stop together.
``lmcli train --resume`` continues bit for bit where the checkpoint left off, because the
checkpoint holds the batch sampler's random state with the weights.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import torch

from lmcli.accounting.costs import forward_flops
from lmcli.errors import LmcliError
from lmcli.json_output import finite_or_none
from lmcli.progress import SILENT, Progress
from lmcli.training.batch_plan import BatchPlan
from lmcli.training.checkpoint import LATEST
from lmcli.training.checkpointer import Checkpointer
from lmcli.training.clip import clip_grad_norm
from lmcli.training.config import TrainConfig
from lmcli.training.data import TrainingData, draw_positions, read_batch
from lmcli.training.device import Runtime
from lmcli.training.distributed import World, all_reduce_sum, any_rank
from lmcli.training.evaluator import Evaluator
from lmcli.training.metrics import perplexity
from lmcli.training.muon import optimizer_groups
from lmcli.training.observers import Observers, RunPlan, TrainObserver
from lmcli.training.parallelize import DataParallel, parallel_mode, shard_optimizer
from lmcli.training.schedule import learning_rate
from lmcli.training.state import TrainState


class TrainingDiverged(LmcliError):
    """The loss or the gradient norm became NaN or infinite."""


@dataclass(frozen=True)
class TrainResult:
    state: TrainState
    train_loss: float  # of the last logged step
    final_val_loss: float
    first_step_s: float | None  # the first step's seconds: compilation and warm-up
    final_val_bpb: float | None = None  # bits per byte of the final evaluation


def train(
    config: TrainConfig, data: TrainingData, runtime: Runtime, state: TrainState, checkpointer: Checkpointer,
    observers: list[TrainObserver], resume: dict[str, Any] | None = None, progress: Progress = SILENT,
    world: World = World(),
) -> TrainResult:
    """Train ``state`` (fresh from ``TrainState.create``), or the ``resume`` checkpoint dict restored into
    it, to ``config.max_steps``; with several processes, every rank calls this (observers on rank 0)."""
    if resume is not None:
        try:
            state.load_state_dict(resume)
        except LmcliError as e:
            raise LmcliError(f"{checkpointer.run_dir / LATEST}: {e}") from None
    plan = BatchPlan.of(config, world)
    model = parallelize(state, config, world, runtime)
    evaluator, events = Evaluator(data.valid, config, runtime, plan, data.text_bytes), Observers(observers)
    tokens_per_step, log_interval = config.training.batch_size * config.model.context_length, config.training.log_interval
    meter = Throughput(config, runtime, state.step, world.size)
    events.on_note(
        f"training {count_parameters(state.model):,} parameters on {runtime.describe()}{describe_split(plan, model)} "
        f"for {config.max_steps:,} steps of {tokens_per_step:,} tokens"
        + (f", resuming at step {state.step:,}" if state.step else "")
    )
    events.on_note(f"unigram entropy of the training ids: {data.train_stats.unigram_entropy():.3f} nats (the loss to beat)")
    events.on_start(RunPlan(state.step, config.max_steps, tokens_per_step, finite_or_none(state.best_val_loss)))
    loss_value = math.nan
    with StopRequest() as stop:
        for step in range(state.step + 1, config.max_steps + 1):
            lr, losses, grad_norm = train_step(state, model, plan, data, config, runtime)
            state.step = step
            if meter.first_step_s is None:
                meter.end_first_step(step)
                if runtime.compile:
                    events.on_note(f"first step {meter.first_step_s:.1f} s: compilation and warm-up, left out of tokens/s and MFU")
            events.on_step(step)
            stopping = any_rank(stop.requested)  # all ranks stop after the same step
            evaluating, saving = evaluator.due(step), checkpointer.due(step, stopping)
            if not (step % log_interval == 0 or evaluating or saving):
                continue
            # Reading the loss synchronises with the device: only done on these steps (the same on every rank).
            loss_value, z_value = (all_reduce_sum(losses) / world.size).tolist()
            norm_value = grad_norm.item()
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                events.on_row({"kind": "diverged", "step": step, "loss": loss_value, "grad_norm": norm_value})
                raise TrainingDiverged(
                    f"training diverged at step {step:,}: loss {loss_value}, gradient norm {norm_value}; "
                    f"{checkpointer.kept()}. Lower optimizer.lr or enable optimizer.grad_clip"
                )
            tokens_per_s, mfu = meter.measure(step)
            events.on_row({"kind": "train", "step": step, "tokens": step * tokens_per_step,
                           "elapsed_s": round(state.elapsed_s, 3), "lr": lr, "loss": loss_value,
                           "grad_norm": norm_value, "tokens_per_s": round(tokens_per_s, 1), "mfu": mfu,
                           **({"z_loss": z_value} if config.training.z_loss else {})})
            if evaluating:
                validation = evaluator.evaluate(model.evaluated)
                val_loss = validation.loss
                events.on_row({"kind": "eval", "step": step, "tokens": step * tokens_per_step, "val_loss": val_loss,
                               "val_perplexity": perplexity(val_loss), "val_bpb": validation.bits_per_byte, **validation.rows()})
                events.on_note(f"step {step:,}: train loss {loss_value:.4f}, val loss {val_loss:.4f}, lr {lr:.2e}, "
                               f"{tokens_per_s:,.0f} tokens/s")
                if val_loss < state.best_val_loss:
                    state.best_val_loss = val_loss
                    checkpointer.save_best(state)
            if saving:
                checkpointer.save_latest(state)
            if stopping:
                checkpointer.wait()  # the checkpoint is on disk before the run says so
                events.on_row({"kind": "interrupted", "step": step})
                events.on_note(f"interrupted: checkpoint of step {step:,} saved; continue with "
                               f"`lmcli train --resume {checkpointer.run_dir}`")
                raise KeyboardInterrupt
            meter.restart(step)  # evaluating and saving are not training time

    final = evaluator.final(model.evaluated, progress)  # while the last checkpoint is written
    checkpointer.wait()
    final_val_loss = final.loss
    events.on_row({"kind": "final_eval", "step": config.max_steps, "tokens": config.max_steps * tokens_per_step,
                   "val_loss": final_val_loss, "val_perplexity": perplexity(final_val_loss), "val_bpb": final.bits_per_byte,
                   **final.rows()})
    return TrainResult(state, loss_value, final_val_loss, meter.first_step_s, final.bits_per_byte)


def train_step(
    state: TrainState, model: DataParallel, plan: BatchPlan, data: TrainingData, config: TrainConfig, runtime: Runtime
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimizer step over the global batch (this rank's micro-batches of it); returns (lr, this rank's
    mean cross-entropy and z-loss term as one tensor of 2, gradient norm)."""
    o, context = config.optimizer, config.model.context_length
    lr = learning_rate(config, state.step + 1)
    for group in state.optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's matrices: the same schedule at their own peak
    micro_batches = plan.micro_batches(draw_positions(data.train, plan.batch_size, context, state.batch_rng))
    state.optimizer.zero_grad(set_to_none=True)
    total = torch.zeros(2, device=runtime.device)  # cross-entropy, z-loss term
    for i, positions in enumerate(micro_batches):
        x, y = read_batch(data.train, positions, context, runtime.device)
        last = i == len(micro_batches) - 1
        with model.sync_gradients(last):  # gradients add up over the micro-batches; averaged over ranks after the last
            with runtime.autocast_context():
                loss, z_term = training_loss(model.trained, x, y, config.training.z_loss)  # the model computes its loss
            (loss / len(micro_batches)).backward()
        total += torch.stack([loss.detach() - z_term, z_term]) / len(micro_batches)
    grad_norm = clip_grad_norm(state.model.parameters(), o.grad_clip or math.inf)
    state.optimizer.step()
    return lr, total, grad_norm


def training_loss(model, x: torch.Tensor, y: torch.Tensor, z_loss: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss to train on (cross-entropy, plus the z-loss term when ``z_loss`` > 0) and that term alone."""
    if z_loss:
        return model(x, targets=y, z_loss=z_loss)
    loss = model(x, targets=y)
    return loss, torch.zeros_like(loss.detach())


def parallelize(state: TrainState, config: TrainConfig, world: World, runtime: Runtime) -> DataParallel:
    """The model as this rank trains it (compiled, and with several processes under DDP or FSDP)."""
    state.model.activation_checkpointing = config.training.activation_checkpointing
    model = DataParallel(state.model, parallel_mode(config.training.parallel, world), runtime)
    if model.mode == "fsdp":  # sharding made new (sliced) parameters: the optimizer must update those
        state.optimizer = shard_optimizer(state.optimizer, optimizer_groups(state.model, config.optimizer))
    elif runtime.compile:  # the update fused too (FSDP's sharded DTensors stay with the eager update)
        state.optimizer.compile_step(runtime.compile_options())
    return model


def describe_split(plan: BatchPlan, model: DataParallel) -> str:
    """How the batch is computed, for the run's first line ("" for one process without accumulation)."""
    parts = [f"{plan.world.size} processes, {model.mode}"] if plan.world.size > 1 else []
    if plan.accumulation_steps > 1:
        parts.append(f"{plan.accumulation_steps} micro-batches of {plan.micro_batch_size} per step")
    return f" ({'; '.join(parts)})" if parts else ""


class Throughput:
    """Tokens per second of all processes, and model FLOPs utilization where the device's peak is known
    (of all ``devices`` together), over the steps since the last measurement.

    A run's first step (of this process: a resumed run's too) compiles the model and warms up
    the device: ``end_first_step`` times it apart (``first_step_s``) and leaves it out of the
    next measurement, unless that measurement is of the first step alone."""

    def __init__(self, config: TrainConfig, runtime: Runtime, step: int, devices: int = 1):
        self.tokens_per_step = config.training.batch_size * config.model.context_length
        self.flops_per_token = training_flops_per_token(config) if runtime.peak_flops else None
        self.peak_flops = runtime.peak_flops * devices if runtime.peak_flops else None
        self.first_step_s: float | None = None
        self.restart(step)

    def restart(self, step: int) -> None:
        self.since, self.since_step = time.perf_counter(), step

    def end_first_step(self, step: int) -> None:
        now = time.perf_counter()
        self.first_step_s, self.since, self.since_step = now - self.since, now, step

    def measure(self, step: int) -> tuple[float, float | None]:
        steps, seconds = step - self.since_step, time.perf_counter() - self.since
        if steps == 0:  # a row of the first step alone
            steps, seconds = 1, self.first_step_s
        tokens_per_s = steps * self.tokens_per_step / seconds
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
    once, unless it comes within ``REPEAT_S`` of the first: under ``--nproc`` or torchrun, Ctrl-C
    reaches each worker from the terminal and again from the launcher, which forwards it. Signal
    handlers can only be set from the main thread; elsewhere the signals keep their default
    behaviour.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    REPEAT_S = 1.0  # a second signal sooner than this is the same request (a launcher forwarding Ctrl-C)

    def __init__(self):
        self.requested = False
        self.requested_at = 0.0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested and time.monotonic() - self.requested_at > self.REPEAT_S:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self.requested_at = True, time.monotonic()

    def __exit__(self, *exc) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
