"""``lmcli eval``: the loss and perplexity of a checkpoint over a whole token file.

The file is cut into consecutive, non-overlapping windows of the model's context length
(every token is predicted once, each with the context that precedes it inside its window) and
the mean cross-entropy of all predicted tokens is reported, with perplexity = exp(loss). This
is the training loop's own final evaluation (``lmcli.training.loop.final_validation``), so a
number from ``lmcli eval`` and a run's ``final_eval`` row are the same measurement.

Windows are batched (``--batch-size``) and can be capped (``--max-tokens``) for a quick
estimate; the model runs on any device, under bf16 autocast on CUDA as in training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.table import Table

from lmcli.console import console
from lmcli.errors import LmcliError
from lmcli.experiments.runs import finite_or_none
from lmcli.workspace import Workspace


def eval_command(
    checkpoint: str | None, data: Path | None, batch_size: int, max_tokens: int, device: str, workspace: Path | None,
    as_json: bool,
) -> dict[str, Any]:
    """Evaluate ``checkpoint`` (a file, run directory or run name; default the latest run's) on ``data`` (default: the validation file of its run); print and return the result."""
    from lmcli.training.checkpoint import find_checkpoint, load_model_from_checkpoint
    from lmcli.training.data import open_tokens, scan_tokens
    from lmcli.training.device import setup_runtime
    from lmcli.training.loop import final_validation
    from lmcli.training.metrics import perplexity

    if batch_size <= 0:
        raise LmcliError(f"--batch-size must be positive, got {batch_size}")
    if max_tokens < 0:
        raise LmcliError(f"--max-tokens must not be negative, got {max_tokens}")
    workspace = Workspace.resolve(workspace)
    checkpoint = find_checkpoint(checkpoint, workspace)
    runtime = setup_runtime(device, compile="off", autocast="auto", peak_flops=0)
    model, model_config, saved = load_model_from_checkpoint(checkpoint, runtime.device)
    data_path = evaluation_file(data, saved, workspace)
    context = model_config.context_length
    tokens = open_tokens(data_path, "evaluation data", context + 1)
    if max_tokens:
        tokens = tokens[: max_tokens + 1]
    scan_tokens(tokens, data_path, model_config.vocab_size)  # an id outside the vocabulary: a clear error, not a crash
    evaluated = (len(tokens) - 1) // context * context

    started = time.perf_counter()
    loss = final_validation(model, tokens, batch_size, context, 0, runtime, quiet=False,
                            description=f"evaluating {data_path.name}")
    seconds = time.perf_counter() - started
    result = {
        "checkpoint": str(checkpoint),
        "step": saved.get("iteration"),
        "data": str(data_path),
        "tokens": evaluated,
        "context_length": context,
        "loss": loss,
        "perplexity": perplexity(loss),
        "device": runtime.describe(),
        "seconds": round(seconds, 3),
        "tokens_per_s": round(evaluated / seconds, 1),
    }
    print_result(result, as_json)
    return result


def evaluation_file(data: Path | None, checkpoint: dict[str, Any], workspace: Workspace) -> Path:
    """``--data`` as given, else relative to the workspace; by default the run's own validation file."""
    if data is None:
        valid = checkpoint.get("config", {}).get("data", {}).get("valid")
        if valid is None:
            raise LmcliError("the checkpoint does not name its validation data; give --data FILE.npy")
        return workspace.path(valid)
    data = data.expanduser()
    if data.exists() or data.is_absolute():
        return data
    for candidate in (workspace.path(data), workspace.data_dir / data):
        if candidate.exists():
            return candidate
    return data  # missing everywhere: reading it reports the path as the user gave it


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps({k: (finite_or_none(v) if isinstance(v, float) else v) for k, v in result.items()}))
        return
    table = Table(title="evaluation", show_header=False, title_justify="left")
    table.add_row("checkpoint", f"{result['checkpoint']} (step {result['step']:,})")
    table.add_row("data", result["data"])
    table.add_row("tokens", f"{result['tokens']:,} in windows of {result['context_length']}")
    table.add_row("loss", f"{result['loss']:.4f}")
    table.add_row("perplexity", f"{result['perplexity']:.2f}")
    table.add_row("time", f"{result['seconds']:.1f} s on {result['device']} ({result['tokens_per_s']:,.0f} tokens/s)")
    console.print(table)
