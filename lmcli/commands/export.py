"""``lmcli export``: a checkpoint as a Hugging Face Llama directory, with a summary."""

from __future__ import annotations

from pathlib import Path

from lmcli.interop.export import export_checkpoint
from lmcli.json_output import dumps
from lmcli.ui.console import console
from lmcli.workspace import Workspace


def run(checkpoint: str | None, out: Path, fmt: str, dtype: str, force: bool, workspace: Path | None, as_json: bool) -> None:
    summary = export_checkpoint(checkpoint, out, Workspace.resolve(workspace), fmt.lower(), dtype.lower(), force)
    if as_json:
        print(dumps(summary))
        return
    what = "LlamaForCausalLM" if summary["format"] == "hf" else "GGUF for llama.cpp (llama)"
    console.print(f"[bold]{summary['checkpoint']}[/] -> [bold]{summary['out']}[/]: {what}, "
                  f"{summary['parameters']:,} parameters in {summary['dtype']} ({', '.join(summary['files'])})", highlight=False)
