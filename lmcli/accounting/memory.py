"""Peak training memory: parameters, gradients, AdamW state and activations, as a·batch + b.

The batch here is what one process runs forward at once: the micro-batch of gradient
accumulation (``training.micro_batch_size``), which is what decides memory; the global batch
of an optimizer step can be any multiple of it. Under FSDP over ``shards`` devices, each keeps
1/shards of the parameters, gradients and AdamW state (plus, transiently, one block's full
weights, not counted here).

Parameters, gradients and AdamW's two moments are kept in float32 (also under bf16 autocast,
which only lowers the activations): b = 4 · 4 bytes per parameter. Activations follow the CS336
model: per sequence of T tokens, each layer saves the outputs of
    the two RMSNorms (2·T·d), Q, K and V (3·T·d, grouped-query attention included: its keys
    and values are repeated to every head before attention), QKᵀ and its softmax (2·heads·T·T),
    the weighted sum of values (T·d), the output projection (T·d),
    W1 and SiLU (2·T·f) [SwiGLU also W3 and the gated product, 2·T·f more], W2 (T·d),
and at the end the final RMSNorm (T·d), the LM head's logits (T·V) and the cross-entropy's
softmax over them (T·V). Without RMSNorm (norm="none") the norm terms are 0.

Inference (evaluation, generation) keeps no activations for a backward: its peak is the
parameters plus the largest tensors alive at once in one forward pass (the logits and their
softmax, one layer's attention scores and probabilities, its feed-forward hidden values and
the residual stream), and for generation the KV cache (keys and values of every layer, of
the key/value heads only).
"""

from __future__ import annotations

from lmcli.accounting.costs import count_params
from lmcli.model.config import ModelConfig

WEIGHT_BYTES = 4  # float32 parameters, gradients and optimizer moments
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2}


def activation_elements(cfg: ModelConfig, seq_len: int) -> dict[str, int]:
    """Saved activation values per sequence, by component plus ``total``."""
    T, d, f = seq_len, cfg.d_model, cfg.d_ff
    norm_outputs = 0 if cfg.norm == "none" else T * d
    ffn_hidden = (4 if cfg.ffn == "swiglu" else 2) * T * f
    per_layer = {
        "norms": 2 * norm_outputs,
        "attention": 3 * T * d + 2 * cfg.num_heads * T * T + T * d + T * d,
        "feed_forward": ffn_hidden + T * d,
    }
    elements = {name: cfg.num_layers * n for name, n in per_layer.items()}
    elements["norms"] += norm_outputs
    elements["lm_head_and_loss"] = 2 * T * cfg.padded_vocab_size
    return {**elements, "total": sum(elements.values())}


def training_memory(cfg: ModelConfig, seq_len: int, batch_size: int, dtype: str, shards: int = 1) -> dict[str, int]:
    """Peak training memory in bytes of one process at (micro-)batch ``batch_size``, with its linear
    model a·batch + b; ``shards``: the devices FSDP divides the weights and optimizer state over."""
    params = -(-count_params(cfg) // shards)
    per_sequence = activation_elements(cfg, seq_len)["total"] * ACTIVATION_BYTES[dtype]
    parts = {
        "parameters": params * WEIGHT_BYTES,
        "gradients": params * WEIGHT_BYTES,
        "optimizer_state": 2 * params * WEIGHT_BYTES,
        "activations": per_sequence * batch_size,
    }
    fixed = parts["parameters"] + parts["gradients"] + parts["optimizer_state"]
    return {**parts, "peak": sum(parts.values()), "bytes_per_sequence": per_sequence, "fixed_bytes": fixed}


def max_batch_size(memory: dict[str, int], budget_bytes: int) -> int:
    """Largest batch whose peak a·batch + b fits the budget (0: not even the weights fit)."""
    return max(0, (budget_bytes - memory["fixed_bytes"]) // memory["bytes_per_sequence"])


def inference_memory(cfg: ModelConfig, seq_len: int, batch_size: int) -> int:
    """Peak bytes of a forward pass without gradients over ``batch_size`` sequences, in float32."""
    T = seq_len
    transient = 2 * T * cfg.padded_vocab_size + 2 * cfg.num_heads * T * T + 3 * T * cfg.d_ff + 2 * T * cfg.d_model
    return WEIGHT_BYTES * (count_params(cfg) + batch_size * transient)


def kv_cache_memory(cfg: ModelConfig, batch_size: int) -> int:
    """Bytes of a float32 KV cache for ``batch_size`` sequences of the full context length."""
    return WEIGHT_BYTES * 2 * cfg.num_layers * batch_size * cfg.context_length * cfg.kv_dim
