"""Every accounting number of a model under a training setup, gathered into one plain dict.

``account`` is what ``lmcli accounting --json`` prints; ``lmcli.commands.accounting`` only
formats that dict as tables and bar charts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lmcli.accounting.costs import forward_flops, param_counts
from lmcli.accounting.hardware import PEAK_FLOPS, training_time
from lmcli.accounting.memory import ACTIVATION_BYTES, max_batch_size, training_memory
from lmcli.accounting.presets import resolve_model
from lmcli.errors import LmcliError

GIB = 2**30
MAX_MEMORY_GIB = 2.0**30  # an exabyte: a budget beyond it is a typo


@dataclass(frozen=True)
class Setup:
    """The training run the memory and time estimates assume (defaults: the CS336 GPT-2 XL exercise)."""

    context_length: int | None = None  # None: the model's own
    batch_size: int = 1024
    micro_batch_size: int | None = None  # sequences per forward pass; None: batch_size
    shards: int = 1  # devices FSDP shards the weights and optimizer state over
    memory_gib: float = 80.0
    dtype: str = "fp32"
    hardware: str = "a100"
    mfu: float = 0.5
    steps: int = 400_000

    def validate(self) -> None:
        if self.context_length is not None and self.context_length < 1:
            raise LmcliError(f"--context-length must be positive, got {self.context_length}")
        for name in ("batch_size", "steps", "shards", *(("micro_batch_size",) if self.micro_batch_size is not None else ())):
            if getattr(self, name) < 1:
                raise LmcliError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.micro_batch_size is not None and self.batch_size % self.micro_batch_size:
            raise LmcliError(f"--batch-size ({self.batch_size}) must be a multiple of --micro-batch-size ({self.micro_batch_size})")
        if not 0 < self.memory_gib <= MAX_MEMORY_GIB:
            raise LmcliError(f"--memory must be positive and at most {MAX_MEMORY_GIB:,.0f} GiB, got {self.memory_gib}")
        if not 0 < self.mfu <= 1:
            raise LmcliError(f"--mfu must be in (0, 1], got {self.mfu}")
        if self.hardware not in PEAK_FLOPS:
            raise LmcliError(f"unknown --hardware {self.hardware!r}: use one of {', '.join(PEAK_FLOPS)}")
        if self.dtype not in ACTIVATION_BYTES:
            raise LmcliError(f"unknown --dtype {self.dtype!r}: use one of {', '.join(ACTIVATION_BYTES)}")


def account(spec: str, setup: Setup) -> dict:
    """Every accounting number of model ``spec`` (preset or CONFIG.toml) under ``setup``."""
    setup.validate()
    cfg = resolve_model(spec)
    if setup.context_length is not None:
        cfg = dataclasses.replace(cfg, context_length=setup.context_length)
    T, B = cfg.context_length, setup.batch_size
    micro = setup.micro_batch_size or B
    memory = training_memory(cfg, T, micro, setup.dtype, setup.shards)
    budget = int(setup.memory_gib * GIB)
    time = training_time(cfg, T, B, setup.steps, setup.hardware, setup.dtype, setup.mfu)
    return {
        "model": {"name": spec, **dataclasses.asdict(cfg)},
        "params": param_counts(cfg),
        "forward_flops": forward_flops(cfg, T),
        "memory": {
            **memory,
            "micro_batch_size": micro,
            "shards": setup.shards,
            "dtype": setup.dtype,
            "budget_bytes": budget,
            "max_micro_batch_size": max_batch_size(memory, budget),
        },
        "training": {
            "hardware": setup.hardware,
            "dtype": setup.dtype,
            "mfu": setup.mfu,
            "steps": setup.steps,
            "batch_size": B,
            "context_length": T,
            "tokens": setup.steps * B * T,
            **time,
            "days": time["seconds"] / 86_400,
        },
    }


def account_models(specs: list[str], setup: Setup) -> list[dict]:
    """``account`` for several models under one setup (``--compare``)."""
    if len(specs) < 2:
        raise LmcliError("--compare needs at least two models separated by commas")
    return [account(spec, setup) for spec in specs]
