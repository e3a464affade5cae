"""Counting the pre-tokens of a corpus file, in parallel and in bounded memory.

BPE training only needs each distinct pre-token and how often it occurs. The file is cut into
chunks at pre-token boundaries (``lmcli.tokenizer.chunks``); each chunk is read by its byte
range and cut at special tokens, and each document is decoded, pre-tokenized and counted.
With K workers, K - 1 worker processes and the main process all take the next chunk from a
shared counter as soon as they are free (so the load balances itself) and add its pre-tokens
to their own Counter. A worker sends its Counter to the
main process, which adds it to its own, when it holds FLUSH_ENTRIES distinct pre-tokens and at
the end. No chunk's text travels between processes, only byte ranges, progress and Counters,
so however large the file, memory holds one chunk and at most FLUSH_ENTRIES pre-tokens per
worker, plus one entry per distinct pre-token in the main process.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from lmcli.errors import LmcliError
from lmcli.parallel import available_cores
from lmcli.tokenizer.chunks import DEFAULT_CHUNK_BYTES, chunk_ranges, decode_utf8, read_range, special_bytes_pattern
from lmcli.tokenizer.pretokenize import count_pretokens

Ranges = list[tuple[int, int]]
FLUSH_ENTRIES = 1 << 19  # distinct pre-tokens a worker gathers before sending them to the main process


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
    ranges = chunk_ranges(path, special_tokens, chunk_bytes or default_chunk_bytes(size, workers))
    on_bytes = on_bytes or (lambda n: None)
    if workers == 1 or len(ranges) == 1:
        counts = _count_ranges(path, ranges, special_tokens, errors, on_bytes)
    else:
        counts = _count_in_parallel(path, ranges, special_tokens, errors, min(workers, len(ranges)), on_bytes)
    return Counter({token.encode("utf-8"): n for token, n in counts.items()})



def default_chunk_bytes(size: int, workers: int) -> int:
    """About eight chunks per worker (to balance the load), 1 MB to DEFAULT_CHUNK_BYTES each."""
    return max(1 << 20, min(DEFAULT_CHUNK_BYTES, size // (8 * workers) + 1))


def _count_ranges(
    path, ranges: Iterable[tuple[int, int]], special_tokens, errors, on_bytes, on_full=None, counts=None
) -> Counter[str]:
    """Pre-token counts of the given byte ranges of the file, gathered in one Counter (``counts``
    if given). With ``on_full``, a Counter that reaches FLUSH_ENTRIES is handed over and a new one
    started, so a worker never holds more than that."""
    special = special_bytes_pattern(special_tokens)
    counts = Counter() if counts is None else counts
    for start, end in ranges:
        _count_range(path, start, read_range(path, start, end), special, errors, counts)
        on_bytes(end - start)
        if on_full and len(counts) >= FLUSH_ENTRIES:
            on_full(counts)
            counts = Counter()
    return counts


def _count_range(path, start: int, data: bytes, special, errors, counts: Counter[str]) -> None:
    """Count the pre-tokens of the bytes read at ``start``, decoding one document at a time: a
    chunk holding a single emoji would otherwise become a 4-bytes-per-character string."""
    pos = 0
    for m in special.finditer(data) if special else ():
        count_pretokens(decode_utf8(data[pos : m.start()], path, start + pos, errors), None, counts)
        pos = m.end()
    count_pretokens(decode_utf8(data[pos:], path, start + pos, errors), None, counts)


def _count_in_parallel(path, ranges: Ranges, special_tokens, errors, processes: int, on_bytes) -> Counter[str]:
    """Count in this process and ``processes - 1`` workers sharing one queue of ranges."""
    context = _context()
    next_range = context.Value("q", 0)
    messages = context.Queue()
    workers = [
        context.Process(target=_worker, args=(path, ranges, next_range, special_tokens, errors, messages), daemon=True)
        for _ in range(processes - 1)
    ]
    for w in workers:
        w.start()
    try:
        total: Counter[str] = Counter()
        done = 0

        def handle(message) -> None:
            nonlocal done
            kind, value = message
            if kind == "error":
                raise value
            if kind == "bytes":
                on_bytes(value)
            elif kind == "counts":
                total.update(value)
            else:
                done += 1

        def drain_then(n: int) -> None:
            on_bytes(n)
            while True:
                try:
                    handle(messages.get_nowait())
                except queue.Empty:
                    return

        _count_ranges(path, _shared(ranges, next_range), special_tokens, errors, drain_then, counts=total)
        while done < len(workers):
            try:
                handle(messages.get(timeout=0.5))
            except queue.Empty:
                if not all(w.is_alive() for w in workers):
                    raise LmcliError("a pre-tokenizing worker process died (out of memory?); try fewer --workers")
        return total
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join()


def _shared(ranges: Ranges, next_range) -> Iterator[tuple[int, int]]:
    """The ranges no process has taken yet, taking each one as it is yielded."""
    while True:
        with next_range.get_lock():
            i = next_range.value
            next_range.value = i + 1
        if i >= len(ranges):
            return
        yield ranges[i]


def _worker(path, ranges: Ranges, next_range, special_tokens, errors, messages) -> None:
    """Worker process: count shared ranges; send progress per range, counts when its Counter is
    full and at the end, then "done"."""

    def send(kind: str) -> Callable:
        return lambda value: messages.put((kind, value))

    try:
        counts = _count_ranges(path, _shared(ranges, next_range), special_tokens, errors, send("bytes"), send("counts"))
        messages.put(("counts", counts))
        messages.put(("done", None))
    except Exception as e:  # LmcliError (bad UTF-8), OSError...: the main process reports it
        messages.put(("error", e))
    except KeyboardInterrupt:
        pass  # the main process reports the interruption


def _context():
    # On Linux, fork starts workers at once with the modules already imported; elsewhere
    # (macOS, Windows) the platform's default start method is the safe one.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None)
