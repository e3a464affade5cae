"""lmcli's ``ModelConfig`` as a Hugging Face ``LlamaConfig`` (``config.json``), and back.

The fields map one to one: ``d_model`` -> ``hidden_size``, ``d_ff`` -> ``intermediate_size``,
``num_layers`` -> ``num_hidden_layers``, ``num_heads`` -> ``num_attention_heads``, the
key/value heads (``num_kv_heads``, or as many as heads) -> ``num_key_value_heads``, ``context_length`` ->
``max_position_embeddings``, ``rope_theta``, ``tie_embeddings`` -> ``tie_word_embeddings``;
SiLU gating, RMSNorm with lmcli's epsilon, no biases.

What Llama cannot express is refused by name rather than exported wrong: the CS336 ablations
(post-norm, no RMSNorm, NoPE, the SiLU feed-forward). Coming in, so is what lmcli's model
cannot represent: biases, RoPE scaling, another activation or head size.
"""

from __future__ import annotations

from typing import Any

from lmcli.errors import LmcliError
from lmcli.model.config import ModelConfig

RMS_NORM_EPS = 1e-5  # lmcli.model.layers.RMSNorm's epsilon


def llama_config(cfg: ModelConfig, bos_id: int | None, eos_id: int | None, dtype: str) -> dict[str, Any]:
    """The ``config.json`` of ``LlamaForCausalLM`` for a model of ``cfg``."""
    refuse_ablations(cfg)
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.d_ff,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.d_model // cfg.num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.context_length,
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": cfg.rope_theta,  # transformers 4.x reads this, 5.x rope_parameters
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "tie_word_embeddings": cfg.tie_embeddings,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
        "torch_dtype": dtype,
        "dtype": dtype,
    }


def refuse_ablations(cfg: ModelConfig) -> None:
    for setting, value, llama in (("model.norm", cfg.norm, "pre"), ("model.position", cfg.position, "rope"),
                                  ("model.ffn", cfg.ffn, "swiglu"), ("model.qk_norm", cfg.qk_norm, False),
                                  ("model.logit_softcap", cfg.logit_softcap, 0.0)):
        if value != llama:
            raise LmcliError(f"{setting} = {value!r} has no Llama equivalent (Llama is {setting} = {llama!r}): "
                             "this model cannot be exported")


HF_FIELDS = {  # ModelConfig field -> LlamaConfig key
    "vocab_size": "vocab_size", "context_length": "max_position_embeddings", "d_model": "hidden_size",
    "num_layers": "num_hidden_layers", "num_heads": "num_attention_heads", "d_ff": "intermediate_size",
}


def model_config(config: dict[str, Any], source: str) -> ModelConfig:
    """The ``ModelConfig`` of a Hugging Face Llama ``config.json``; LmcliError for what lmcli cannot represent."""
    if config.get("model_type") != "llama":
        raise LmcliError(f"{source} is a {config.get('model_type')!r} model, not a Llama (model_type 'llama')")
    missing = [theirs for theirs in HF_FIELDS.values() if theirs not in config]
    if missing:
        raise LmcliError(f"{source} lacks {', '.join(missing)}")
    rope = config.get("rope_parameters") if isinstance(config.get("rope_parameters"), dict) else {}
    table = {ours: config[theirs] for ours, theirs in HF_FIELDS.items()}
    kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    table.update(rope_theta=rope.get("rope_theta", config.get("rope_theta", 10_000.0)),
                 tie_embeddings=config.get("tie_word_embeddings", False),
                 num_kv_heads=0 if kv_heads == config["num_attention_heads"] else kv_heads)
    try:
        cfg = ModelConfig.from_dict(table)  # types, sizes and finiteness checked as for a [model] table
    except LmcliError as e:
        message = str(e)
        for ours, theirs in {**HF_FIELDS, "rope_theta": "rope_theta", "tie_embeddings": "tie_word_embeddings",
                             "num_kv_heads": "num_key_value_heads"}.items():
            message = message.replace(f"model.{ours}", theirs)
        raise LmcliError(f"{source}: {message}") from None
    heads, head_dim = cfg.num_heads, cfg.d_model // cfg.num_heads
    scaling = config.get("rope_scaling")
    eps = config.get("rms_norm_eps", RMS_NORM_EPS)
    problems = {
        "attention biases (attention_bias)": config.get("attention_bias", False),
        "MLP biases (mlp_bias)": config.get("mlp_bias", False),
        f"head_dim {config.get('head_dim')} (lmcli's is hidden_size / heads = {head_dim})": config.get("head_dim", head_dim) != head_dim,
        f"the activation {config.get('hidden_act')!r} (lmcli's SwiGLU uses silu)": config.get("hidden_act", "silu") != "silu",
        f"RoPE scaling {scaling or rope.get('rope_type')!r}": bool(scaling) or rope.get("rope_type", "default") != "default",
        f"rms_norm_eps {eps} (lmcli's RMSNorm uses {RMS_NORM_EPS})":
            not (isinstance(eps, (int, float)) and abs(eps - RMS_NORM_EPS) <= 1e-12),
    }
    unsupported = [what for what, present in problems.items() if present]
    if unsupported:
        raise LmcliError(f"{source}: lmcli's model cannot represent {', '.join(unsupported)}")
    return cfg
