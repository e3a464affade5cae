"""A from-scratch Transformer language model (CS336 assignment 1 interface) and its config."""

from __future__ import annotations

import importlib

from lmcli.model.config import ModelConfig

_EXPORTS = {
    **dict.fromkeys(["Linear", "Embedding", "RMSNorm", "silu", "softmax", "SwiGLU", "SiLUFeedForward"], "lmcli.model.layers"),
    **dict.fromkeys(
        ["RotaryPositionalEmbedding", "scaled_dot_product_attention", "MultiHeadSelfAttention"], "lmcli.model.attention"
    ),
    **dict.fromkeys(["TransformerBlock", "TransformerLM"], "lmcli.model.transformer"),
}
__all__ = ["ModelConfig", *_EXPORTS]


def __getattr__(name: str):
    # Lazy so that reading a config (accounting, --help) does not import torch.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmcli.model' has no attribute {name!r}")
