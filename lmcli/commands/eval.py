"""``lmcli eval``: the loss, perplexity and bits per byte of a checkpoint over a token file, as a table or JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from lmcli.experiments.evaluate import evaluate_checkpoint
from lmcli.json_output import dumps
from lmcli.ui.console import console
from lmcli.ui.progress import Bars
from lmcli.workspace import Workspace


def run(
    checkpoint: str | None, data: Path | None, batch_size: int, max_tokens: int, device: str, workspace: Path | None,
    as_json: bool,
) -> dict[str, Any]:
    with Bars() as bars:
        result = evaluate_checkpoint(checkpoint, data, batch_size, max_tokens, device, Workspace.resolve(workspace), bars)
    print_result(result, as_json)
    return result


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(result))
        return
    table = Table(title="evaluation", show_header=False, title_justify="left")
    table.add_row("checkpoint", f"{result['checkpoint']} (step {result['step']:,})")
    table.add_row("data", result["data"] if isinstance(result["data"], str) else ", ".join(result["data"]))
    table.add_row("tokens", f"{result['tokens']:,} in windows of {result['context_length']}")
    table.add_row("loss", f"{result['loss']:.4f}")
    table.add_row("perplexity", f"{result['perplexity']:.2f}")
    if result["bits_per_byte"] is not None:
        table.add_row("bits per byte", f"{result['bits_per_byte']:.4f}")
    table.add_row("time", f"{result['seconds']:.1f} s on {result['device']} ({result['tokens_per_s']:,.0f} tokens/s)")
    console.print(table)
