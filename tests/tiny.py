"""A tiny model and workspace that real training runs in tests can afford: a byte-level tokenizer
(+ <|endoftext|>), random token ids, and a config of a one-layer model of width 32."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmcli.tokenizer.files import save_tokenizer

EOT = "<|endoftext|>"
TINY_MODEL = """
[model]
vocab_size = 257
context_length = 16
d_model = 32
num_layers = 1
num_heads = 2
d_ff = 64
"""


def tiny_config(steps: int, eval_interval: int, log_interval: int) -> str:
    """The tiny model trained ``steps`` steps of 4 sequences, evaluated and checkpointed every ``eval_interval``."""
    return TINY_MODEL + f"""
[optimizer]
lr = 1e-3
min_lr = 0.0
warmup_steps = 0
grad_clip = 0.0

[training]
batch_size = 4
max_steps = {steps}
log_interval = {log_interval}
eval_interval = {eval_interval}
eval_batches = 2
checkpoint_interval = {eval_interval}
final_eval_tokens = 256

[system]
device = "cpu"
"""


def tiny_workspace(root: Path, steps: int = 6, eval_interval: int = 3, log_interval: int = 2) -> tuple[Path, Path]:
    """``root/workspace`` (tokenizer, data/train.npy and data/valid.npy of random ids) and ``root/tiny.toml``."""
    ws = root / "workspace"
    save_tokenizer(ws / "tokenizer", {i: bytes([i]) for i in range(256)} | {256: EOT.encode()}, [], [EOT])
    rng = np.random.default_rng(0)
    (ws / "data").mkdir()
    for split, n in (("train", 4000), ("valid", 600)):
        np.save(ws / "data" / f"{split}.npy", rng.integers(0, 257, n).astype(np.uint16))
    config = root / "tiny.toml"
    config.write_text(tiny_config(steps, eval_interval, log_interval))
    return ws, config
