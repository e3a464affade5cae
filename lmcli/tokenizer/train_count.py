"""Counting the pre-tokens of a corpus file, in parallel and in bounded memory.

BPE training only needs each distinct pre-token and how often it occurs. The file is cut into
chunks at pre-token boundaries (``lmcli.tokenizer.chunks``); a pool of worker processes each
reads one chunk by its byte range, decodes it, pre-tokenizes it and sends back a Counter. The
main process adds the Counters up. Workers are handed byte ranges rather than the bytes
themselves, so however large the file, memory holds a few chunks plus one entry per distinct
pre-token.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from lmcli.tokenizer.chunks import DEFAULT_CHUNK_BYTES, chunk_ranges, read_text
from lmcli.tokenizer.pretokenize import count_pretokens, special_token_pattern


def count_file_pretokens(
    path: str | os.PathLike,
    special_tokens: list[str],
    workers: int | None = None,
    chunk_bytes: int | None = None,
    errors: str = "strict",
    on_bytes: Callable[[int], None] | None = None,
) -> Counter[bytes]:
    """How often each pre-token (as UTF-8 bytes) occurs in the file; special tokens are left out.

    ``on_bytes(n)`` is called as each chunk of n bytes is done (for a progress bar).
    """
    workers = workers or os.cpu_count() or 1
    size = Path(path).stat().st_size
    chunk_bytes = chunk_bytes or default_chunk_bytes(size, workers)
    ranges = chunk_ranges(path, special_tokens, chunk_bytes)
    jobs = [(str(path), start, end, special_tokens, errors) for start, end in ranges]
    total: Counter[str] = Counter()
    if workers == 1 or len(jobs) == 1:
        _add_up(total, map(_count_range, jobs), ranges, on_bytes)
    else:
        with _pool(min(workers, len(jobs))) as pool:
            _add_up(total, pool.imap(_count_range, jobs), ranges, on_bytes)
    return Counter({token.encode("utf-8"): n for token, n in total.items()})


def default_chunk_bytes(size: int, workers: int) -> int:
    """About four chunks per worker (to balance the load), at most DEFAULT_CHUNK_BYTES each."""
    return max(1 << 20, min(DEFAULT_CHUNK_BYTES, size // (4 * workers) + 1))


def _add_up(total: Counter, results, ranges, on_bytes) -> None:
    for (start, end), counts in zip(ranges, results):
        total.update(counts)
        if on_bytes:
            on_bytes(end - start)


def _pool(processes: int):
    # On Linux, fork starts workers at once with the modules already imported; elsewhere
    # (macOS, Windows) the platform's default start method is the safe one.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None).Pool(processes)


def _count_range(job: tuple[str, int, int, list[str], str]) -> Counter[str]:
    """Worker: the pre-token counts of one byte range of the file."""
    path, start, end, special_tokens, errors = job
    return count_pretokens(read_text(path, start, end, errors), special_token_pattern(special_tokens))
