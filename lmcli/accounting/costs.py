"""Parameter counts and forward-pass FLOPs of a Transformer LM, by component.

FLOPs count only the matrix multiplies (2·m·n·k for an (m×k)·(k×n) product): they are >99% of
the work at any realistic size, and they are what ``FlopCounterMode`` counts. Per layer, for T
tokens, d = d_model, f = d_ff, V = vocab_size, and d_kv = kv_heads · head_dim the width of the
keys and values (d, or less with grouped-query attention):

    Q, K, V projections   2·T·d·(d + 2·d_kv)   QKᵀ (all heads)       2·T·T·d
    output projection     2·T·d·d              attention · values     2·T·T·d
    feed-forward          3 · 2·T·d·f (SwiGLU: w1, w3, w2; the SiLU ablation has 2 matmuls)
and once at the end the LM head, 2·T·d·V. RoPE, norms and the softmax are elementwise (not
counted), and NoPE changes nothing. The backward pass costs twice the forward (a gradient for
the input and one for the weight of every matmul).
"""

from __future__ import annotations

from lmcli.errors import LmcliError
from lmcli.model.config import ModelConfig

# AdamW per parameter and step: m ← β₁m + (1−β₁)g (3), v ← β₂v + (1−β₂)g² (4),
# p ← p − α·m/(√v + ε) (5), decoupled weight decay p ← p − αλp (2). Bias corrections are per step, not per parameter.
ADAMW_FLOPS_PER_PARAM = 14


def feed_forward_matrices(cfg: ModelConfig) -> int:
    return 3 if cfg.ffn == "swiglu" else 2


def param_counts(cfg: ModelConfig) -> dict[str, int]:
    """Parameters by component plus ``total``; a tied LM head shares the embedding and adds 0."""
    cfg.validate()
    d, layers = cfg.d_model, cfg.num_layers
    counts = {
        "token_embeddings": cfg.padded_vocab_size * d,
        "attention": layers * (2 * d * d + 2 * d * cfg.kv_dim),
        "feed_forward": layers * feed_forward_matrices(cfg) * d * cfg.d_ff,
        "norms": (0 if cfg.norm == "none" else (2 * layers + 1) * d) + (2 * layers * cfg.head_dim if cfg.qk_norm else 0),
        "lm_head": 0 if cfg.tie_embeddings else cfg.padded_vocab_size * d,
    }
    return {**counts, "total": sum(counts.values())}


def count_params(cfg: ModelConfig) -> int:
    """Number of (unique) trainable parameters of the model ``cfg`` builds."""
    return param_counts(cfg)["total"]


def forward_flops(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    """Matmul FLOPs of one forward pass over one sequence of ``seq_len`` tokens, by component plus ``total``."""
    cfg.validate()
    if not 1 <= seq_len <= cfg.context_length:
        raise LmcliError(f"sequence length must be between 1 and context_length={cfg.context_length}, got {seq_len}")
    T, d, layers = seq_len, cfg.d_model, cfg.num_layers
    flops = {
        "qkv_projections": layers * 2 * T * d * (d + 2 * cfg.kv_dim),
        "attention_scores": layers * 2 * T * T * d,
        "attention_values": layers * 2 * T * T * d,
        "output_projection": layers * 2 * T * d * d,
        "feed_forward": layers * feed_forward_matrices(cfg) * 2 * T * d * cfg.d_ff,
        "lm_head": 2 * T * d * cfg.padded_vocab_size,
    }
    return {**flops, "total": sum(flops.values())}


def adamw_flops(cfg: ModelConfig) -> int:
    """FLOPs of one AdamW step over all parameters."""
    return ADAMW_FLOPS_PER_PARAM * count_params(cfg)
