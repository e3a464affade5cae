"""Encoding text files of any size to ``.npy`` arrays of token ids, in parallel, atomically.

The file is cut into byte ranges at pre-token boundaries (``lmcli.tokenizer.chunks``), so the
chunks encode independently and their ids, concatenated in order, equal the ids of the whole
file encoded in one piece. Worker processes encode chunks; the parent appends each chunk's ids,
in file order, to a temporary file that already reserves room for the ``.npy`` header. When
all chunks are done the header (which needs the final token count) is written in front and the
file is renamed onto the target, so memory stays bounded by a few chunks and an interrupted run
never leaves a truncated array that looks complete.

Ids are stored as uint16 when every id of the vocabulary is below 65,536 (half the disk and
memory of uint32, and what a GPT-2-sized vocabulary needs), uint32 otherwise.

Beside ``X.npy`` a small ``X.npy.json`` records which tokenizer wrote the ids (its directory
and fingerprint): ids mean nothing without their tokenizer, and a model evaluated or trained on
ids of another tokenizer would give a number, not an error. A shard's record is its directory's
``manifest.json`` (``lmcli.tokenizer.encode_shards``). ``check_encoded_with`` refuses such a
pairing; files from before these records, or written by other tools, are taken as they are.
"""

from __future__ import annotations

import collections
import contextlib
import io
import itertools
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmcli.atomic import atomic_open, atomic_path
from lmcli.errors import LmcliError
from lmcli.job import sigterm_when_parent_dies
from lmcli.progress import SILENT, Progress
from lmcli.tokenizer.chunks import chunk_ranges, read_text
from lmcli.tokenizer.files import tokenizer_fingerprint
from lmcli.tokenizer.sources import Piece, TextSource, open_source, pieces
from lmcli.tokenizer.tokenizer import Tokenizer

ENCODE_CHUNK_BYTES = 1 << 20  # small enough to balance two workers on a 20 MB file
DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


@dataclass
class EncodeResult:
    input: str
    output: str
    tokens: int
    bytes: int
    seconds: float
    dtype: str
    workers: int
    chunks: int

    @property
    def bytes_per_token(self) -> float:
        return self.bytes / max(self.tokens, 1)

    @property
    def mb_per_s(self) -> float:
        return self.bytes / 1e6 / max(self.seconds, 1e-9)

    def as_dict(self) -> dict:
        return {**asdict(self), "bytes_per_token": round(self.bytes_per_token, 4), "mb_per_s": round(self.mb_per_s, 3)}


def choose_dtype(tokenizer: Tokenizer, requested: str = "auto") -> np.dtype:
    """uint16 when every id fits (< 65,536), else uint32; a requested dtype that is too small is an error."""
    if requested == "auto":
        requested = "uint16" if tokenizer.max_id <= np.iinfo(np.uint16).max else "uint32"
    if requested not in DTYPES:
        raise LmcliError(f"unknown dtype {requested!r}: choose auto, uint16 or uint32")
    dtype = np.dtype(DTYPES[requested])
    if tokenizer.max_id > np.iinfo(dtype).max:
        raise LmcliError(
            f"the vocabulary has ids up to {tokenizer.max_id:,}, which overflow {dtype.name} "
            f"(max {np.iinfo(dtype).max:,}): use --dtype uint32 or auto"
        )
    return dtype


class IdsFile:
    """A ``.npy`` of token ids written as they come, atomically: room for the header first, the header
    (which needs the count) last, then fsync and the rename onto ``path``. As a context manager it
    is completed on success and removed on failure; ``close`` and ``abort`` do each explicitly."""

    def __init__(self, path: Path, dtype: np.dtype):
        self.path, self.dtype, self.tokens = Path(path), dtype, 0
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(open(self._stack.enter_context(atomic_path(path)), "wb"))
        self._file.seek(len(_npy_header(dtype, 0)))

    def write(self, ids: np.ndarray) -> None:
        self._file.write(ids.tobytes())
        self.tokens += len(ids)

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, self.tokens))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._stack.close()

    def abort(self) -> None:
        """Remove the unfinished file (nothing is renamed onto ``path``)."""
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> IdsFile:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _npy_header(dtype: np.dtype, count: int) -> bytes:
    # numpy pads the header so the length digits can grow: its size does not depend on count.
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count,)})
    return buf.getvalue()


# Worker-process state: each worker builds the tokenizer once, then encodes chunk after chunk.
_worker: dict = {}


def _init_worker(tokenizer: Tokenizer, path: str, dtype: np.dtype, errors: str, parent: int | None = None) -> None:
    _worker.update(tokenizer=tokenizer, path=path, dtype=dtype, errors=errors)
    if parent is not None:  # a worker process: it ends with the process it works for, whatever kills that
        sigterm_when_parent_dies(parent)


def _encode_range(byte_range: tuple[int, int]) -> tuple[int, int, np.ndarray]:
    start, end = byte_range
    text = read_text(_worker["path"], start, end, _worker["errors"])
    return end - start, end - start, _worker["tokenizer"].encode_array(text).astype(_worker["dtype"])


def _encode_piece(piece: Piece) -> tuple[int, int, np.ndarray]:
    text = piece.text  # JSON lines are parsed here, in the worker
    return len(text.encode("utf-8")), piece.bytes_read, _worker["tokenizer"].encode_array(text).astype(_worker["dtype"])


def _encoded_chunks(
    tokenizer: Tokenizer, path: Path, ranges: list[tuple[int, int]], dtype: np.dtype, workers: int, errors: str
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(text bytes, input bytes read, ids) per chunk, in file order; in this process when one worker is enough."""
    init = (tokenizer, str(path), dtype, errors)
    if workers <= 1 or len(ranges) <= 1:
        _init_worker(*init)
        yield from map(_encode_range, ranges)
        return
    yield from _in_order(_encode_range, ranges, min(workers, len(ranges)), init)


def _encoded_pieces(tokenizer: Tokenizer, pieces: Iterable[Piece], dtype: np.dtype, workers: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """(text bytes, input bytes read, ids) per piece of a streamed source, in order. At most two
    pieces per worker are in flight: the stream is read as fast as they are encoded, no faster."""
    read = 0
    for nbytes, read_so_far, ids in _encoded_in_order(tokenizer, pieces, dtype, workers):
        yield nbytes, read_so_far - read, ids
        read = read_so_far


def _encoded_in_order(tokenizer: Tokenizer, pieces: Iterable[Piece], dtype: np.dtype, workers: int) -> Iterator[tuple[int, int, np.ndarray]]:
    init = (tokenizer, "", dtype, "strict")
    if workers <= 1:
        _init_worker(*init)
        yield from map(_encode_piece, pieces)
        return
    yield from _in_order(_encode_piece, pieces, workers, init)


def _in_order(encode: Callable, items: Iterable, workers: int, init: tuple) -> Iterator:
    """``encode(item)`` of each item, in order, worked out by ``workers`` processes with at most two
    items each in flight: the items are read as fast as they are encoded, no faster. A worker that
    dies (the out-of-memory killer, a kill -9) ends it with one error: ``multiprocessing.Pool``
    would replace the worker and wait forever for the result it took with it."""
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context(), _init_worker, (*init, os.getpid()))
    in_flight: collections.deque = collections.deque()
    try:
        for item in items:
            in_flight.append(pool.submit(encode, item))
            if len(in_flight) >= 2 * workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()
    except BrokenProcessPool:
        raise LmcliError("an encoding worker process died (out of memory?); try fewer --workers") from None
    finally:  # on an error or Ctrl-C, the chunks not started yet are dropped, not encoded first
        pool.shutdown(wait=True, cancel_futures=True)


def encoded_chunks(
    tokenizer: Tokenizer, source: TextSource, dtype: np.dtype, workers: int, errors: str = "strict",
    text_field: str = "text", split: str = "train", skip: int = 0, chunk_bytes: int = ENCODE_CHUNK_BYTES,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """(text bytes, input bytes read, ids) of each chunk of ``source`` in order (byte ranges of a text
    file, pieces of a streamed source), from chunk ``skip`` on: the same chunks every time for the same
    input, so that an interrupted encoding can go on after the chunks it finished."""
    if source.plain:
        ranges = chunk_ranges(source.path, tokenizer.special_tokens, chunk_bytes)
        return _encoded_chunks(tokenizer, source.path, ranges[skip:], dtype, workers, errors)
    stream = pieces(source, tokenizer.special_tokens, text_field, errors, split)
    return _encoded_pieces(tokenizer, itertools.islice(stream, skip, None), dtype, workers)


def encode_file(
    tokenizer: Tokenizer,
    input_path: str | os.PathLike | TextSource,
    output_path: str | os.PathLike,
    workers: int = 1,
    dtype: str = "auto",
    errors: str = "strict",
    on_progress: Callable[[int], None] | None = None,
    chunk_bytes: int = ENCODE_CHUNK_BYTES,
    text_field: str = "text",
    split: str = "train",
) -> EncodeResult:
    """Encode a text source (``lmcli.tokenizer.sources``: a UTF-8 text file, compressed text, JSON
    lines, parquet, a dataset) to a ``.npy`` of ids (``np.load(..., mmap_mode="r")`` friendly).
    ``on_progress(n)``: n more input bytes read (compressed bytes for a compressed source)."""
    source = input_path if isinstance(input_path, TextSource) else open_source(input_path)
    output_path = Path(output_path)
    if workers < 1:
        raise LmcliError(f"--workers must be at least 1 (got {workers})")
    np_dtype = choose_dtype(tokenizer, dtype)
    started = time.perf_counter()
    chunks = encoded_chunks(tokenizer, source, np_dtype, workers, errors, text_field, split, chunk_bytes=chunk_bytes)
    text_bytes = units = 0
    with IdsFile(output_path, np_dtype) as out:
        for nbytes, read, ids in chunks:
            out.write(ids)
            text_bytes, units = text_bytes + nbytes, units + 1
            if on_progress:
                on_progress(read)
    return EncodeResult(
        input=source.name,
        output=str(output_path),
        tokens=out.tokens,
        bytes=text_bytes,
        seconds=time.perf_counter() - started,
        dtype=np_dtype.name,
        workers=min(workers, max(units, 1)) if source.plain else workers,  # a text file's pool: one process per chunk at most
        chunks=units,
    )


MANIFEST = "manifest.json"  # what a directory of token shards holds about them


def provenance_path(ids_path: Path) -> Path:
    return ids_path.with_name(ids_path.name + ".json")


def write_provenance(ids_path: Path, tokenizer_dir: Path, fingerprint: str) -> None:
    with atomic_open(provenance_path(ids_path), encoding="utf-8") as f:
        json.dump({"tokenizer": str(Path(tokenizer_dir).resolve()), "tokenizer_fingerprint": fingerprint}, f)


def encoded_with(ids_path: Path) -> tuple[str, str] | None:
    """(tokenizer directory, fingerprint) that wrote ``ids_path``, when recorded and readable: in its
    own record, or in the manifest of the shard directory that lists it."""
    try:
        record = _json_file(provenance_path(ids_path))
        if record is None:
            record = _json_file(ids_path.parent / MANIFEST)
            if not any(shard["file"] == ids_path.name for shard in record["shards"]):
                return None
        return str(record["tokenizer"]), str(record["tokenizer_fingerprint"])
    except (KeyError, TypeError):  # no record (or not one of ours): nothing to check
        return None


def _json_file(path: Path) -> Any:
    """What the JSON file holds; None when it is missing or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def check_encoded_with(ids_paths: Iterable[Path], fingerprint: str, whose: str,
                       advice: str = "encode its text with that tokenizer (lmcli encode TEXT --tokenizer DIR)") -> None:
    """An LmcliError when one of ``ids_paths`` was encoded with a tokenizer other than ``fingerprint``
    (``whose``: the tokenizer it should be, and ``advice``, for the message)."""
    for path in ids_paths:
        record = encoded_with(path)
        if record is not None and record[1] != fingerprint:
            raise LmcliError(f"{path} was encoded with the tokenizer in {record[0]}, not with {whose}: {advice}")


def encode_files(
    tokenizer: Tokenizer,
    jobs: Iterable[tuple[TextSource | Path, Path]],
    workers: int,
    dtype: str = "auto",
    errors: str = "strict",
    progress: Progress = SILENT,
    tokenizer_dir: Path | None = None,
    text_field: str = "text",
    split: str = "train",
) -> list[EncodeResult]:
    """Encode each (input, output) pair, one progress task per input; with ``tokenizer_dir`` (where
    ``tokenizer`` was read from), each output's provenance is recorded beside it."""
    results = []
    fingerprint = tokenizer_fingerprint(tokenizer_dir) if tokenizer_dir is not None else None
    for source, output_path in jobs:
        source = source if isinstance(source, TextSource) else open_source(source)
        task = progress.task(f"encode {source.path.name}", total=source.size or None, unit="bytes")
        if tokenizer_dir is not None:  # a record of another tokenizer must not outlive the ids it described
            provenance_path(output_path).unlink(missing_ok=True)
        results.append(encode_file(tokenizer, source, output_path, workers, dtype, errors, on_progress=task.advance,
                                   text_field=text_field, split=split))
        if fingerprint is not None:
            write_provenance(output_path, tokenizer_dir, fingerprint)
    return results
