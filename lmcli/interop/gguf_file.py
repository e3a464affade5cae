"""A checkpoint as one GGUF file for llama.cpp: the Llama architecture and GPT-2's BPE tokenizer.

GGUF holds metadata (``llama.*`` hyperparameters, ``tokenizer.ggml.*``) and the tensors under
llama.cpp's names (``token_embd``, ``blk.N.attn_q``, ..., ``output``). llama.cpp's Llama uses
the RoPE of the original paper and of CS336, rotating adjacent pairs (x[2i], x[2i+1]): so
unlike the Hugging Face export, the q/k rows keep lmcli's order (llama.cpp's own converter
undoes Hugging Face's ``rotate_half`` order to get there). The tokenizer is written as
``gpt2`` with the ``gpt-2`` pre-tokenizer (GPT-2's regex), its tokens in the byte-level
alphabet and the merges by rank; special tokens are control tokens.

The ``gguf`` package (llama.cpp's own writer) is an optional extra: ``pip install gguf``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lmcli.errors import LmcliError
from lmcli.interop.llama_config import RMS_NORM_EPS, refuse_ablations
from lmcli.interop.llama_weights import name_map
from lmcli.model.config import ModelConfig
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.files import token_to_str

LAYER_NAMES = {  # lmcli name within a block -> llama.cpp name within blk.N
    "ln1.weight": "attn_norm.weight", "attn.q_proj.weight": "attn_q.weight", "attn.k_proj.weight": "attn_k.weight",
    "attn.v_proj.weight": "attn_v.weight", "attn.output_proj.weight": "attn_output.weight", "ln2.weight": "ffn_norm.weight",
    "ffn.w1.weight": "ffn_gate.weight", "ffn.w3.weight": "ffn_up.weight", "ffn.w2.weight": "ffn_down.weight",
}
GGUF_DTYPES = {"float32": np.float32, "float16": np.float16}


def gguf_tensors(state: dict[str, torch.Tensor], cfg: ModelConfig) -> dict[str, torch.Tensor]:
    outer = {"token_embeddings.weight": "token_embd.weight", "ln_final.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    return {theirs: state[ours] for ours, theirs in name_map(cfg, outer, LAYER_NAMES, "blk.{i}.").items()}


def write_gguf(path: Path, state: dict[str, torch.Tensor], cfg: ModelConfig, tokenizer: Tokenizer, dtype: str, name: str) -> None:
    """Write the model and tokenizer as the GGUF file ``path`` (norm gains stay float32, as llama.cpp wants)."""
    try:
        import gguf  # an optional extra: only this format needs it
    except ImportError:
        raise LmcliError("--format gguf needs the gguf package: pip install gguf") from None
    if dtype not in GGUF_DTYPES:
        raise LmcliError(f"--format gguf writes float32 or float16 weights, not {dtype}")
    refuse_ablations(cfg)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(cfg.context_length)
    writer.add_embedding_length(cfg.d_model)
    writer.add_block_count(cfg.num_layers)
    writer.add_feed_forward_length(cfg.d_ff)
    writer.add_head_count(cfg.num_heads)
    writer.add_head_count_kv(cfg.kv_heads)
    writer.add_rope_dimension_count(cfg.d_model // cfg.num_heads)
    writer.add_rope_freq_base(cfg.rope_theta)
    writer.add_layer_norm_rms_eps(RMS_NORM_EPS)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "float32" else gguf.LlamaFileType.MOSTLY_F16)

    specials = set(tokenizer.special_ids.values())
    ids = range(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list([tokenizer.vocab[i].decode("utf-8") if i in specials else token_to_str(tokenizer.vocab[i]) for i in ids])
    writer.add_token_types([gguf.TokenType.CONTROL if i in specials else gguf.TokenType.NORMAL for i in ids])
    writer.add_token_merges([f"{token_to_str(a)} {token_to_str(b)}" for a, b in tokenizer.merges])
    if tokenizer.special_tokens:
        first = tokenizer.special_ids[tokenizer.special_tokens[0]]
        writer.add_bos_token_id(first)
        writer.add_eos_token_id(first)
    writer.add_add_bos_token(False)

    for tensor_name, tensor in gguf_tensors(state, cfg).items():
        keep_float32 = tensor.ndim == 1  # norm gains
        writer.add_tensor(tensor_name, tensor.detach().float().numpy().astype(np.float32 if keep_float32 else GGUF_DTYPES[dtype]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
