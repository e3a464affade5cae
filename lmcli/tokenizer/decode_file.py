"""Decoding a slice of a ``.npy`` of token ids back to text, to inspect an encoded dataset.

The array is memory-mapped, so looking at a few tokens of a multi-GB dataset reads only them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from lmcli.errors import LmcliError
from lmcli.tokenizer.tokenizer import Tokenizer


def load_ids(ids_path: Path) -> np.ndarray:
    """A memory-mapped 1-D integer array of token ids, with clear errors for anything else."""
    if not ids_path.is_file():
        raise LmcliError(f"ids file {ids_path} does not exist")
    try:
        ids = np.load(ids_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise LmcliError(f"{ids_path} is not a .npy array of token ids ({e})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise LmcliError(f"{ids_path} holds a {ids.dtype} array of shape {ids.shape}, not a 1-D array of token ids")
    return ids


def decode_slice(tokenizer: Tokenizer, ids: np.ndarray, start: int = 0, count: int | None = None) -> str:
    """Text of ``ids[start:start + count]`` (all the rest when count is None)."""
    if start < 0 or start > len(ids):
        raise LmcliError(f"--start {start} is outside the array (it holds {len(ids):,} ids)")
    if count is not None and count < 0:
        raise LmcliError(f"--count must not be negative (got {count})")
    window = np.asarray(ids[start : None if count is None else start + count])
    if len(window):
        unknown = window[~np.isin(window, np.fromiter(tokenizer.vocab, dtype=np.int64))]
        if len(unknown):
            raise LmcliError(
                f"id {int(unknown[0]):,} is out of range of the tokenizer's vocabulary (ids 0..{tokenizer.max_id:,}): "
                "was this file encoded with another tokenizer?"
            )
    return tokenizer.decode(window.tolist())


def decode_command(ids_path: Path, tokenizer_dir: Path | None, start: int, count: int | None, workspace: Path | None) -> None:
    """``lmcli decode``: print the text of a slice of an ids file to stdout."""
    from lmcli.workspace import Workspace

    tokenizer = Tokenizer.from_dir(tokenizer_dir or Workspace.resolve(workspace).tokenizer_dir)
    sys.stdout.write(decode_slice(tokenizer, load_ids(ids_path), start, count))
    sys.stdout.flush()
