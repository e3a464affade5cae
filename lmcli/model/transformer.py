"""The decoder-only Transformer language model (GPT-2 shape, LLaMA details).

token ids -> embedding -> num_layers × block -> final RMSNorm -> lm_head -> logits over the vocabulary.

A pre-norm block is  x = x + attn(ln1(x));  x = x + ffn(ln2(x)):  the residual stream itself is
never normalized, which keeps gradients well-behaved in deep stacks. The CS336 ablations are
switches of ``ModelConfig``:
- ``norm="post"``: x = ln1(x + attn(x)); x = ln2(x + ffn(x)) (the original Transformer);
  ``ln_final`` stays, as part of the output head.
- ``norm="none"``: no RMSNorm anywhere (ln1, ln2 and ln_final are absent from the state dict).
- ``position="none"``: NoPE, no position information but the causal mask.
- ``ffn="silu"``: W2 SiLU(W1 x) instead of SwiGLU (no w3 weights).
- ``tie_embeddings``: lm_head.weight IS token_embeddings.weight (one Parameter). The state dict
  lists it under both keys, as PyTorch does for shared parameters, so a tied checkpoint carries
  both (identical) entries and loads strictly. The shared matrix starts from the Linear init
  (σ² = 2/(vocab+d_model)): the embedding's N(0, 1) would make the initial logits ~√d_model large.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from lmcli.errors import LmcliError
from lmcli.model.attention import MultiHeadSelfAttention
from lmcli.model.config import ModelConfig
from lmcli.model.layers import Embedding, Linear, RMSNorm, SiLUFeedForward, SwiGLU

if TYPE_CHECKING:
    from lmcli.model.kv_cache import KVCache, LayerCache


class TransformerBlock(nn.Module):
    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, max_seq_len: int, theta: float | None,
        norm: str = "pre", ffn: str = "swiglu", device=None, dtype=None,
    ):
        super().__init__()
        self.norm = norm
        self.ln1 = None if norm == "none" else RMSNorm(d_model, device=device, dtype=dtype)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, max_seq_len, theta, device=device, dtype=dtype)
        self.ln2 = None if norm == "none" else RMSNorm(d_model, device=device, dtype=dtype)
        feed_forward = SwiGLU if ffn == "swiglu" else SiLUFeedForward
        self.ffn = feed_forward(d_model, d_ff, device=device, dtype=dtype)

    def forward(
        self, x: torch.Tensor, token_positions: torch.Tensor | None = None, kv_cache: LayerCache | None = None
    ) -> torch.Tensor:
        if self.norm == "pre":
            x = x + self.attn(self.ln1(x), token_positions, kv_cache)
            return x + self.ffn(self.ln2(x))
        if self.norm == "post":
            x = self.ln1(x + self.attn(x, token_positions, kv_cache))
            return self.ln2(x + self.ffn(x))
        x = x + self.attn(x, token_positions, kv_cache)
        return x + self.ffn(x)


class TransformerLM(nn.Module):
    def __init__(
        self, vocab_size: int, context_length: int, d_model: int, num_layers: int, num_heads: int, d_ff: int,
        rope_theta: float, norm: str = "pre", position: str = "rope", ffn: str = "swiglu",
        tie_embeddings: bool = False, device=None, dtype=None,
    ):
        super().__init__()
        self.config = ModelConfig(
            vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta, norm, position, ffn,
            tie_embeddings,
        )
        self.config.validate()
        theta = rope_theta if position == "rope" else None
        self.token_embeddings = Embedding(vocab_size, d_model, device=device, dtype=dtype)
        self.layers = nn.ModuleList(
            TransformerBlock(d_model, num_heads, d_ff, context_length, theta, norm, ffn, device=device, dtype=dtype)
            for _ in range(num_layers)
        )
        self.ln_final = None if norm == "none" else RMSNorm(d_model, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, vocab_size, device=device, dtype=dtype)
        if tie_embeddings:
            self.token_embeddings.weight = self.lm_head.weight

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def forward(self, token_ids: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """(..., seq) integer ids -> (..., seq, vocab_size) next-token logits, seq <= context_length.

        With ``kv_cache`` (batch, seq) are the tokens that follow the cached ones: they are placed
        at the next positions, attend over the cached keys/values too, and are cached in turn."""
        cached = 0 if kv_cache is None else kv_cache.length
        if cached + token_ids.shape[-1] > self.context_length:
            raise LmcliError(
                f"input has {cached + token_ids.shape[-1]} tokens but the model's context_length is {self.context_length}"
            )
        x = self.token_embeddings(token_ids)
        if kv_cache is None:
            for layer in self.layers:
                x = layer(x)
        else:
            positions = kv_cache.positions(token_ids.shape[-1])
            for layer, layer_cache in zip(self.layers, kv_cache.layers):
                x = layer(x, positions, layer_cache)
            kv_cache.advance(token_ids.shape[-1])
        if self.ln_final is not None:
            x = self.ln_final(x)
        return self.lm_head(x)
