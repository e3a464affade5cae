"""Tokenizer statistics on a sample of documents, for comparing tokenizers (CS336 experiments).

A sample of N documents (the corpus split on its document separator, ``<|endoftext|>``) is
drawn with a fixed seed: the file is scanned once for separator offsets, then only the chosen
documents are read, so any corpus size works. For each tokenizer it reports:

* compression: UTF-8 bytes per token (higher = fewer tokens for the same text);
* encoding throughput, in one process and with all workers (the ``lmcli encode`` path), and
  how long the Pile (825 GB) would take at those rates;
* vocabulary facts: size, longest tokens, and the share of the vocabulary the sample uses
  (a tokenizer trained on another domain leaves much of its vocabulary idle).

Several ``--tokenizer`` options are reported side by side, e.g. a TinyStories tokenizer and an
OpenWebText tokenizer on the same documents.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from lmcli.errors import LmcliError
from lmcli.tokenizer.chunks import check_text_file
from lmcli.tokenizer.encode_file import encode_file
from lmcli.tokenizer.tokenizer import DEFAULT_SPECIAL_TOKEN, Tokenizer

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


def sample_documents(path: Path, separator: str, n: int, seed: int, quiet: bool = False) -> list[str]:
    """``n`` documents drawn at random (without replacement; all of them when there are fewer)."""
    from lmcli.console import byte_progress

    check_text_file(path)
    if n < 1:
        raise LmcliError(f"--docs must be at least 1 (got {n})")
    with byte_progress(quiet) as progress:
        task = progress.add_task(f"scan {path.name}", total=path.stat().st_size)
        ranges = document_ranges(path, separator, lambda k: progress.advance(task, k))
    if not ranges:
        raise LmcliError(f"{path} holds no text")
    chosen = sorted(random.Random(seed).sample(ranges, min(n, len(ranges))))
    with open(path, "rb") as f:
        docs = []
        for start, end in chosen:
            f.seek(start)
            docs.append(f.read(end - start).decode("utf-8", errors="replace"))
    return docs


def tokenizer_stats(tokenizer: Tokenizer, name: str, docs: list[str], workers: int, sample_dir: Path) -> dict:
    """Compression, throughput (1 process and ``workers``) and vocabulary use of one tokenizer on docs."""
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
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
        "longest_tokens": [t.decode("utf-8", errors="replace") for t in longest],
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


def _hours(h: float) -> str:
    return f"{h:,.1f} h" if h < 48 else f"{h / 24:,.1f} days"


def print_stats(report: dict) -> None:
    from rich.table import Table

    from lmcli.console import console

    stats = report["tokenizers"]
    table = Table(title=f"{report['documents']:,} documents ({report['bytes']:,} bytes) of {report['input']}")
    table.add_column("")
    for s in stats:
        table.add_column(s["tokenizer"], justify="right")
    rows = [
        ("vocabulary size", lambda s: f"{s['vocab_size']:,}"),
        ("tokens", lambda s: f"{s['tokens']:,}"),
        ("bytes / token", lambda s: f"{s['bytes_per_token']:.2f}"),
        ("encode, 1 process", lambda s: f"{s['bytes_per_s_1_process'] / 1e6:.2f} MB/s"),
        (f"encode, {stats[0]['workers']} workers", lambda s: f"{s['bytes_per_s_workers'] / 1e6:.2f} MB/s"),
        ("the Pile (825 GB), 1 process", lambda s: _hours(s["pile_hours_1_process"])),
        (f"the Pile, {stats[0]['workers']} workers", lambda s: _hours(s["pile_hours_workers"])),
        ("vocabulary used", lambda s: f"{s['vocab_used']:,} ({s['vocab_used_share']:.1%})"),
        ("longest tokens", lambda s: "\n".join(repr(t) for t in s["longest_tokens"])),
    ]
    for label, cell in rows:
        table.add_row(label, *(cell(s) for s in stats))
    console.print(table)


def stats_command(
    input_path: Path | None,
    tokenizer_dirs: list[Path] | None,
    docs: int,
    seed: int,
    workers: int | None,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """``lmcli stats``: sample documents, measure every tokenizer on them, print a table (or JSON)."""
    from lmcli.parallel import available_cores
    from lmcli.workspace import Workspace

    ws = Workspace.resolve(workspace)
    dirs = tokenizer_dirs or [ws.tokenizer_dir]
    tokenizers = [Tokenizer.from_dir(d) for d in dirs]  # load all first: a bad directory fails fast
    input_path = input_path or ws.demo_split("train")
    workers = workers or available_cores()
    if workers < 1:
        raise LmcliError(f"--workers must be at least 1 (got {workers})")
    first = tokenizers[0].special_tokens
    sample = sample_documents(input_path, first[0] if first else DEFAULT_SPECIAL_TOKEN, docs, seed, quiet=as_json)
    names = [str(d) for d in dirs]
    report = {
        "input": str(input_path),
        "documents": len(sample),
        "bytes": sum(len(d.encode("utf-8")) for d in sample),
        "seed": seed,
    }
    with tempfile.TemporaryDirectory(prefix="lmcli-stats-") as tmp:
        report["tokenizers"] = [tokenizer_stats(t, n, sample, workers, Path(tmp)) for t, n in zip(tokenizers, names)]
    if as_json:
        print(json.dumps(report))
    else:
        print_stats(report)
