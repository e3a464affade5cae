"""Counting the pre-tokens of a corpus file, in parallel and in bounded memory.

The result (``PretokenCounts``: its ``counter()``) equals ``lmcli.tokenizer.reference.count_pretokens``
on the whole file read at once.

BPE training only needs each distinct pre-token and how often it occurs. The file is cut into
chunks at pre-token boundaries (``lmcli.tokenizer.chunks``); each chunk is read by its byte
range, decoded and cut at special tokens, and its documents are pre-tokenized and counted
with array operations a megabyte at a time (``PretokenCounts``: the encoder's array
pre-tokenizer and packed-key hash table, and ``np.bincount`` for the occurrences).
With K workers, K - 1 worker processes and the main process all take the next chunk from a
shared counter as soon as they are free (so the load balances itself) and add its pre-tokens
to their own counts. A pre-token of at most 15 bytes is kept only as its packed key (which
holds its bytes) and a count. A worker sends its counts to the main process when it holds
FLUSH_ENTRIES distinct pre-tokens and at the end, packed (all the pre-tokens in one bytes
object, their lengths and counts in two arrays); the main process adds them to its own counts
with array operations as they come, between its own chunks. BPE training takes the result
packed too: no bytes object is made per pre-token (a Counter of them, ``counter()``, is only
for those who ask). No chunk's text travels between processes, only byte ranges, progress and packed counts,
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

import numpy as np

from lmcli.errors import LmcliError
from lmcli.job import sigterm_when_parent_dies
from lmcli.parallel import available_cores
from lmcli.tokenizer.chunks import DEFAULT_CHUNK_BYTES, bounded_pieces, chunk_ranges, decode_utf8, read_range
from lmcli.tokenizer.fast_pretoken_ids import MAX_PACKED_BYTES, PackedKeyTable, byte_slices, grown, packed_keys, padded_bytes, unpacked_keys
from lmcli.tokenizer.fast_pretokenize import pretokenize_segments
from lmcli.tokenizer.sources import Piece
from lmcli.tokenizer.special_tokens import special_bytes_pattern, special_token_pattern

Ranges = list[tuple[int, int]]
Packed = tuple[bytes, np.ndarray, np.ndarray]  # pre-tokens joined, their lengths, their counts
FLUSH_ENTRIES = 1 << 17  # distinct pre-tokens a worker gathers before sending them to the main process
BATCH_CHARS = 1 << 16  # text pre-tokenized at once (its arrays take ~50 bytes per character)


def count_file_pretokens(
    path: str | os.PathLike,
    special_tokens: list[str],
    workers: int | None = None,
    chunk_bytes: int | None = None,
    errors: str = "strict",
    on_bytes: Callable[[int], None] | None = None,
) -> PretokenCounts:
    """How often each pre-token (as UTF-8 bytes) occurs in the file; special tokens are left out.

    ``on_bytes(n)`` is called as each chunk of n bytes is done (for a progress bar).
    """
    workers = workers or available_cores()
    size = Path(path).stat().st_size
    ranges = chunk_ranges(path, special_tokens, chunk_bytes or default_chunk_bytes(size, workers))
    on_bytes = on_bytes or (lambda n: None)
    if workers == 1 or len(ranges) == 1:
        return _count_ranges(path, ranges, special_tokens, errors, on_bytes)
    return _count_in_parallel(path, ranges, special_tokens, errors, min(workers, len(ranges)), on_bytes)


def default_chunk_bytes(size: int, workers: int) -> int:
    """About eight chunks per worker (to balance the load), 1 MB to DEFAULT_CHUNK_BYTES each."""
    return max(1 << 20, min(DEFAULT_CHUNK_BYTES, size // (8 * workers) + 1))


class PretokenCounts:
    """How often each pre-token (as UTF-8 bytes) occurs in the texts added so far."""

    def __init__(self):
        # Pre-tokens of up to 15 bytes -> entry number; their packed keys are also their bytes,
        # so no bytes object is made for them until the counts are handed over.
        self._table = PackedKeyTable()
        self._counts = np.zeros(1 << 12, dtype=np.int64)  # of each entry
        self._long: Counter[bytes] = Counter()  # longer pre-tokens

    def __len__(self) -> int:
        return self._table.size + len(self._long)

    def occurrences(self) -> int:
        """How many pre-tokens were counted (each distinct one as often as it occurs)."""
        return int(self._counts[: self._table.size].sum()) + sum(self._long.values())

    def add(self, texts: list[str]) -> None:
        """Count the pre-tokens of texts that hold no special token (each pre-tokenized on its own)."""
        raw, data, starts, ends, barrier = pretokenize_segments(texts)
        starts, ends = starts[~barrier], ends[~barrier]
        entries, short = self._short_entries(data, starts, ends)
        self._counts[: self._table.size] += np.bincount(entries, minlength=self._table.size)
        self._long.update(byte_slices(raw, starts[~short], ends[~short]))

    def add_packed(self, packed: Packed) -> None:
        """Add counts of distinct pre-tokens sent by another process (``packed``), with array operations:
        ``add_packed`` (into a Counter, one Python step per pre-token) is what it equals."""
        blob, lengths, counts = packed
        ends = np.cumsum(lengths)
        starts = ends - lengths
        entries, short = self._short_entries(padded_bytes(blob), starts, ends)
        self._counts[entries] += counts[short]  # the pre-tokens of one packed set are distinct
        self._long.update(dict(zip(byte_slices(blob, starts[~short], ends[~short]), counts[~short].tolist())))

    def _short_entries(self, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The entry of each pre-token ``data[start:end]`` of at most MAX_PACKED_BYTES (``data`` padded
        for ``packed_keys``), new ones added with a count of 0; and which pre-tokens those short ones are."""
        lengths = ends - starts
        short = lengths <= MAX_PACKED_BYTES
        entries, _ = self._table.find_or_add(*packed_keys(data, starts[short], lengths[short]), self._table.size)
        self._counts = grown(self._counts, self._table.size)
        return entries, short

    def counter(self) -> Counter[bytes]:
        blob, lengths, counts = self._short_packed()
        ends = np.cumsum(lengths)
        tokens: Counter[bytes] = Counter()
        dict.update(tokens, zip(byte_slices(blob, ends - lengths, ends), counts.tolist()))  # no dict in between
        tokens.update(self._long)
        return tokens

    def packed(self) -> Packed:
        """The counts in three flat objects, to send to another process."""
        blob, lengths, counts = self._short_packed()
        long = list(self._long)
        return (b"".join([blob, *long]), np.concatenate([lengths, np.fromiter(map(len, long), np.int64, len(long))]),
                np.concatenate([counts, np.fromiter(self._long.values(), np.int64, len(long))]))

    def _short_packed(self) -> Packed:
        """The short pre-tokens (from their keys) joined, their lengths and their counts."""
        blob, lengths = unpacked_keys(*self._table.keys())
        return blob, lengths, self._counts[: self._table.size]


def add_packed(total: Counter[bytes], packed: Packed) -> None:
    """Add counts sent by ``PretokenCounts.packed`` to ``total``."""
    blob, lengths, counts = packed
    ends = np.cumsum(lengths).tolist()
    for start, end, n in zip([0, *ends[:-1]], ends, counts.tolist()):
        token = blob[start:end]
        total[token] = total.get(token, 0) + n


def _count_ranges(path, ranges: Iterable[tuple[int, int]], special_tokens, errors, on_bytes, on_full=None,
                  counts: PretokenCounts | None = None) -> PretokenCounts:
    """Pre-token counts of the given byte ranges of the file, added to ``counts`` if given. With
    ``on_full``, counts that reach FLUSH_ENTRIES distinct pre-tokens are handed over and counting
    starts afresh, so a worker never holds more than that."""
    special = special_bytes_pattern(special_tokens)
    counts = PretokenCounts() if counts is None else counts
    for start, end in ranges:
        for batch in _batches(_documents(path, start, read_range(path, start, end), special, errors)):
            counts.add(batch)
        on_bytes(end - start)
        if on_full and len(counts) >= FLUSH_ENTRIES:
            on_full(counts)
            counts = PretokenCounts()
    return counts


def _documents(path, start: int, data: bytes, special, errors: str) -> Iterator[str]:
    """The documents in the bytes read at ``start``, decoded one at a time: a chunk holding a
    single emoji would otherwise become a 4-bytes-per-character string."""
    pos = 0
    for m in special.finditer(data) if special else ():
        yield decode_utf8(data[pos : m.start()], path, start + pos, errors)
        pos = m.end()
    yield decode_utf8(data[pos:], path, start + pos, errors)


def _batches(documents: Iterable[str]) -> Iterator[list[str]]:
    """Consecutive documents in batches of about BATCH_CHARS; a longer document is cut where a
    cut cannot change its pre-tokens (``bounded_pieces``)."""
    batch, size = [], 0
    for document in documents:
        for piece in bounded_pieces(document, BATCH_CHARS) if len(document) > BATCH_CHARS else [document]:
            if size + len(piece) > BATCH_CHARS and batch:
                yield batch
                batch, size = [], 0
            batch.append(piece)
            size += len(piece)
    if batch:
        yield batch


class WorkerMessages:
    """What counting workers send: ("counts", packed), ("bytes", n), ("done", None) or ("error", exception),
    received from ``messages`` and handled; and the error when a worker died."""

    def __init__(self, messages, workers: list, on_counts: Callable[[Packed], None], on_bytes: Callable[[int], None] | None = None):
        self.messages, self.workers = messages, workers
        self.on_counts, self.on_bytes, self.done = on_counts, on_bytes, 0

    def receive(self, timeout: float) -> bool:
        """Handle the next message if one comes within ``timeout`` s (whether one came). A worker that
        was killed (the out-of-memory killer, a kill -9) or ended without saying it was done is an error."""
        ended = sum(w.exitcode is not None for w in self.workers)  # before the wait: their last words are queued by now
        try:
            self._handle(self.messages.get(timeout=timeout))
            return True
        except queue.Empty:
            if any(w.exitcode for w in self.workers) or ended > self.done:
                raise LmcliError("a pre-tokenizing worker process died (out of memory?); try fewer --workers") from None
            return False

    def drain(self) -> None:
        """Handle every message already sent."""
        while self.receive(0.0):
            pass

    def wait_until_done(self) -> None:
        while self.done < len(self.workers):
            self.receive(0.5)

    def _handle(self, message: tuple[str, object]) -> None:
        kind, value = message
        if kind == "error":
            raise value
        if kind == "bytes":
            self.on_bytes(value)
        elif kind == "counts":
            self.on_counts(value)
        else:
            self.done += 1


def _count_in_parallel(path, ranges: Ranges, special_tokens, errors, processes: int, on_bytes) -> PretokenCounts:
    """Count in this process and ``processes - 1`` workers sharing one queue of ranges."""
    context = _context()
    next_range = context.Value("q", 0)
    messages = context.Queue()
    workers = _started(context, processes - 1, _worker, path, ranges, next_range, special_tokens, errors, messages)
    try:
        # The workers' counts are added as they come, between this process's own chunks: held back
        # until the end, they would pile up (about 12 MB per flush) as the input grows.
        total = PretokenCounts()
        inbox = WorkerMessages(messages, workers, total.add_packed, on_bytes)

        def drain_then(n: int) -> None:
            on_bytes(n)
            inbox.drain()

        _count_ranges(path, _shared(ranges, next_range), special_tokens, errors, drain_then, counts=total)
        inbox.wait_until_done()
        return total
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join()


def count_stream_pretokens(
    stream: Iterable[Piece], special_tokens: list[str], workers: int | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> PretokenCounts:
    """``count_file_pretokens`` for a streamed source (``lmcli.tokenizer.sources``): this process
    reads the pieces and hands them to ``workers`` worker processes through a short queue (so the
    stream is read no faster than it is counted; JSON lines are parsed by the workers), which send their counts back packed as a file's
    workers do. ``on_bytes(n)``: n more input bytes read."""
    workers = workers or available_cores()
    on_bytes = on_bytes or (lambda n: None)
    read = 0

    def advance(piece: Piece) -> None:
        nonlocal read
        on_bytes(piece.bytes_read - read)
        read = piece.bytes_read

    if workers == 1:
        counts, special = PretokenCounts(), special_token_pattern(special_tokens)
        for piece in stream:
            _add_piece(counts, piece.text, special)
            advance(piece)
        return counts
    context = _context()
    tasks, messages = context.Queue(maxsize=2 * workers), context.Queue()
    procs = _started(context, workers, _stream_worker, tasks, messages, special_tokens)
    total = PretokenCounts()  # compact while the workers' counts come in
    inbox = WorkerMessages(messages, procs, total.add_packed)

    def hand_over(item: Piece | None) -> None:
        """Put ``item`` on the task queue, first merging what the workers sent (a dead worker is found
        here, not at the end), and again while the queue is full."""
        while True:
            inbox.drain()
            try:
                return tasks.put(item, timeout=0.1)
            except queue.Full:
                pass

    try:
        for piece in stream:
            hand_over(piece)  # its text is made in the worker (JSON lines are parsed there)
            advance(piece)
        for _ in procs:
            hand_over(None)
        inbox.wait_until_done()
        return total
    finally:
        for w in procs:
            if w.is_alive():
                w.terminate()
            w.join()
        tasks.cancel_join_thread()  # pieces no worker will read (after an error) must not hold up this process's exit


def _add_piece(counts: PretokenCounts, text: str, special) -> None:
    """Count a piece of text: its documents (cut at special tokens) in batches."""
    documents = special.split(text)[::2] if special else [text]
    for batch in _batches(documents):
        counts.add(batch)


def _stream_worker(tasks, messages, special_tokens: list[str]) -> None:
    """Worker process: count the pieces from ``tasks`` until None; send counts when full and at the end, then "done"."""
    special = special_token_pattern(special_tokens)
    try:
        counts = PretokenCounts()
        while (piece := tasks.get()) is not None:
            _add_piece(counts, piece.text, special)
            if len(counts) >= FLUSH_ENTRIES:
                messages.put(("counts", counts.packed()))
                counts = PretokenCounts()
        messages.put(("counts", counts.packed()))
        del counts
        messages.put(("done", None))
    except Exception as e:  # the main process reports it
        messages.put(("error", e))
    except KeyboardInterrupt:
        pass


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

    def send_counts(counts: PretokenCounts) -> None:
        messages.put(("counts", counts.packed()))

    try:
        counts = _count_ranges(path, _shared(ranges, next_range), special_tokens, errors,
                               lambda n: messages.put(("bytes", n)), send_counts)
        send_counts(counts)
        del counts  # the queue's feeder thread pickles the packed copy
        messages.put(("done", None))
    except Exception as e:  # LmcliError (bad UTF-8), OSError...: the main process reports it
        messages.put(("error", e))
    except KeyboardInterrupt:
        pass  # the main process reports the interruption


def _started(context, count: int, target: Callable, *args) -> list:
    """``count`` worker processes running ``target(*args)``, started. The kernel ends each one when
    this process dies: a kill -9 of it would otherwise leave them counting on, or blocked forever on
    a full pipe that nobody reads."""
    workers = [context.Process(target=_child, args=(os.getpid(), target, *args), daemon=True) for _ in range(count)]
    for w in workers:
        w.start()
    return workers


def _child(parent: int, target: Callable, *args) -> None:
    sigterm_when_parent_dies(parent)
    target(*args)


def _context():
    # On Linux, fork starts workers at once with the modules already imported; elsewhere
    # (macOS, Windows) the platform's default start method is the safe one.
    return multiprocessing.get_context("fork" if sys.platform == "linux" else None)
