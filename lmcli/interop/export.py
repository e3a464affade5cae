"""``lmcli export``: a checkpoint as a Hugging Face Llama directory that transformers loads with no custom code.

The directory holds ``config.json`` (``LlamaForCausalLM``), ``generation_config.json``,
``model.safetensors`` (``llama_weights``: renamed, q/k rows reordered for ``rotate_half``) and
the tokenizer (``hf_tokenizer``). Everything is checked before anything is written (an
ablation Llama cannot express, a tokenizer that is not the one the model was trained with or
whose size differs), and the directory is written as a unit: complete, or not at all.

``--format gguf`` writes one file for llama.cpp instead (``gguf_file``), atomically too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lmcli.atomic import atomic_directory, atomic_path, check_apart
from lmcli.errors import LmcliError
from lmcli.interop.gguf_file import write_gguf
from lmcli.interop.hf_tokenizer import write_hf_tokenizer
from lmcli.interop.llama_config import llama_config
from lmcli.interop.llama_weights import to_hf
from lmcli.interop.safetensors_files import WEIGHTS_FILE, write_weights
from lmcli.model.transformer import unpadded_state_dict
from lmcli.tokenizer import Tokenizer
from lmcli.training.checkpoint import checkpoint_tokenizer, find_checkpoint, load_model_from_checkpoint
from lmcli.workspace import RUN_CONFIG_FILE, Workspace

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def export_checkpoint(
    checkpoint: str | None, out: Path, workspace: Workspace, fmt: str = "hf", dtype: str = "float32", force: bool = False,
) -> dict[str, Any]:
    """Write ``checkpoint`` (a file, run directory or run name) to ``out``; a summary of what was written."""
    if fmt not in ("hf", "gguf"):
        raise LmcliError(f"unknown --format {fmt!r}: use hf (a Hugging Face directory) or gguf (a llama.cpp file)")
    if dtype not in DTYPES:
        raise LmcliError(f"unknown --dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    if fmt == "hf" and out.exists() and not out.is_dir():
        raise LmcliError(f"--out {out} is a file; give a directory")
    if fmt == "gguf" and out.is_dir():
        raise LmcliError(f"--out {out} is a directory; give the .gguf file to write")
    if out.exists() and not force:
        raise LmcliError(f"{out} already exists (add --force to replace it)")
    path = find_checkpoint(checkpoint, workspace)
    run_dir = path.parent if (path.parent / RUN_CONFIG_FILE).is_file() else None
    check_apart(out, {"the run directory": run_dir} if run_dir else {"the checkpoint": path})
    model, cfg, saved = load_model_from_checkpoint(path)
    tokenizer_dir, same = checkpoint_tokenizer(saved, None, workspace)
    check_apart(out, {"the tokenizer directory": tokenizer_dir})
    if out.exists() and not earlier_export(out, fmt):
        what = "a GGUF file" if fmt == "gguf" else "a directory with config.json"
        raise LmcliError(f"--out {out} exists and is not an earlier export ({what}): --force replaces only those; "
                         "choose another --out")
    if not same:
        raise LmcliError(f"the tokenizer in {tokenizer_dir} is not the one {path} was trained with")
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise LmcliError(f"the tokenizer in {tokenizer_dir} has {tokenizer.vocab_size:,} tokens, the model {cfg.vocab_size:,}")
    special_id = tokenizer.special_ids.get(tokenizer.special_tokens[0]) if tokenizer.special_tokens else None
    config = llama_config(cfg, special_id, special_id, dtype)  # refuses the ablations
    if fmt == "gguf":
        with atomic_path(out) as tmp:
            write_gguf(tmp, unpadded_state_dict(model.state_dict(), cfg), cfg, tokenizer, dtype, Path(path).parent.name)
    else:
        tensors = {k: v.to(DTYPES[dtype]) for k, v in to_hf(unpadded_state_dict(model.state_dict(), cfg), cfg).items()}
        with atomic_directory(out, replace=force) as tmp:
            (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
            generation = {"bos_token_id": special_id, "eos_token_id": special_id, "_from_model_config": True}
            (tmp / "generation_config.json").write_text(json.dumps(generation, indent=2), encoding="utf-8")
            write_weights(tensors, tmp / WEIGHTS_FILE)
            write_hf_tokenizer(tmp, tokenizer.vocab, tokenizer.merges, tokenizer.special_tokens, cfg.context_length)
    return {
        "checkpoint": str(path), "out": str(out), "format": fmt, "dtype": dtype,
        "parameters": sum(p.numel() for p in model.parameters()),  # a tied head counted once, as both formats store it
        "files": [out.name] if fmt == "gguf" else sorted(p.name for p in out.iterdir()),
    }


def earlier_export(path: Path, fmt: str) -> bool:
    """Whether ``path`` is what an export to ``fmt`` writes (or an empty directory): all --force may replace."""
    if fmt == "gguf":
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    return (path / "config.json").is_file() or not any(path.iterdir())
