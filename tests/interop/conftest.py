"""What the interop tests share: model shapes, a text, trained tokenizers, lmcli checkpoints with random weights."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
import torch

from lmcli.model import ModelConfig, TransformerLM
from lmcli.tokenizer.files import save_tokenizer, tokenizer_fingerprint
from lmcli.tokenizer.reference import train_bpe
from lmcli.training.checkpoint import write_checkpoint

SPECIAL = "<|endoftext|>"
WORDS = ["the", "cat", "sat", "on", "a", "mat", "Tom", "dog", "ran", "to", "park", "with", "ball", "und", "über", "naïve", "日本"]
SHAPES = [  # vocab, context, d_model, heads, layers, theta, tied; the first with grouped-query attention
    dict(vocab_size=300, context_length=32, d_model=64, num_heads=4, num_layers=2, d_ff=128, rope_theta=10_000.0, num_kv_heads=2),
    dict(vocab_size=310, context_length=48, d_model=96, num_heads=3, num_layers=1, d_ff=160, rope_theta=500_000.0),
    dict(vocab_size=300, context_length=16, d_model=32, num_heads=2, num_layers=3, d_ff=64, rope_theta=10_000.0, tie_embeddings=True),
]


def sample_text(n_words: int = 3000, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + ("." if rng.random() < 0.1 else "") for _ in range(n_words)) + f"{SPECIAL}done"


@pytest.fixture(scope="module")
def tokenizers_by_size(tmp_path_factory) -> dict[int, Path]:
    """A trained byte-level BPE tokenizer directory for each vocabulary size of SHAPES."""
    root = tmp_path_factory.mktemp("tokenizers")
    dirs = {}
    for size in {s["vocab_size"] for s in SHAPES}:
        vocab, merges = train_bpe(sample_text(), size, [SPECIAL])
        save_tokenizer(root / str(size), vocab, merges, [SPECIAL])
        dirs[size] = root / str(size)
    return dirs


def lmcli_checkpoint(path: Path, cfg: ModelConfig, tokenizer_dir: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model = TransformerLM.from_config(cfg)
    with torch.no_grad():  # norm gains away from 1, so a wrong norm mapping would show
        for name, p in model.named_parameters():
            if name.endswith("ln1.weight") or name.endswith("ln2.weight") or name.startswith("ln_final"):
                p.uniform_(0.5, 1.5)
    write_checkpoint({"iteration": 0, "model": model.state_dict(), "model_config": dataclasses.asdict(cfg),
                      "tokenizer": {"dir": str(tokenizer_dir), "fingerprint": tokenizer_fingerprint(tokenizer_dir)}}, path)
    return path


