"""Training a Transformer LM from scratch (CS336 assignment 1 interface).

The pieces, one file each: ``cross_entropy`` (loss), ``AdamW`` (optim), ``cosine_lr``
(schedule), ``clip_grad_norm`` (clip), ``get_batch`` (data), ``save_checkpoint`` /
``load_checkpoint`` / ``load_model_from_checkpoint`` (checkpoint); the config (config), the
device settings (device), the loop (loop), its records (metrics) and ``lmcli train`` (run).
"""

from lmcli.training.checkpoint import load_checkpoint, load_model_from_checkpoint, save_checkpoint
from lmcli.training.clip import clip_grad_norm
from lmcli.training.config import TrainConfig, load_config
from lmcli.training.data import get_batch
from lmcli.training.loss import cross_entropy
from lmcli.training.optim import AdamW
from lmcli.training.schedule import cosine_lr

__all__ = [
    "AdamW",
    "TrainConfig",
    "clip_grad_norm",
    "cosine_lr",
    "cross_entropy",
    "get_batch",
    "load_checkpoint",
    "load_config",
    "load_model_from_checkpoint",
    "save_checkpoint",
]
