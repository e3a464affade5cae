"""Counting the pre-tokens of a corpus file, in parallel and in bounded memory.

BPE training only needs each distinct pre-token and how often it occurs. The file is cut into
chunks at pre-token boundaries (``lmcli.tokenizer.chunks``); each chunk is read by its byte
range, decoded, pre-tokenized and counted. With K workers the main process counts chunks too,
beside a pool of K - 1 processes: the pool takes chunks from the front of the list, the main
process from the back, so the load balances without an idle coordinator (and one process less
holds memory). Workers are handed byte ranges rather than the bytes themselves and at most two
chunks per worker are in flight, so however large the file, memory holds a few chunks plus one
entry per distinct pre-token.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter, deque
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
    workers = workers or available_cores()
    size = Path(path).stat().st_size
    chunk_bytes = chunk_bytes or default_chunk_bytes(size, workers)
    ranges = chunk_ranges(path, special_tokens, chunk_bytes)
    jobs = [(str(path), start, end, special_tokens, errors) for start, end in ranges]
    total: Counter[bytes] = Counter()

    def add(job, counts: dict[bytes, int]) -> None:
        total.update(counts)
        if on_bytes:
            on_bytes(job[2] - job[1])

    if workers == 1 or len(jobs) == 1:
        for job in jobs:
            add(job, _count_range(job))
    else:
        _count_in_parallel(jobs, min(workers, len(jobs)), add)
    return total


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. in containers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_chunk_bytes(size: int, workers: int) -> int:
    """About eight chunks per worker (to balance the load), 1 MB to DEFAULT_CHUNK_BYTES each."""
    return max(1 << 20, min(DEFAULT_CHUNK_BYTES, size // (8 * workers) + 1))


def _count_in_parallel(jobs: list, processes: int, add: Callable) -> None:
    """Count the jobs in this process and a pool of ``processes - 1``, handing each result to add."""
    todo = deque(jobs)
    in_flight: deque = deque()
    with _pool(processes - 1) as pool:
        while todo or in_flight:
            while todo and len(in_flight) < 2 * (processes - 1):
                job = todo.popleft()
                in_flight.append((job, pool.apply_async(_count_range, (job,))))
            while in_flight and in_flight[0][1].ready():
                job, result = in_flight.popleft()
                add(job, result.get())
            if todo:
                job = todo.pop()
                add(job, _count_range(job))
            elif in_flight:
                job, result = in_flight.popleft()
                add(job, result.get())


def _pool(processes: int):
    # On Linux, fork starts workers at once with the modules already imported; elsewhere
    # (macOS, Windows) the platform's default start method is the safe one.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None).Pool(processes)


def _count_range(job: tuple[str, int, int, list[str], str]) -> dict[bytes, int]:
    """Worker: the pre-token counts of one byte range of the file, keyed by UTF-8 bytes."""
    path, start, end, special_tokens, errors = job
    counts = count_pretokens(read_text(path, start, end, errors), special_token_pattern(special_tokens))
    return {token.encode("utf-8"): n for token, n in counts.items()}
