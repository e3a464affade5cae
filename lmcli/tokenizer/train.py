"""Training a byte-level BPE tokenizer (the CS336 ``train_bpe`` interface).

Byte-level BPE starts from the 256 byte values as tokens and repeatedly adds the merge of the
most frequent adjacent pair of tokens, until the vocabulary reaches the requested size:

1. count pre-tokens: split the corpus on special tokens, pre-tokenize each piece as GPT-2's
   regex does (with array operations) and count the distinct pre-tokens (``fast_count``:
   chunked, in parallel);
2. count the adjacent pairs of bytes in the distinct pre-tokens, weighted by their counts;
3. merge the most frequent pair, update the counts, repeat (2 and 3: ``fast_merges``).

``lmcli.tokenizer.reference.train_bpe`` is the same algorithm written plainly (recounting every
pair after every merge, on a text in memory); this one returns the same vocab and merges for a
file of any size.

The vocabulary lists the special tokens first, then the 256 bytes, then one token per merge in
creation order; ``vocab_size`` counts all of them.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmcli.allocator import unmap_large_buffers
from lmcli.errors import LmcliError
from lmcli.tokenizer.chunks import check_text_file
from lmcli.tokenizer.fast_count import PretokenCounts, count_file_pretokens, count_stream_pretokens
from lmcli.tokenizer.fast_merges import MergeLoop
from lmcli.tokenizer.reference import build_vocab
from lmcli.tokenizer.sources import TextSource, expand_inputs, one_stream
from lmcli.tokenizer.special_tokens import check_special_tokens

ERROR_MODES = ("strict", "replace")


@dataclass
class TrainStats:
    """What a training run did: seconds per stage, sizes and counts, for the summary."""

    seconds: dict[str, float] = field(default_factory=dict)
    input_bytes: int = 0
    distinct_pretokens: int = 0
    total_pretokens: int = 0
    merges: int = 0
    requested_merges: int = 0

    @contextlib.contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Add the wall time of the block to ``seconds[stage]``."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start


def train_bpe(
    input_path: str | os.PathLike | list[str | os.PathLike],
    vocab_size: int,
    special_tokens: list[str] | None = None,
    *,
    workers: int | None = None,
    chunk_bytes: int | None = None,
    errors: str = "strict",
    on_bytes: Callable[[int], None] | None = None,
    on_merge: Callable[[int], None] | None = None,
    stats: TrainStats | None = None,
    text_field: str = "text",
    split: str = "train",
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train byte-level BPE on a UTF-8 text file; returns ``(vocab, merges)``.

    ``vocab`` maps id -> token bytes (special tokens, then the 256 bytes, then merges);
    ``merges`` lists the merged pairs in creation order. If the corpus runs out of pairs first,
    the vocabulary is smaller than ``vocab_size`` (``stats.merges`` says how many were made).
    ``input_path`` may also be any source ``lmcli.tokenizer.sources`` reads (compressed text, JSON
    lines, parquet, a dataset, ``text_field`` holding the text), a glob, or a list of them: their
    pre-token counts add up. Options: ``workers`` processes (default: all cores), ``chunk_bytes``
    per work unit, ``errors="replace"`` to accept invalid UTF-8, progress callbacks
    ``on_bytes(n)`` / ``on_merge(done)``, and a ``TrainStats`` to fill in.
    """
    special_tokens = check_special_tokens(special_tokens or [])
    sources = check_inputs(input_path if isinstance(input_path, list) else [input_path])
    num_merges = check_vocab_size(vocab_size, special_tokens)
    check_errors_mode(errors)
    if workers is not None and workers < 1:
        raise LmcliError(f"--workers must be at least 1, got {workers}")
    stats = stats if stats is not None else TrainStats()
    stats.input_bytes = sum(source.size for source in sources)
    stats.requested_merges = num_merges

    unmap_large_buffers()  # chunks and batch arrays come and go: keep them from fragmenting the heap
    with stats.timed("pretokenize"):
        word_counts = PretokenCounts()
        streamed = [source for source in sources if not source.plain]
        if streamed:  # all streamed sources through one set of workers, started before any reader's import
            stream = one_stream(streamed, special_tokens, text_field, errors, split)
            word_counts = count_stream_pretokens(stream, special_tokens, workers, on_bytes)
        for source in sources:  # the text files one at a time, their counts added to the total
            if source.plain:
                counts = count_file_pretokens(source.path, special_tokens, workers, chunk_bytes, errors, on_bytes)
                if len(word_counts):
                    word_counts.add_packed(counts.packed())
                else:
                    word_counts = counts
                del counts  # else it would keep the counting table through the merges
    stats.distinct_pretokens = len(word_counts)
    stats.total_pretokens = word_counts.occurrences()
    with stats.timed("count"):
        packed = word_counts.packed()  # no bytes object per pre-token
        del word_counts  # its hash table goes before the loop packs the words again
        loop = MergeLoop(packed, num_merges)
        del packed  # the loop holds the words now: the counts go before the pairs are counted
        loop.count_pairs()
    with stats.timed("merge"):
        merges = loop.run(num_merges, on_merge)
    stats.merges = len(merges)
    return build_vocab(special_tokens, merges), merges


def check_vocab_size(vocab_size: int, special_tokens: list[str]) -> int:
    """The number of merges a vocabulary of ``vocab_size`` leaves room for (an error if negative)."""
    num_merges = vocab_size - 256 - len(special_tokens)
    if num_merges < 0:
        raise LmcliError(
            f"vocab size {vocab_size} is too small: it must hold the 256 bytes and "
            f"{len(special_tokens)} special token(s), so at least {256 + len(special_tokens)}"
        )
    return num_merges


def check_errors_mode(errors: str) -> None:
    if errors not in ERROR_MODES:
        raise LmcliError(f"unknown errors mode {errors!r}: use one of {', '.join(ERROR_MODES)}")


def check_input(input_path: str | os.PathLike) -> Path:
    """The input file, which must exist, be a readable regular file and not be empty."""
    path = check_text_file(input_path)
    if path.stat().st_size == 0:
        raise LmcliError(f"input file {path} is empty: there is nothing to train on")
    return path


def check_inputs(names: list[str | os.PathLike]) -> list[TextSource]:
    """The sources the names and patterns give; an empty file is an error."""
    sources = expand_inputs(names)
    for source in sources:
        if source.kind != "hub" and source.size == 0:
            raise LmcliError(f"input file {source.name} is empty: there is nothing to train on")
    return sources
