"""Held-out evaluation: the loss and perplexity of a checkpoint over a whole token file.

The file (or each shard of a run's validation data) is cut into consecutive, non-overlapping
windows of the model's context length (every token is predicted once, each with the context
that precedes it inside its window) and the mean cross-entropy of all predicted tokens is
reported, with perplexity = exp(loss). This
is the training loop's own final evaluation (``lmcli.training.evaluator.validation_loss``), so a
number from ``lmcli eval`` and a run's ``final_eval`` row are the same measurement.

Windows are batched (``batch_size``) and can be capped (``max_tokens``) for a quick estimate;
the model runs on any device, under bf16 autocast on CUDA as in training.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from lmcli.accounting.memory import inference_memory
from lmcli.data.token_shards import TokenShards, shard_paths
from lmcli.errors import LmcliError
from lmcli.memory_budget import allocation_errors, available_bytes, require_memory
from lmcli.progress import SILENT, Progress
from lmcli.tokenizer.encode_file import check_encoded_with
from lmcli.training.batch_plan import BatchPlan
from lmcli.training.checkpoint import checkpoint_tokenizer, find_checkpoint, load_model_from_checkpoint
from lmcli.training.data import scan_shards, text_bytes_per_id
from lmcli.training.device import Runtime, setup_runtime
from lmcli.training.distributed import World
from lmcli.training.evaluator import validation_loss
from lmcli.training.metrics import perplexity
from lmcli.workspace import Workspace


def evaluate_checkpoint(
    checkpoint: str | None, data: Path | None, batch_size: int, max_tokens: int, device: str, workspace: Workspace,
    progress: Progress = SILENT,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a file, run directory or run name; default the latest run's) on ``data``
    (default: the validation file of its run)."""
    if batch_size <= 0:
        raise LmcliError(f"--batch-size must be positive, got {batch_size}")
    if max_tokens < 0:
        raise LmcliError(f"--max-tokens must not be negative, got {max_tokens}")
    checkpoint_path = find_checkpoint(checkpoint, workspace)
    runtime = setup_runtime(device, compile="off", autocast="auto", peak_flops=0)
    model, model_config, saved = load_model_from_checkpoint(checkpoint_path, runtime.device)
    data_paths = evaluation_files(data, saved, workspace)
    tokenizer = saved.get("tokenizer")
    if isinstance(tokenizer, dict) and isinstance(tokenizer.get("fingerprint"), str):
        check_encoded_with(data_paths, tokenizer["fingerprint"], f"the tokenizer {checkpoint_path} was trained with "
                                                                  f"({tokenizer.get('dir')})")
    context = model_config.context_length
    if max_tokens and max_tokens < context:
        raise LmcliError(f"--max-tokens {max_tokens:,} is less than one window of the model's context ({context:,} tokens)")
    tokens = TokenShards.open(data_paths, "evaluation data", context).prefix(max_tokens, context)
    scan_shards(tokens, model_config.vocab_size)  # an id outside the vocabulary: a clear error, not a crash
    evaluated = len(tokens.sequential_positions(context)) * context
    batch_size = min(batch_size, evaluated // context)  # a larger batch than there are windows allocates for nothing
    weights, per_window = inference_memory(model_config, context, 0), inference_memory(model_config, context, 1)
    fits = max(0, available_bytes(runtime.device) - weights) // (per_window - weights)
    require_memory(inference_memory(model_config, context, batch_size), runtime.device,
                   f"evaluating {batch_size:,} windows at once", f"a --batch-size of at most {fits:,} fits")

    started = time.perf_counter()
    with allocation_errors("evaluating", "lower --batch-size"):
        validation = validation_loss(model, tokens, BatchPlan(batch_size, batch_size, World()), context, 0, runtime,  # 0: cut above
                                     progress, f"evaluating {described(data_paths)}", text_bytes(saved, runtime, workspace))
    loss = validation.loss
    seconds = time.perf_counter() - started
    return {
        "checkpoint": str(checkpoint_path),
        "step": saved.get("iteration"),
        "data": str(data_paths[0]) if len(data_paths) == 1 else [str(p) for p in data_paths],
        "tokens": evaluated,
        "context_length": context,
        "loss": loss,
        "perplexity": perplexity(loss),
        "bits_per_byte": validation.bits_per_byte,
        "device": runtime.describe(),
        "seconds": round(seconds, 3),
        "tokens_per_s": round(evaluated / seconds, 1),
    }


def text_bytes(checkpoint: dict[str, Any], runtime: Runtime, workspace: Workspace) -> torch.Tensor | None:
    """Bytes of text per id from the tokenizer the checkpoint was trained with, on the device; None where
    that tokenizer is not at hand (then no bits per byte)."""
    try:
        tokenizer_dir, same = checkpoint_tokenizer(checkpoint, None, workspace)
    except LmcliError:  # no tokenizer directory at all
        return None
    if not same:
        return None
    return torch.as_tensor(text_bytes_per_id(tokenizer_dir), device=runtime.device)


def evaluation_files(data: Path | None, checkpoint: dict[str, Any], workspace: Workspace) -> list[Path]:
    """``--data`` as given, else relative to the workspace; by default the run's own validation data
    (a file, or the shards its config names)."""
    if data is None:
        valid = checkpoint.get("config", {}).get("data", {}).get("valid")
        if not (isinstance(valid, str) or (isinstance(valid, list) and valid and all(isinstance(v, str) for v in valid))):
            raise LmcliError("the checkpoint does not name its validation data; give --data FILE.npy")
        return shard_paths(valid, workspace.path)
    data = data.expanduser()
    if data.exists() or data.is_absolute():
        return shard_paths(str(data))  # a shard directory: its shards
    for candidate in (workspace.path(data), workspace.data_dir / data):
        if candidate.exists():
            return shard_paths(str(candidate))
    return [data]  # missing everywhere: reading it reports the path as the user gave it


def described(paths: list[Path]) -> str:
    return paths[0].name if len(paths) == 1 else f"{len(paths)} files ({paths[0].name}, ...)"
