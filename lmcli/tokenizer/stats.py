"""Tokenizer statistics on a sample of documents, for comparing tokenizers (CS336 experiments).

A sample of N documents (the corpus split on its document separator, ``<|endoftext|>``) is
drawn with a fixed seed: a text file is scanned once for separator offsets, then only the chosen
documents are read, so any corpus size works; a streamed source (compressed text, JSON lines,
parquet, a dataset: one document per record) is read once, keeping a reservoir of N documents. For each tokenizer it reports:

* compression: UTF-8 bytes per token (higher = fewer tokens for the same text);
* encoding throughput, in one process and with all workers (the ``lmcli encode`` path), and
  how long the Pile (825 GB) would take at those rates;
* vocabulary facts: size, longest tokens, and the share of the vocabulary the sample uses
  (a tokenizer trained on another domain leaves much of its vocabulary idle).

Several ``--tokenizer`` options are reported side by side, e.g. a TinyStories tokenizer and an
OpenWebText tokenizer on the same documents.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import numpy as np

from lmcli.errors import LmcliError
from lmcli.progress import SILENT, Progress
from lmcli.tokenizer.chunks import check_text_file, decode_utf8, read_range
from lmcli.tokenizer.encode_file import encode_file
from lmcli.tokenizer.files import token_text
from lmcli.tokenizer.sources import TextSource, open_source, pieces
from lmcli.tokenizer.special_tokens import END_OF_TEXT
from lmcli.tokenizer.tokenizer import Tokenizer

PILE_BYTES = 825e9
SCAN_BLOCK = 16 << 20
LONGEST_SHOWN = 3


def document_ranges(path: Path, separator: str, on_progress=None) -> list[tuple[int, int]]:
    """Byte ranges of the non-empty documents of a file, split on ``separator`` (read in blocks)."""
    sep = separator.encode("utf-8")
    ranges, doc_start, offset, tail = [], 0, 0, b""
    with open(path, "rb") as f:
        while block := f.read(SCAN_BLOCK):
            data = tail + block
            base = offset - len(tail)
            i = data.find(sep)
            while i != -1:
                ranges.append((doc_start, base + i))
                doc_start = base + i + len(sep)
                i = data.find(sep, i + len(sep))
            # keep just enough to find a separator that straddles two blocks, never one already found
            keep = max(0, min(len(sep) - 1, base + len(data) - doc_start))
            tail = data[len(data) - keep :] if keep else b""
            offset += len(block)
            if on_progress:
                on_progress(len(block))
    ranges.append((doc_start, offset))
    return [(a, b) for a, b in ranges if b > a]


def sample_documents(
    path: Path, separator: str, n: int, seed: int, progress: Progress = SILENT, errors: str = "strict"
) -> tuple[list[str], int]:
    """``n`` documents drawn at random (without replacement; all of them when there are fewer), and their
    size in bytes in the file. Invalid UTF-8 is an error naming its offset, unless ``errors="replace"``."""
    check_text_file(path)
    if n < 1:
        raise LmcliError(f"--docs must be at least 1 (got {n})")
    task = progress.task(f"scan {path.name}", total=path.stat().st_size, unit="bytes")
    ranges = document_ranges(path, separator, task.advance)
    if not ranges:
        raise LmcliError(f"{path} holds no text")
    chosen = sorted(random.Random(seed).sample(ranges, min(n, len(ranges))))
    docs = [decode_utf8(read_range(path, start, end), path, start, errors) for start, end in chosen]
    return docs, sum(end - start for start, end in chosen)


def sample_stream_documents(
    source: TextSource, separator: str, n: int, seed: int, progress: Progress = SILENT, errors: str = "strict",
    text_field: str = "text", split: str = "train",
) -> tuple[list[str], int]:
    """``sample_documents`` for a streamed source (compressed text, records): one pass, keeping a
    uniform sample of ``n`` documents as they go by (reservoir sampling), so memory holds only those."""
    if n < 1:
        raise LmcliError(f"--docs must be at least 1 (got {n})")
    task = progress.task(f"scan {source.path.name}", total=source.size or None, unit="bytes")
    rng, sample, seen, tail, read = random.Random(seed), [], 0, "", 0

    def offer(document: str) -> None:
        nonlocal seen
        if len(sample) < n:
            sample.append(document)
        elif (slot := rng.randrange(seen + 1)) < n:
            sample[slot] = document
        seen += 1

    for piece in pieces(source, [separator], text_field, errors, split):
        *documents, tail = (tail + piece.text).split(separator)
        for document in filter(None, documents):
            offer(document)
        task.advance(piece.bytes_read - read)
        read = piece.bytes_read
    if tail:
        offer(tail)
    if not sample:
        raise LmcliError(f"{source.name} holds no text")
    return sample, sum(len(d.encode("utf-8")) for d in sample)


def tokenizer_stats(tokenizer: Tokenizer, name: str, docs: list[str], nbytes: int, workers: int, sample_dir: Path) -> dict:
    """Compression, throughput (1 process and ``workers``) and vocabulary use of one tokenizer on
    ``docs`` (``nbytes`` of the corpus)."""
    started = time.perf_counter()
    ids = [tokenizer.encode_array(d) for d in docs]
    single_s = time.perf_counter() - started
    tokens = sum(map(len, ids))
    used = len(np.unique(np.concatenate(ids))) if tokens else 0
    parallel_rate = _parallel_rate(tokenizer, docs, workers, sample_dir)
    single_rate = nbytes / max(single_s, 1e-9)
    longest = sorted(tokenizer.vocab.values(), key=len, reverse=True)[:LONGEST_SHOWN]
    return {
        "tokenizer": name,
        "vocab_size": tokenizer.vocab_size,
        "merges": len(tokenizer.merges),
        "tokens": tokens,
        "bytes_per_token": round(nbytes / max(tokens, 1), 4),
        "bytes_per_s_1_process": round(single_rate),
        "bytes_per_s_workers": round(parallel_rate),
        "workers": workers,
        "pile_hours_1_process": round(PILE_BYTES / single_rate / 3600, 2),
        "pile_hours_workers": round(PILE_BYTES / parallel_rate / 3600, 2),
        "vocab_used": used,
        "vocab_used_share": round(used / tokenizer.vocab_size, 4),
        "longest_tokens": [token_text(t) for t in longest],
    }


def _parallel_rate(tokenizer: Tokenizer, docs: list[str], workers: int, sample_dir: Path) -> float:
    """Bytes/s of ``lmcli encode`` on the sample (joined by the separator) with ``workers`` processes.

    The sample file is written once per separator in ``sample_dir``, so tokenizers that share
    their special token (the usual case) share the file.
    """
    separator = tokenizer.special_tokens[0] if tokenizer.special_tokens else ""
    text_path = sample_dir / f"sample-{separator.encode('utf-8').hex()}.txt"
    if not text_path.is_file():
        text_path.write_text(separator.join(docs), encoding="utf-8")
    chunk = max(1 << 16, text_path.stat().st_size // (4 * workers))  # a few chunks per worker, so all of them work
    result = encode_file(tokenizer, text_path, sample_dir / "sample.npy", workers=workers, chunk_bytes=chunk)
    return result.bytes / max(result.seconds, 1e-9)


def corpus_stats(
    input_path: str | Path, tokenizers: list[tuple[str, Tokenizer]], docs: int, seed: int, workers: int,
    progress: Progress = SILENT, errors: str = "strict", text_field: str = "text", split: str = "train",
) -> dict:
    """The statistics of every (name, tokenizer) on the same ``docs`` sampled documents of the input
    (any source of ``lmcli.tokenizer.sources``; a record is a document).

    Documents are split on the first tokenizer's first special token (``<|endoftext|>`` if it has none)."""
    if workers < 1:
        raise LmcliError(f"--workers must be at least 1 (got {workers})")
    source = open_source(input_path)
    first = tokenizers[0][1].special_tokens
    separator = first[0] if first else END_OF_TEXT
    if source.plain:
        sample, nbytes = sample_documents(source.path, separator, docs, seed, progress, errors)
    else:
        sample, nbytes = sample_stream_documents(source, separator, docs, seed, progress, errors, text_field, split)
    report = {"input": source.name, "documents": len(sample), "bytes": nbytes, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="lmcli-stats-") as tmp:
        report["tokenizers"] = [tokenizer_stats(t, name, sample, nbytes, workers, Path(tmp)) for name, t in tokenizers]
    return report
