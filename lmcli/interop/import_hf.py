"""``lmcli import``: a Hugging Face Llama directory on disk as an lmcli run (checkpoint and tokenizer).

The run directory ``runs/<name>/`` holds ``latest.pt`` (the weights at step 0, with the model
config and the tokenizer's fingerprint), ``config.toml``, ``tokenizer/`` and a ``metrics.jsonl``
whose one ``imported`` row names the source: what ``generate``,
``eval`` and ``train --init-from`` need. Everything is read and checked first (a Llama lmcli can
represent, complete weights of the right shapes, a byte-level BPE tokenizer of the model's
vocabulary size), then the run directory is written as a unit. Nothing is downloaded: a hub
name is an error that says how to fetch it.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from lmcli.accounting.costs import count_params
from lmcli.atomic import atomic_directory
from lmcli.errors import LmcliError
from lmcli.interop.hf_tokenizer import read_hf_tokenizer
from lmcli.interop.llama_config import model_config
from lmcli.interop.llama_weights import from_hf, hf_shapes
from lmcli.interop.safetensors_files import check_weights, read_weights
from lmcli.memory_budget import require_memory
from lmcli.model.transformer import TransformerLM
from lmcli.readers import read_json
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.files import save_tokenizer, tokenizer_fingerprint
from lmcli.training.checkpoint import LATEST, load_weights, write_checkpoint
from lmcli.training.config import DataConfig, TrainConfig
from lmcli.workspace import RUN_CONFIG_FILE, RUN_METRICS_FILE, Workspace


def import_hf(src: Path, name: str | None, workspace: Workspace) -> dict[str, Any]:
    """Write the Hugging Face model in ``src`` as the run ``name`` (default: the directory's name)."""
    if not src.is_dir():
        if src.exists():
            raise LmcliError(f"{src} is a file; give the directory that holds config.json and the safetensors")
        hint = " (a hub name? download it first, e.g. `huggingface-cli download NAME --local-dir DIR`)" if "/" in str(src) else ""
        raise LmcliError(f"no directory {src}{hint}; lmcli never downloads models")
    config_path = src / "config.json"
    if not config_path.is_file():
        raise LmcliError(f"{src} has no config.json: not a Hugging Face model directory")
    raw = read_json(config_path, "model config")
    cfg = model_config(raw if isinstance(raw, dict) else {}, str(config_path))
    parameters = count_params(cfg)
    rope_tables = 2 * cfg.context_length * (cfg.d_model // cfg.num_heads) * 4  # cos and sin, built at the model's context length
    require_memory(2 * 4 * parameters + rope_tables, torch.device("cpu"),
                   f"importing this model ({parameters:,} parameters, context {cfg.context_length:,})",
                   "lmcli imports into float32 on the CPU")  # the read tensors and the model, in float32
    tensors, origin = read_weights(src)
    check_weights(tensors, hf_shapes(cfg), origin)
    state = {k: v.to(torch.float32) for k, v in from_hf(tensors, cfg, str(src)).items()}
    model = TransformerLM.from_config(cfg)
    load_weights(model, state, f"{src}: the weights do not fit its config.json")
    vocab, merges, specials = read_hf_tokenizer(src)
    tokenizer = Tokenizer(vocab, merges, specials)
    if tokenizer.vocab_size != cfg.vocab_size:
        raise LmcliError(f"{src}: the tokenizer has {tokenizer.vocab_size:,} tokens but the model's vocab_size is "
                         f"{cfg.vocab_size:,}; lmcli needs them equal")
    run_dir = workspace.run_dir(name or src.resolve().name)
    if run_dir.exists():
        raise LmcliError(f"run directory {run_dir} already exists (choose another --name)")
    tokenizer_dir = run_dir / "tokenizer"
    config = TrainConfig(model=cfg, data=dataclasses.replace(DataConfig(), tokenizer=str(tokenizer_dir.resolve())))
    with atomic_directory(run_dir) as tmp:
        save_tokenizer(tmp / "tokenizer", tokenizer.vocab, tokenizer.merges, tokenizer.special_tokens, {"imported_from": str(src)})
        recorded = {"dir": str(tokenizer_dir.resolve()), "fingerprint": tokenizer_fingerprint(tmp / "tokenizer")}
        write_checkpoint({"iteration": 0, "model": model.state_dict(), "config": config.to_dict(),
                          "model_config": dataclasses.asdict(cfg), "tokenizer": recorded, "imported_from": str(src)},
                         tmp / LATEST)
        (tmp / RUN_CONFIG_FILE).write_text(config.to_toml(), encoding="utf-8")
        row = {"kind": "imported", "step": 0, "source": str(src)}  # `lmcli runs` shows it as imported, not resumable
        (tmp / RUN_METRICS_FILE).write_text(json.dumps(row) + "\n", encoding="utf-8")
    return {"source": str(src), "run_dir": str(run_dir), "checkpoint": str(run_dir / LATEST),
            "parameters": sum(p.numel() for p in model.parameters()), "vocab_size": cfg.vocab_size,
            "special_tokens": tokenizer.special_tokens}
