"""Decoding a slice of an array of token ids back to text, to inspect an encoded dataset.

The array is usually a memory map (``lmcli.data.token_files``), so looking at a few tokens of a
multi-GB dataset reads only them.
"""

from __future__ import annotations

import numpy as np

from lmcli.errors import LmcliError
from lmcli.tokenizer.tokenizer import Tokenizer


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
