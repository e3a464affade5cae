"""lmcli's state dict under Hugging Face Llama's names, and back.

The names map one to one (``layers.i.attn.q_proj`` -> ``model.layers.i.self_attn.q_proj``,
``ffn.w1 / w3 / w2`` -> ``mlp.gate_proj / up_proj / down_proj``, ``ln1 / ln2`` ->
``input_layernorm / post_attention_layernorm``, ...). One thing changes values' order: RoPE.
CS336's RoPE rotates adjacent pairs of a head's dimensions, (x[0], x[1]), (x[2], x[3]), ...,
while Llama's ``rotate_half`` pairs each dimension of the first half with the one half a head
later, (x[0], x[d/2]), (x[1], x[d/2+1]), ..., with the same frequency for pair i in both. So
the rows of each head of W_q and W_k are reordered, evens first then odds::

    hf_rows = [0, 2, 4, ..., d-2, 1, 3, ..., d-1]

which makes Hugging Face's pair i exactly lmcli's pair i. Queries and keys are permuted alike,
so their dot products, and the attention, are unchanged; V, the output projection and the MLP
keep their order. A tied head (``tie_embeddings``) is stored once, as ``embed_tokens``.
"""

from __future__ import annotations

import torch

from lmcli.errors import LmcliError
from lmcli.model.config import ModelConfig
from lmcli.model.transformer import TransformerLM

LAYER_NAMES = {  # lmcli name within a block -> Hugging Face name within a decoder layer
    "ln1.weight": "input_layernorm.weight",
    "attn.q_proj.weight": "self_attn.q_proj.weight",
    "attn.k_proj.weight": "self_attn.k_proj.weight",
    "attn.v_proj.weight": "self_attn.v_proj.weight",
    "attn.output_proj.weight": "self_attn.o_proj.weight",
    "ln2.weight": "post_attention_layernorm.weight",
    "ffn.w1.weight": "mlp.gate_proj.weight",
    "ffn.w3.weight": "mlp.up_proj.weight",
    "ffn.w2.weight": "mlp.down_proj.weight",
}
ROTATED = ("attn.q_proj.weight", "attn.k_proj.weight")


def name_map(cfg: ModelConfig, outer: dict[str, str], layer_names: dict[str, str], layer_prefix: str) -> dict[str, str]:
    """lmcli parameter name -> another format's name, for every tensor that format stores: ``outer`` names
    the embedding, final norm and head (the head is left out when tied to the embedding), ``layer_names``
    the tensors of block i, found under ``layer_prefix.format(i=i)``."""
    names = {ours: theirs for ours, theirs in outer.items() if not (cfg.tie_embeddings and ours == "lm_head.weight")}
    for i in range(cfg.num_layers):
        names.update({f"layers.{i}.{ours}": f"{layer_prefix.format(i=i)}{theirs}" for ours, theirs in layer_names.items()})
    return names


def hf_name_map(cfg: ModelConfig) -> dict[str, str]:
    """lmcli parameter name -> Hugging Face name, for every tensor a Llama checkpoint stores."""
    outer = {"token_embeddings.weight": "model.embed_tokens.weight", "ln_final.weight": "model.norm.weight",
             "lm_head.weight": "lm_head.weight"}
    return name_map(cfg, outer, LAYER_NAMES, "model.layers.{i}.")


def halves_order(head_dim: int) -> torch.Tensor:
    """Within a head: Hugging Face's row j is lmcli's row ``halves_order[j]`` (evens, then odds)."""
    return torch.cat([torch.arange(0, head_dim, 2), torch.arange(1, head_dim, 2)])


def reorder_heads(weight: torch.Tensor, num_heads: int, order: torch.Tensor) -> torch.Tensor:
    """The rows of each head of a [heads * head_dim, d_model] projection, taken in ``order``."""
    return weight.unflatten(0, (num_heads, -1))[:, order].flatten(0, 1).contiguous()


def rotated_heads(name: str, cfg: ModelConfig) -> int:
    """The heads whose rows RoPE rotates in tensor ``name`` (queries: all; keys: the kv heads); 0 for other tensors."""
    if not name.endswith(ROTATED):
        return 0
    return cfg.num_heads if name.endswith("q_proj.weight") else cfg.kv_heads


def to_hf(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """lmcli's state dict as a Hugging Face Llama one."""
    order = halves_order(cfg.head_dim)
    tensors = {}
    for ours, theirs in hf_name_map(cfg).items():
        weight, heads = state[ours], rotated_heads(ours, cfg)
        tensors[theirs] = reorder_heads(weight, heads, order) if heads else weight.contiguous()
    return tensors


def hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor a Hugging Face Llama of ``cfg`` stores, under its Hugging Face name."""
    with torch.device("meta"):  # lmcli's model, without allocating it
        ours = TransformerLM.from_config(cfg).state_dict()
    return {theirs: tuple(ours[name].shape) for name, theirs in hf_name_map(cfg).items()}


def from_hf(tensors: dict[str, torch.Tensor], cfg: ModelConfig, source: str) -> dict[str, torch.Tensor]:
    """A Hugging Face Llama state dict (of ``hf_shapes``) as lmcli's; LmcliError naming a missing or extra tensor."""
    names = hf_name_map(cfg)
    extra = sorted(set(tensors) - set(names.values()) - {"lm_head.weight"})  # a tied model may store the head anyway
    missing = sorted(set(names.values()) - set(tensors))
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"has {extra[0]}, which lmcli's Llama does not (a bias?)"
        raise LmcliError(f"{source} {what} ({len(missing)} missing, {len(extra)} unexpected tensors)")
    inverse = torch.argsort(halves_order(cfg.head_dim))
    state = {}
    for ours, theirs in names.items():
        weight, heads = tensors[theirs], rotated_heads(ours, cfg)
        state[ours] = reorder_heads(weight, heads, inverse) if heads else weight
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["token_embeddings.weight"]
    return state
