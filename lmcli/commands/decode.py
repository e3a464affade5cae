"""``lmcli decode``: print the text of a slice of an encoded dataset."""

from __future__ import annotations

import sys
from pathlib import Path

from lmcli.data.token_files import open_token_ids
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.decode_file import decode_slice
from lmcli.workspace import Workspace


def run(ids_path: Path, tokenizer_dir: Path | None, start: int, count: int | None, workspace: Path | None) -> None:
    tokenizer = Tokenizer.from_dir(tokenizer_dir or Workspace.resolve(workspace).tokenizer_dir)
    sys.stdout.write(decode_slice(tokenizer, open_token_ids(ids_path, "ids"), start, count))
    sys.stdout.flush()
