"""Training a Transformer LM from scratch (CS336 assignment 1 interface).

The pieces, one file each: ``cross_entropy`` (``lmcli.model.loss``: the model computes it), ``AdamW`` (optim), ``cosine_lr``
(schedule), ``clip_grad_norm`` (clip), ``get_batch`` (data), ``save_checkpoint`` /
``load_checkpoint`` / ``load_model_from_checkpoint`` (checkpoint); the config (config), the
device settings (device); and, split by role as torchtitan does, the run's state (state),
when to save (checkpointer), when and what to evaluate (evaluator), what it records
(metrics, observers), the loop itself (loop) and a whole run directory (run).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AdamW": "lmcli.training.optim",
    "TrainConfig": "lmcli.training.config",
    "clip_grad_norm": "lmcli.training.clip",
    "cosine_lr": "lmcli.training.schedule",
    "cross_entropy": "lmcli.model.loss",
    "get_batch": "lmcli.training.data",
    "load_checkpoint": "lmcli.training.checkpoint",
    "load_config": "lmcli.training.config",
    "load_model_from_checkpoint": "lmcli.training.checkpoint",
    "save_checkpoint": "lmcli.training.checkpoint",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # Lazy so that reading a config (`import lmcli.training.config`, accounting) does not import torch.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmcli.training' has no attribute {name!r}")
