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
"""

from __future__ import annotations

import io
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lmcli.atomic import atomic_path
from lmcli.errors import LmcliError
from lmcli.tokenizer.chunks import check_text_file, chunk_ranges, read_text
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


def _npy_header(dtype: np.dtype, count: int) -> bytes:
    # numpy pads the header so the length digits can grow: its size does not depend on count.
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (count,)})
    return buf.getvalue()


# Worker-process state: each worker builds the tokenizer once, then encodes chunk after chunk.
_worker: dict = {}


def _init_worker(tokenizer: Tokenizer, path: str, dtype: np.dtype, errors: str) -> None:
    _worker.update(tokenizer=tokenizer, path=path, dtype=dtype, errors=errors)


def _encode_range(byte_range: tuple[int, int]) -> tuple[int, np.ndarray]:
    start, end = byte_range
    text = read_text(_worker["path"], start, end, _worker["errors"])
    return end - start, _worker["tokenizer"].encode_array(text).astype(_worker["dtype"])


def _encoded_chunks(
    tokenizer: Tokenizer, path: Path, ranges: list[tuple[int, int]], dtype: np.dtype, workers: int, errors: str
) -> Iterator[tuple[int, np.ndarray]]:
    """(bytes read, ids) per chunk, in file order; in this process when one worker is enough."""
    init = (tokenizer, str(path), dtype, errors)
    if workers <= 1 or len(ranges) <= 1:
        _init_worker(*init)
        yield from map(_encode_range, ranges)
        return
    with multiprocessing.get_context().Pool(min(workers, len(ranges)), _init_worker, init) as pool:
        yield from pool.imap(_encode_range, ranges)


def encode_file(
    tokenizer: Tokenizer,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    workers: int = 1,
    dtype: str = "auto",
    errors: str = "strict",
    on_progress: Callable[[int], None] | None = None,
    chunk_bytes: int = ENCODE_CHUNK_BYTES,
) -> EncodeResult:
    """Encode a UTF-8 text file to a ``.npy`` of ids (``np.load(..., mmap_mode="r")`` friendly)."""
    input_path, output_path = check_text_file(input_path), Path(output_path)
    if workers < 1:
        raise LmcliError(f"--workers must be at least 1 (got {workers})")
    np_dtype = choose_dtype(tokenizer, dtype)
    started = time.perf_counter()
    ranges = chunk_ranges(input_path, tokenizer.special_tokens, chunk_bytes)
    header_size = len(_npy_header(np_dtype, 0))
    tokens = 0
    with atomic_path(output_path) as tmp:
        with open(tmp, "wb") as f:
            f.seek(header_size)
            for nbytes, ids in _encoded_chunks(tokenizer, input_path, ranges, np_dtype, workers, errors):
                f.write(ids.tobytes())
                tokens += len(ids)
                if on_progress:
                    on_progress(nbytes)
            f.seek(0)
            f.write(_npy_header(np_dtype, tokens))
            f.flush()
            os.fsync(f.fileno())
    return EncodeResult(
        input=str(input_path),
        output=str(output_path),
        tokens=tokens,
        bytes=input_path.stat().st_size,
        seconds=time.perf_counter() - started,
        dtype=np_dtype.name,
        workers=min(workers, max(len(ranges), 1)),
        chunks=len(ranges),
    )


def encode_files(
    tokenizer: Tokenizer,
    jobs: Iterable[tuple[Path, Path]],
    workers: int,
    dtype: str = "auto",
    errors: str = "strict",
    quiet: bool = False,
) -> list[EncodeResult]:
    """Encode each (input, output) pair with a byte progress bar on stderr."""
    from lmcli.console import byte_progress

    results = []
    with byte_progress(quiet) as progress:
        for input_path, output_path in jobs:
            size = input_path.stat().st_size if input_path.is_file() else 0
            task = progress.add_task(f"encode {input_path.name}", total=size)
            results.append(
                encode_file(tokenizer, input_path, output_path, workers, dtype, errors,
                            on_progress=lambda n, task=task: progress.advance(task, n))
            )
    return results


def encode_command(
    input_path: Path | None,
    tokenizer_dir: Path | None,
    special_tokens: list[str] | None,
    out: Path | None,
    workers: int | None,
    dtype: str,
    errors: str,
    workspace: Path | None,
    as_json: bool,
) -> None:
    """``lmcli encode``: default paths from the workspace, encode, print a summary (or JSON)."""
    import json

    from lmcli.console import console
    from lmcli.parallel import available_cores
    from lmcli.tokenizer.train import check_errors_mode
    from lmcli.workspace import Workspace

    workers = workers or available_cores()
    ws = Workspace.resolve(workspace)
    tokenizer_dir = tokenizer_dir or ws.tokenizer_dir
    tokenizer = Tokenizer.from_dir(tokenizer_dir, special_tokens or None)
    if input_path is None:
        if out is not None:
            raise LmcliError("--out needs an INPUT file (without one, both demo splits are encoded into the workspace)")
        inputs = [ws.demo_split("train"), ws.demo_split("valid")]
    else:
        inputs = [input_path]
    # Check everything before the progress bar starts, so bad input fails with one clear line.
    inputs = [check_text_file(p) for p in inputs]
    check_errors_mode(errors)
    choose_dtype(tokenizer, dtype)
    jobs = [(p, out or ws.encoded_path(p)) for p in inputs]
    results = encode_files(tokenizer, jobs, workers, dtype, errors, quiet=as_json)
    if as_json:
        print(json.dumps({"tokenizer": str(tokenizer_dir), "files": [r.as_dict() for r in results]}))
        return
    for r in results:
        console.print(
            f"[bold]{r.input}[/] -> [bold]{r.output}[/]: {r.tokens:,} tokens ({r.dtype}), "
            f"{r.bytes_per_token:.2f} bytes/token, {r.mb_per_s:.1f} MB/s, {r.seconds:.2f} s "
            f"({r.workers} worker{'s' if r.workers != 1 else ''})",
            highlight=False,
        )
