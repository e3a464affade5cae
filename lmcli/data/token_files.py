"""Token-id files: the ``.npy`` arrays ``lmcli encode`` writes, opened as memory maps.

``lmcli encode`` writes a corpus as one flat ``.npy`` array of token ids (uint16 or uint32).
``open_token_ids`` opens it with ``np.load(mmap_mode="r")``: the operating system pages in only
the parts that are read, so a corpus larger than RAM works as well as a small one and nothing
is ever copied whole. Anything else (a missing file, a text file, a pickle, an array of floats
or of another shape) is a one-line error naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmcli.errors import LmcliError

NPY_MAGIC = b"\x93NUMPY"  # the first bytes of every .npy file


def is_npy(path: Path) -> bool:
    """Whether the file at ``path`` starts as every .npy file does."""
    with open(path, "rb") as f:
        return f.read(len(NPY_MAGIC)) == NPY_MAGIC


def open_token_ids(path: Path, what: str = "token ids", min_length: int = 0) -> np.ndarray:
    """Memory-map a 1-D integer ``.npy`` of token ids with at least ``min_length`` of them."""
    if not path.is_file():
        kind = "is a directory, not a .npy file" if path.is_dir() else "does not exist (write it with `lmcli encode`)"
        raise LmcliError(f"{what} file {path} {kind}")
    if not is_npy(path):
        raise LmcliError(f"{what} file {path} is not a .npy file (a text file? `lmcli encode` turns text into ids)")
    try:
        ids = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as e:  # numpy's header parser fails in many ways on a damaged header or a cut-off array
        raise LmcliError(f"{what} file {path} is a damaged .npy file ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        raise LmcliError(f"{what} file {path} holds a {ids.dtype} array of shape {ids.shape}, not 1-D token ids")
    if len(ids) == 0 and min_length:
        raise LmcliError(f"{what} file {path} is empty")
    if len(ids) < min_length:
        raise LmcliError(
            f"{what} file {path} has {len(ids):,} tokens, fewer than the {min_length:,} one context window needs "
            "(lower model.context_length or use more data)"
        )
    return ids
