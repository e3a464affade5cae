"""``lmcli import``: a Hugging Face Llama directory as an lmcli run, with a summary."""

from __future__ import annotations

from pathlib import Path

from lmcli.interop.import_hf import import_hf
from lmcli.json_output import dumps
from lmcli.ui.console import console
from lmcli.workspace import Workspace


def run(src: Path, name: str | None, workspace: Path | None, as_json: bool) -> None:
    summary = import_hf(src, name, Workspace.resolve(workspace))
    if as_json:
        print(dumps(summary))
        return
    console.print(f"[bold]{summary['source']}[/] -> run [bold]{summary['run_dir']}[/]: {summary['parameters']:,} parameters, "
                  f"vocabulary {summary['vocab_size']:,}; use it with `lmcli generate --checkpoint {Path(summary['run_dir']).name}` "
                  f"or `lmcli train --init-from {Path(summary['run_dir']).name}`", highlight=False)
