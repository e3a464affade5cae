"""The shape of a Transformer LM as one frozen dataclass, read from the ``[model]`` table of a TOML config.

The defaults are the CS336 TinyStories model (17M non-embedding parameters). Beyond the
CS336 ablations, the switches of the modern recipe: ``num_kv_heads`` (grouped-query attention:
fewer key/value heads than query heads, each shared by a group of them, so the KV cache and the
key/value projections shrink by num_heads / num_kv_heads), ``qk_norm`` (RMSNorm on each head's
queries and keys: attention logits stay bounded at high learning rates), ``logit_softcap``
(c·tanh(z/c) on the output logits) and ``ffn = "relu2"`` (squared ReLU, modded-nanogpt's). ``vocab_multiple``
pads the embedding and output tables to a multiple of it (50,257 ids become 50,304 rows: bf16
matrix products on GPUs run much faster on aligned shapes); the padded ids are never inputs,
their logits are dropped before the softmax, so padding changes no loss and no sample, and
exports carry the ``vocab_size`` real rows only. 0 (the default) lets training choose: 64 on
CUDA, 1 (no padding) elsewhere. The string switches
select the ablations the assignment runs: post-norm or no RMSNorm at all, no position embedding
(NoPE), a plain SiLU feed-forward instead of SwiGLU, and tying the LM head to the token embedding.

``kernels`` changes how the model computes, never what: ``"reference"`` runs attention, RoPE
and the loss as the plain tensor code of ``lmcli.model.attention`` and ``lmcli.model.loss``
(what to read, and what to compare against), ``"fast"`` (the default) runs the hand-written
autograd functions of ``lmcli.model.kernels`` that equal it, and ``"torch"`` runs attention and
the loss as PyTorch's fused kernels (``lmcli.model.torch_kernels``; not from scratch, for GPU
speed). Checkpoints of any load in all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from lmcli.config_values import dataclass_from_table
from lmcli.errors import LmcliError

NORMS = ("pre", "post", "none")
POSITIONS = ("rope", "none")
FFNS = ("swiglu", "silu", "relu2")
KERNELS = ("fast", "reference", "torch")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 10_000
    context_length: int = 256
    d_model: int = 512
    num_layers: int = 4
    num_heads: int = 16
    num_kv_heads: int = 0  # key/value heads; 0: num_heads (multi-head), fewer: grouped-query attention
    d_ff: int = 1_344
    rope_theta: float = 10_000.0
    norm: str = "pre"  # "pre" | "post" | "none"   (ablations: post-norm, no RMSNorm)
    position: str = "rope"  # "rope" | "none"      (NoPE ablation)
    ffn: str = "swiglu"  # "swiglu" | "silu" | "relu2"  (SiLU ablation: W2·SiLU(W1 x), no w3; relu2: W2·ReLU(W1 x)²)
    tie_embeddings: bool = False  # lm_head shares token_embeddings.weight
    qk_norm: bool = False  # RMSNorm (one gain of head_dim each) on every head's queries and keys, before RoPE
    logit_softcap: float = 0.0  # c > 0: logits c·tanh(z/c), never beyond ±c; 0 = off
    kernels: str = "fast"  # "fast" | "reference" | "torch"  (how attention, RoPE and the loss are computed)
    vocab_multiple: int = 0  # tables padded to a multiple of this; 0: training picks (64 on CUDA, else 1)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.num_heads

    @property
    def kv_heads(self) -> int:
        """Heads of keys and values: each serves num_heads / kv_heads consecutive query heads."""
        return self.num_kv_heads or self.num_heads

    @property
    def kv_dim(self) -> int:
        """Width of the key (and of the value) projection: kv_heads · head_dim."""
        return self.kv_heads * self.head_dim

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and output tables: vocab_size rounded up to a multiple of vocab_multiple."""
        multiple = max(1, self.vocab_multiple)
        return -(-self.vocab_size // multiple) * multiple

    def validate(self) -> None:
        """Raise LmcliError naming the first field that cannot build a model."""
        for name in ("vocab_size", "context_length", "d_model", "num_layers", "num_heads", "d_ff"):
            if getattr(self, name) <= 0:
                raise LmcliError(f"model.{name} must be positive, got {getattr(self, name)}")
        if not (0 <= self.logit_softcap < float("inf")):
            raise LmcliError(f"model.logit_softcap must be 0 (off) or a positive number, got {self.logit_softcap}")
        if not 0 <= self.vocab_multiple <= 4096:
            raise LmcliError(f"model.vocab_multiple must be between 0 and 4,096, got {self.vocab_multiple}")
        if self.d_model % self.num_heads:
            raise LmcliError(f"model.num_heads ({self.num_heads}) must divide model.d_model ({self.d_model})")
        if self.num_kv_heads < 0 or self.num_heads % self.kv_heads:
            raise LmcliError(f"model.num_kv_heads ({self.num_kv_heads}) must divide model.num_heads ({self.num_heads}); 0 means as many")
        for name, allowed in (("norm", NORMS), ("position", POSITIONS), ("ffn", FFNS), ("kernels", KERNELS)):
            if getattr(self, name) not in allowed:
                raise LmcliError(f"model.{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.position == "rope":
            if self.rope_theta <= 0:
                raise LmcliError(f"model.rope_theta must be positive, got {self.rope_theta}")
            if self.head_dim % 2:
                raise LmcliError(f"RoPE rotates pairs: the head dimension d_model/num_heads = {self.head_dim} must be even")

    def same_architecture(self, other: ModelConfig) -> bool:
        """Whether both configs build the same model (weights of one load into the other)."""
        same_tables = self.padded_vocab_size == other.padded_vocab_size and self.kv_heads == other.kv_heads
        unchanged = dict(kernels=other.kernels, vocab_multiple=other.vocab_multiple, num_kv_heads=other.num_kv_heads)
        return same_tables and dataclasses.replace(self, **unchanged) == other

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """A config from a ``[model]`` table: unknown keys and wrong types are errors, missing keys take defaults."""
        config = dataclass_from_table(cls, "model", d)
        config.validate()
        return config
