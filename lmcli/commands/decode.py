"""``lmcli decode``: print the text of a slice of an encoded dataset."""

from __future__ import annotations

import sys
from pathlib import Path

from lmcli.data.token_files import open_token_ids
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.decode_file import decode_slice
from lmcli.tokenizer.encode_file import check_encoded_with, encoded_with
from lmcli.tokenizer.files import tokenizer_fingerprint
from lmcli.workspace import Workspace


def run(ids_path: Path, tokenizer_dir: Path | None, start: int, count: int | None, workspace: Path | None) -> None:
    ids = open_token_ids(ids_path, "ids")
    tokenizer_dir = tokenizer_dir or writer_of(ids_path) or Workspace.resolve(workspace).tokenizer_dir
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    check_encoded_with([ids_path], tokenizer_fingerprint(tokenizer_dir), f"the tokenizer in {tokenizer_dir}",
                       "decode it with that one (--tokenizer DIR)")
    sys.stdout.write(decode_slice(tokenizer, ids, start, count))
    sys.stdout.flush()


def writer_of(ids_path: Path) -> Path | None:
    """The tokenizer directory that encoded ``ids_path``, when recorded and still there."""
    record = encoded_with(ids_path)
    return Path(record[0]) if record is not None and Path(record[0]).is_dir() else None
