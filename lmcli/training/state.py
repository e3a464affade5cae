"""Everything a run changes as it trains, in one object that a checkpoint saves and restores.

``TrainState`` holds the model, the optimizer, the batch sampler's generator, the number of
steps taken, the best validation loss so far and the wall time of the run's earlier sessions.
``state_dict()`` is the dict a checkpoint stores (the CS336 ``iteration`` / ``model`` /
``optimizer`` entries and the rest); ``load_state_dict`` puts a resumed run back exactly
where it was, random generators included, so it continues bit for bit. Under FSDP the state
dict gathers the sharded tensors whole (a collective: every rank calls it), so a checkpoint is
the same whatever wrote it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lmcli.errors import LmcliError
from lmcli.model.transformer import TransformerLM
from lmcli.training.checkpoint import capture_rng, load_model_state, restore_rng, uncompiled_state_dict
from lmcli.training.config import TrainConfig
from lmcli.training.muon import build_optimizer
from lmcli.training.optim import AdamW
from lmcli.training.parallelize import full_tensors


@dataclass
class TrainState:
    model: TransformerLM
    optimizer: AdamW
    batch_rng: torch.Generator  # draws the training batches
    step: int = 0  # optimizer steps taken
    best_val_loss: float = math.inf
    elapsed_before: float = 0.0  # seconds of the run's earlier sessions (before a resume)
    started: float = field(default_factory=time.perf_counter)  # when this session started

    @classmethod
    def create(cls, config: TrainConfig, device: torch.device) -> TrainState:
        """A fresh run: the model initialized, the optimizer and the batch sampler seeded from ``training.seed``."""
        o, seed = config.optimizer, config.training.seed
        torch.manual_seed(seed)
        model = TransformerLM.from_config(config.model, device=device, dtype=torch.float32)
        return cls(model, build_optimizer(model, o, device), torch.Generator().manual_seed(seed))

    @property
    def elapsed_s(self) -> float:
        """Wall time of the whole run so far, over all its sessions."""
        return self.elapsed_before + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        return {
            **self.weights_dict(),
            "optimizer": full_tensors(self.optimizer.state_dict()),
            "rng": capture_rng(self.batch_rng),
        }

    def weights_dict(self) -> dict[str, Any]:
        """What using the model needs (generate, eval, export), without what resuming needs."""
        return {
            "iteration": self.step,
            "model": full_tensors(uncompiled_state_dict(self.model)),
            "best_val_loss": self.best_val_loss,
            "elapsed_s": self.elapsed_s,
        }

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        """Restore everything from a checkpoint dict (read with ``RESUMABLE`` entries); LmcliError if its
        content does not fit this run (a damaged or foreign file)."""
        try:
            load_model_state(self.model, checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            restore_rng(checkpoint["rng"], self.batch_rng)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as e:
            reason = " ".join(str(e).split())  # one line: torch's state-dict errors span several
            raise LmcliError(f"the checkpoint is damaged: it cannot be restored ({type(e).__name__}: {reason})") from None
        self.step, self.best_val_loss = checkpoint["iteration"], float(checkpoint["best_val_loss"])
        self.elapsed_before, self.started = float(checkpoint["elapsed_s"]), time.perf_counter()
