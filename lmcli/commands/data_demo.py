"""``lmcli data demo``: write the embedded demo corpus (if it is not up to date) and list its splits."""

from __future__ import annotations

from pathlib import Path

from lmcli.data.demo import GENERATOR_VERSION, SEED, STORIES, ensure_demo_corpus
from lmcli.json_output import dumps
from lmcli.ui.console import console
from lmcli.workspace import Workspace


def run(workspace: Path | None, as_json: bool) -> None:
    paths = ensure_demo_corpus(Workspace.resolve(workspace))
    splits = {
        split: {"path": str(path), "bytes": path.stat().st_size, "stories": STORIES[split]} for split, path in paths.items()
    }
    if as_json:
        print(dumps({"seed": SEED, "generator_version": GENERATOR_VERSION, "splits": splits}))
        return
    for split, info in splits.items():
        console.print(f"{split:5}  {info['stories']:>5,} stories  {info['bytes'] / 1e6:5.2f} MB  {info['path']}", highlight=False)
