"""``lmcli data download``: fetch a preset corpus or a hub dataset's files, with progress bars and a summary."""

from __future__ import annotations

from pathlib import Path

from rich.filesize import decimal
from rich.table import Table

from lmcli.data.download import default_folder, download_dataset
from lmcli.json_output import dumps
from lmcli.ui.console import console
from lmcli.ui.progress import Bars
from lmcli.workspace import Workspace


def run(name: str, include: list[str] | None, out_dir: Path | None, cache: bool, workspace: Path | None, as_json: bool) -> None:
    """Download ``name`` into ``out_dir`` (default: the workspace's data directory, or a folder in it)."""
    out_dir = out_dir or Workspace.resolve(workspace).data_dir / default_folder(name)
    with Bars() as bars:
        summary = download_dataset(name, out_dir, include, cache, bars)
    if as_json:
        print(dumps(summary))
        return
    table = Table(title=f"{summary['dataset']} from {summary['source']}", title_justify="left")
    for column in ("file", "size", "status", "path"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for row in summary["files"]:
        table.add_row(row["file"], decimal(row["bytes"]), row["status"], row["path"])
    console.print(table)
    if len(summary["files"]) > 1:
        console.print(f"{len(summary['files'])} files, {decimal(summary['bytes'])}")
