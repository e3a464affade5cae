"""The decoder-only Transformer language model (GPT-2 shape, LLaMA details).

token ids -> embedding -> num_layers × block -> final RMSNorm -> lm_head -> logits over the vocabulary.

Everything is built from one ``ModelConfig`` (``TransformerLM.from_config``; the CS336 flat
constructor fills one in). ``config.kernels`` picks how attention, RoPE and RMSNorm compute: the plain
code of ``lmcli.model.attention`` ("reference") or the equal kernels of ``lmcli.model.kernels``.

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

``activation_checkpointing`` (set by training, ``training.activation_checkpointing``) keeps only
each block's input for the backward pass and recomputes the block's activations there: about
one more forward pass of compute for activation memory of one block instead of all of them.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from lmcli.errors import LmcliError
from lmcli.model.attention import MultiHeadSelfAttention
from lmcli.model.config import ModelConfig
from lmcli.model.kernels import rms_norm_layer
from lmcli.model.layers import Embedding, Linear, ReLU2FeedForward, SiLUFeedForward, SwiGLU
from lmcli.model.loss import loss_and_z_term, soft_capped

if TYPE_CHECKING:
    from lmcli.model.kv_cache import KVCache, LayerCache


class TransformerBlock(nn.Module):
    def __init__(
        self, d_model: int, num_heads: int, d_ff: int, max_seq_len: int, theta: float | None,
        norm: str = "pre", ffn: str = "swiglu", device=None, dtype=None, kernels: str = "fast", qk_norm: bool = False,
        num_kv_heads: int | None = None,
    ):
        super().__init__()
        self.norm = norm
        rms_norm = rms_norm_layer(kernels)
        self.attn = MultiHeadSelfAttention(d_model, num_heads, max_seq_len, theta, device=device, dtype=dtype, kernels=kernels,
                                           qk_norm=qk_norm, num_kv_heads=num_kv_heads)
        self.ln1 = None if norm == "none" else rms_norm(d_model, device=device, dtype=dtype)
        self.ln2 = None if norm == "none" else rms_norm(d_model, device=device, dtype=dtype)
        feed_forward = {"swiglu": SwiGLU, "silu": SiLUFeedForward, "relu2": ReLU2FeedForward}[ffn]
        self.ffn = feed_forward(d_model, d_ff, device=device, dtype=dtype)

    @classmethod
    def from_config(cls, config: ModelConfig, device=None, dtype=None) -> TransformerBlock:
        theta = config.rope_theta if config.position == "rope" else None
        return cls(
            config.d_model, config.num_heads, config.d_ff, config.context_length, theta, config.norm, config.ffn,
            device=device, dtype=dtype, kernels=config.kernels, qk_norm=config.qk_norm, num_kv_heads=config.kv_heads,
        )

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
        rope_theta: float, device=None, dtype=None, **switches,
    ):
        """The CS336 constructor; ``switches`` are the other fields of ``ModelConfig`` (norm, position,
        ffn, tie_embeddings, kernels, num_kv_heads, ...). ``TransformerLM.from_config(config)`` is the same from a config."""
        super().__init__()
        self.config = config = ModelConfig(
            vocab_size=vocab_size, context_length=context_length, d_model=d_model, num_layers=num_layers,
            num_heads=num_heads, d_ff=d_ff, rope_theta=rope_theta, **switches,
        )
        config.validate()
        self.kernels = config.kernels
        rows = config.padded_vocab_size  # vocab_size, or more: padding rows no id reaches
        self.token_embeddings = Embedding(rows, d_model, device=device, dtype=dtype)
        self.layers = nn.ModuleList(TransformerBlock.from_config(config, device, dtype) for _ in range(num_layers))
        self.ln_final = None if config.norm == "none" else rms_norm_layer(config.kernels)(d_model, device=device, dtype=dtype)
        self.lm_head = Linear(d_model, rows, device=device, dtype=dtype)
        if config.tie_embeddings:
            self.token_embeddings.weight = self.lm_head.weight
        self.activation_checkpointing = False

    @classmethod
    def from_config(cls, config: ModelConfig, device=None, dtype=None) -> TransformerLM:
        """The model ``config`` describes, with freshly initialized weights."""
        return cls(**dataclasses.asdict(config), device=device, dtype=dtype)

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def forward(
        self, token_ids: torch.Tensor, kv_cache: KVCache | None = None, targets: torch.Tensor | None = None,
        z_loss: float = 0.0,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(..., seq) integer ids -> (..., seq, vocab_size) next-token logits, seq <= context_length.

        With ``kv_cache`` (batch, seq) are the tokens that follow the cached ones: they are placed
        at the next positions, attend over the cached keys/values too, and are cached in turn.
        With ``targets`` (..., seq) the result is instead the mean cross-entropy of the logits
        against them (``IGNORE`` targets left out): training computes the loss inside the model,
        so that a compiled model compiles it too, and the fast kernels never hold all the logits.
        With ``z_loss`` > 0 as well, the pair (that loss + z_loss · mean log² Z, the z-loss term alone
        without gradient), Z the softmax's normalizer: what a run trains on, and what it reports apart."""
        cached = 0 if kv_cache is None else kv_cache.length
        if cached + token_ids.shape[-1] > self.context_length:
            raise LmcliError(
                f"input has {cached + token_ids.shape[-1]} tokens but the model's context_length is {self.context_length}"
            )
        if kv_cache is not None:
            logits = self.cached_logits(token_ids, kv_cache)
            kv_cache.advance(token_ids.shape[-1])
            return logits
        x = self.token_embeddings(token_ids)
        for layer in self.layers:
            recompute = self.activation_checkpointing and torch.is_grad_enabled()
            x = checkpoint(layer, x, use_reentrant=False) if recompute else layer(x)
        if self.ln_final is not None:
            x = self.ln_final(x)
        if targets is not None:
            loss, z_term = loss_and_z_term(x, self.lm_head.weight, targets, self.kernels, self.config.vocab_size,
                                           z_loss, self.config.logit_softcap)
            return (loss, z_term) if z_loss else loss
        return self.logits(x)

    def cached_logits(self, token_ids: torch.Tensor, kv_cache: KVCache) -> torch.Tensor:
        """Logits of the tokens that follow the cached ones, whose keys and values are stored, without
        counting them as cached (``forward`` does): with a static cache, a step that reads no Python
        state that changes, which generation compiles once for every token."""
        x = self.token_embeddings(token_ids)
        positions = kv_cache.positions(token_ids.shape[-1])
        for layer, layer_cache in zip(self.layers, kv_cache.layers):
            x = layer(x, positions, layer_cache)
        return self.logits(x if self.ln_final is None else self.ln_final(x))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output head: logits over the real vocabulary (the padding rows' dropped)."""
        logits = self.lm_head(x)
        if self.config.logit_softcap:
            logits = soft_capped(logits, self.config.logit_softcap)
        return logits if logits.shape[-1] == self.config.vocab_size else logits[..., : self.config.vocab_size]


def unpadded_state_dict(state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """A state dict with the vocabulary tables cut to the ``vocab_size`` real rows (for exports)."""
    tables = ("token_embeddings.weight", "lm_head.weight")
    return {k: v[: config.vocab_size] if k in tables else v for k, v in state.items()}
