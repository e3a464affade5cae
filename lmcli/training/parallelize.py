"""Data parallelism: the same model on every rank, each computing the gradient of its part of the batch.

``training.parallel`` chooses how the ranks share the work (with one process, neither applies):

- ``ddp`` (``DistributedDataParallel``): every rank holds the whole model and optimizer; after
  the backward pass of a step's last micro-batch the gradients are averaged over the ranks
  (an all-reduce), so every rank takes the same optimizer step. The other micro-batches run
  under ``no_sync``: averaging after each of them would be the same result for N times the
  communication.
- ``fsdp`` (FSDP2, ``fully_shard``): each rank keeps only a 1/N slice of every parameter, its
  gradient and its AdamW moments (DTensors); a block's full weights are gathered just before
  its forward and backward and freed after, and gradients are reduce-scattered to their
  slices. Memory per device falls by about N for the weights, gradients and optimizer state,
  for models that do not fit one device. The from-scratch AdamW and clipping run on the
  slices (``lmcli.training.clip`` sums the squared norms of all slices). Under bf16 the
  weights are gathered in bf16 (half the traffic) and the gradients reduced in float32
  (``MixedPrecisionPolicy``); with compilation on, each block is compiled in place before it
  is sharded, as torchtitan does, so the compiled code and FSDP's hooks between blocks compose.

Both average the gradients over the ranks; each micro-batch's loss is divided by the number of
micro-batches a rank runs per step, so the step's gradient is that of the mean loss over the
whole global batch, whatever the number of processes.

Checkpoints stay those of one process: ``full_tensors`` gathers the slices (every rank takes
part, rank 0 writes), under the model's own CS336 parameter names. A checkpoint is loaded into
the whole model before it is sharded, and ``shard_optimizer`` slices the optimizer state.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.distributed.tensor import DTensor, distribute_tensor

from lmcli.training.checkpoint import map_tensors
from lmcli.training.device import Runtime
from lmcli.training.distributed import World
from lmcli.training.optim import AdamW


def parallel_mode(requested: str, world: World) -> str:
    """``none`` for one process; otherwise the configured mode (``auto`` = ``ddp``)."""
    if world.size == 1:
        return "none"
    return "ddp" if requested == "auto" else requested


class DataParallel:
    """The model as the training step runs it, and the gradient synchronisation of that mode."""

    def __init__(self, model: torch.nn.Module, mode: str, runtime: Runtime):
        self.module, self.mode, device = model, mode, runtime.device
        if mode == "fsdp":
            from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # loaded only for FSDP runs: a heavy import

            policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if runtime.autocast else MixedPrecisionPolicy()
            for block in model.layers:  # one all-gather per block: only one block's full weights alive at once
                runtime.compile_in_place(block)
                fully_shard(block, mp_policy=policy)
            fully_shard(model, mp_policy=policy)
            self.evaluated = model
        else:
            self.evaluated = runtime.compile_model(model)  # what evaluation runs (no gradient: no DDP needed)
        self.trained = self.evaluated
        if mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel  # loaded only for DDP runs

            # no buffer sync before each forward: the only buffers are RoPE tables, equal on every rank
            self.trained = DistributedDataParallel(self.evaluated, device_ids=[device] if device.type == "cuda" else None,
                                                   forward_sync_buffers=False)

    def sync_gradients(self, sync: bool) -> contextlib.AbstractContextManager:
        """Around one micro-batch's forward and backward: whether its backward averages the gradients."""
        if self.mode == "ddp" and not sync:
            return self.trained.no_sync()
        if self.mode == "fsdp":
            self.module.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()


def shard_optimizer(optimizer: AdamW, groups: list[dict]) -> AdamW:
    """A new optimizer of ``optimizer``'s kind over ``groups`` (the sharded model's parameter groups, in
    the same order), holding ``optimizer``'s state sliced like each parameter."""
    saved = optimizer.state_dict()
    # its own hyperparameters only: after load_state_dict, torch adds keys of its own to ``defaults``
    sharded = type(optimizer)(groups, **optimizer.hyperparameters())
    params = [p for g in sharded.param_groups for p in g["params"]]
    for index, entry in saved["state"].items():
        p = params[index]
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and isinstance(p, DTensor) and value.shape == p.shape:
                entry[key] = distribute_tensor(value.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
    sharded.load_state_dict(saved)
    return sharded


def full_tensors(tree: Any) -> Any:
    """``tree`` (a state dict) with every sharded tensor gathered whole; every rank must call it."""
    return map_tensors(tree, lambda t: t.full_tensor() if isinstance(t, DTensor) else t)
