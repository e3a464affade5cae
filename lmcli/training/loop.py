"""The training loop, readable top to bottom (in the spirit of nanoGPT's train.py).

Each step: set the learning rate from the schedule, draw a random batch of windows, run the
model (under bf16 autocast on GPUs) and the cross-entropy, backpropagate, clip the global
gradient norm, take an AdamW step. Around that:

- every ``log_interval`` steps a metrics row (loss, grad norm, lr, tokens/s, MFU); the loss
  is only read back from the device then, so a GPU is not stalled every step;
- every ``eval_interval`` steps the loss on a fixed set of validation batches, and
  ``best.pt`` when it is the lowest so far; at the end the loss on the whole validation file;
- every ``checkpoint_interval`` steps ``latest.pt`` (and a kept copy every ``keep_interval``);
- a NaN or infinite loss stops the run with the last good checkpoint untouched;
- Ctrl-C finishes the current step, saves ``latest.pt`` and stops (a second Ctrl-C stops at
  once); ``lmcli train --resume`` continues bit for bit where the checkpoint left off,
  because the checkpoint holds the batch sampler's random state along with the weights.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmcli.console import count_progress
from lmcli.errors import LmcliError
from lmcli.training.checkpoint import BEST, LATEST, capture_rng, load_model_state, restore_rng, save_checkpoint
from lmcli.training.clip import clip_grad_norm
from lmcli.training.config import TrainConfig
from lmcli.training.data import TrainingData, get_batch, sequential_batches
from lmcli.training.device import Runtime
from lmcli.training.loss import cross_entropy
from lmcli.training.metrics import LivePanel, RunLog, perplexity
from lmcli.training.optim import AdamW, decay_groups
from lmcli.training.schedule import cosine_lr


def train(
    config: TrainConfig,
    data: TrainingData,
    run_dir: Path,
    runtime: Runtime,
    log: RunLog,
    resume: dict[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Train from scratch, or from the ``resume`` checkpoint dict, to ``config.max_steps``; returns a summary."""
    t, o = config.training, config.optimizer
    batch_size, context = t.batch_size, config.model.context_length
    max_steps, tokens_per_step = config.max_steps, batch_size * context

    # The model, the optimizer and the batch sampler's generator: fresh from the seed, or as checkpointed.
    torch.manual_seed(t.seed)
    model = config.model.build(device=runtime.device, dtype=torch.float32)
    optimizer = AdamW(decay_groups(model, o.weight_decay, list(o.no_decay)), lr=o.lr, betas=o.betas, eps=o.eps)
    batch_rng = torch.Generator().manual_seed(t.seed)
    start_step, best_val_loss, elapsed_before = 0, math.inf, 0.0
    if resume is not None:
        load_model_state(model, resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        restore_rng(resume["rng"], batch_rng)
        start_step, best_val_loss, elapsed_before = resume["iteration"], resume["best_val_loss"], resume["elapsed_s"]
    fast_model = runtime.compile_model(model)
    eval_batches = fixed_batches(data.valid, batch_size, context, runtime.device, t.eval_batches, t.seed + 1)
    train_flops_per_token = training_flops_per_token(config) if runtime.peak_flops else None
    parameters = count_parameters(model)

    started = time.perf_counter()
    saved_step = start_step if resume is not None else None

    def save(name: str, step: int) -> None:
        save_checkpoint(model, optimizer, step, run_dir / name, extra={
            "config": config.to_dict(),
            "model_config": dataclasses.asdict(config.model),
            "rng": capture_rng(batch_rng),
            "tokenizer": {"dir": str(data.tokenizer_dir.resolve()), "fingerprint": data.tokenizer_fingerprint},
            "best_val_loss": best_val_loss,
            "elapsed_s": elapsed_before + time.perf_counter() - started,
        })

    log.note(
        f"training {parameters:,} parameters on {runtime.describe()} for {max_steps:,} steps "
        f"of {tokens_per_step:,} tokens" + (f", resuming at step {start_step:,}" if start_step else "")
    )
    log.note(f"unigram entropy of the training ids: {data.train_stats.unigram_entropy():.3f} nats (the loss to beat)")

    interval_start, interval_step = time.perf_counter(), start_step
    loss_value = math.nan
    with StopRequest() as stop, LivePanel(max_steps, quiet) as panel:
        panel.update(step=start_step, best_val_loss=_finite_or_none(best_val_loss))
        for step in range(start_step + 1, max_steps + 1):
            lr = cosine_lr(step, o.lr, o.min_lr, o.warmup_steps, config.cosine_steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(data.train, batch_size, context, runtime.device, batch_rng)
            with runtime.autocast_context():
                loss = cross_entropy(fast_model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = clip_grad_norm(model.parameters(), o.grad_clip or math.inf)
            optimizer.step()

            if on_step is not None:
                try:
                    on_step(step)
                except KeyboardInterrupt:
                    stop.requested = True
            evaluating = step % t.eval_interval == 0 or step == max_steps
            saving = step % t.checkpoint_interval == 0 or step == max_steps or stop.requested
            panel.update(step=step)
            if not (step % t.log_interval == 0 or evaluating or saving):
                continue

            # Reading the loss synchronises with the device: only done on these steps.
            loss_value, norm_value = loss.item(), grad_norm.item()
            if not (math.isfinite(loss_value) and math.isfinite(norm_value)):
                log.row("diverged", step=step, loss=loss_value, grad_norm=norm_value)  # the run's status, for `lmcli runs`
                last = f"{run_dir / LATEST} (step {saved_step:,}) is kept" if saved_step is not None else "no checkpoint was written"
                raise LmcliError(
                    f"training diverged at step {step:,}: loss {loss_value}, gradient norm {norm_value}; {last}. "
                    "Lower optimizer.lr or enable optimizer.grad_clip"
                )
            now = time.perf_counter()
            tokens_per_s = (step - interval_step) * tokens_per_step / (now - interval_start)
            mfu = tokens_per_s * train_flops_per_token / runtime.peak_flops if train_flops_per_token else None
            elapsed = elapsed_before + now - started
            log.row(
                "train", step=step, tokens=step * tokens_per_step, elapsed_s=round(elapsed, 3), lr=lr,
                loss=loss_value, grad_norm=norm_value, tokens_per_s=round(tokens_per_s, 1), mfu=mfu,
            )
            eta = (max_steps - step) * (now - interval_start) / (step - interval_step)
            panel.update(loss=loss_value, grad_norm=norm_value, lr=lr, tokens_per_s=tokens_per_s, mfu=mfu,
                         elapsed=elapsed, eta=eta)

            if evaluating:
                val_loss = evaluate(fast_model, eval_batches, runtime)
                log.row("eval", step=step, tokens=step * tokens_per_step, val_loss=val_loss, val_perplexity=perplexity(val_loss))
                log.note(f"step {step:,}: train loss {loss_value:.4f}, val loss {val_loss:.4f}, lr {lr:.2e}, "
                         f"{tokens_per_s:,.0f} tokens/s")
                if val_loss < best_val_loss:
                    best_val_loss = val_loss
                    save(BEST, step)
                panel.update(val_loss=val_loss, best_val_loss=best_val_loss)
            if saving:
                save(LATEST, step)
                saved_step = step
                if t.keep_interval and step % t.keep_interval == 0:
                    save(f"step-{step:06d}.pt", step)
            if stop.requested:
                log.row("interrupted", step=step)
                log.note(f"interrupted: checkpoint of step {step:,} saved; continue with `lmcli train --resume {run_dir}`")
                raise KeyboardInterrupt
            interval_start, interval_step = time.perf_counter(), step

    final_val_loss = final_validation(fast_model, data.valid, batch_size, context, t.final_eval_tokens, runtime, quiet)
    log.row("final_eval", step=max_steps, tokens=max_steps * tokens_per_step, val_loss=final_val_loss,
            val_perplexity=perplexity(final_val_loss))
    return {
        "run_dir": str(run_dir),
        "steps": max_steps,
        "tokens": max_steps * tokens_per_step,
        "parameters": parameters,
        "device": runtime.describe(),
        "elapsed_s": round(elapsed_before + time.perf_counter() - started, 1),
        "train_loss": loss_value,
        "best_val_loss": best_val_loss,
        "final_val_loss": final_val_loss,
        "final_val_perplexity": perplexity(final_val_loss),
        "unigram_entropy": data.train_stats.unigram_entropy(),
        "checkpoint": str(run_dir / LATEST),
        "best_checkpoint": str(run_dir / BEST),
    }


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], runtime: Runtime) -> float:
    """Mean cross-entropy over every predicted token of ``batches``."""
    total, count = torch.zeros((), device=runtime.device), 0
    for x, y in batches:
        with runtime.autocast_context():
            total += cross_entropy(model(x), y) * y.numel()
        count += y.numel()
    return (total / count).item()


def fixed_batches(
    x: np.ndarray, batch_size: int, context: int, device: torch.device, n_batches: int, seed: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same random validation batches at every evaluation, so losses are comparable."""
    generator = torch.Generator().manual_seed(seed)
    return [get_batch(x, batch_size, context, device, generator) for _ in range(n_batches)]


def final_validation(
    model: torch.nn.Module, valid: np.ndarray, batch_size: int, context: int, max_tokens: int, runtime: Runtime,
    quiet: bool, description: str = "final validation",
) -> float:
    """Loss over the whole validation file (or its first ``max_tokens``), in consecutive windows."""
    if max_tokens:
        valid = valid[: max_tokens + 1]
    n_batches = math.ceil((len(valid) - 1) // context / batch_size)
    with count_progress(quiet) as progress:
        batches = progress.track(sequential_batches(valid, batch_size, context, runtime.device), total=n_batches,
                                 description=description)
        return evaluate(model, batches, runtime)


def training_flops_per_token(config: TrainConfig) -> float:
    """Matmul FLOPs of a training step per token: forward + backward ~ 3 x forward."""
    from lmcli.accounting import forward_flops

    context = config.model.context_length
    return 3 * forward_flops(config.model, context)["total"] / context


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class StopRequest:
    """Turns the first Ctrl-C into a request to stop after the current step (``requested``).

    The loop then checkpoints a consistent state; a second Ctrl-C raises KeyboardInterrupt
    at once. Signal handlers can only be set from the main thread; elsewhere Ctrl-C keeps its
    default behaviour.
    """

    def __init__(self):
        self.requested = False
        self.previous = None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
