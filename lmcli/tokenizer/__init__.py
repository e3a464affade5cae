"""Byte-level BPE: training (``train_bpe``) and encoding/decoding (``Tokenizer``), GPT-2 compatible."""

from __future__ import annotations

import importlib

_EXPORTS = {"train_bpe": "lmcli.tokenizer.train", "Tokenizer": "lmcli.tokenizer.tokenizer"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    # Lazy so that `import lmcli.tokenizer.files` does not pay for the trainer or the encoder.
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lmcli.tokenizer' has no attribute {name!r}")
