"""Where text comes from: plain and compressed text, JSON lines, parquet and Hugging Face datasets.

Every command that reads text (``train-bpe``, ``encode``, ``stats``) takes any of these, several
at once and as glob patterns (``expand_inputs``):

- plain text (any file without one of the suffixes below): read by byte range
  (``lmcli.tokenizer.chunks``), so its chunks are spread over worker processes;
- compressed text, ``.gz`` / ``.zst`` / ``.xz``: decompressed and decoded a megabyte at a time and
  cut where a cut cannot change the tokens (``chunks.last_safe_cut``), never whole in memory or
  on disk;
- records, one document each, the text in a field (``--text-field``, default ``text``): JSON
  lines ``.jsonl`` (also ``.jsonl.gz`` / ``.jsonl.zst`` / ``.jsonl.xz``), parquet ``.parquet``
  (read a batch of rows at a time, the one column only), a directory written by
  ``datasets.save_to_disk`` or holding such files, and ``hf:OWNER/NAME`` (a hub dataset, streamed
  by the ``datasets`` library, which honours ``HF_ENDPOINT``, ``HF_HOME`` and tokens).

Each record's text is followed by the end-of-text token, as each document of the CS336 text files
is followed by ``<|endoftext|>``: records t1, t2, ... give exactly the tokens of the text
``t1<|endoftext|>t2<|endoftext|>...``. Streamed sources yield ``Piece``s: text that ends at a
token boundary, with the input bytes read so far (for progress bars). A piece of JSON lines holds
the lines' bytes and is parsed where its text is asked for, in the worker process that tokenizes
it: the one process that reads a file then only decompresses it and cuts it at newlines, and the
parsing is spread over the workers (a 1 GB .jsonl.zst's encode went from 1.56x the time of the
same text as .txt to 1.12x on 2 cores).

Bad input is one line naming the file and, where it applies, the line or row: invalid JSON, a
missing field, a value that is not a string, a truncated gzip/zstd/xz stream, invalid UTF-8, a
file that is not parquet. ``pyarrow``, ``zstandard`` and ``datasets`` are the ``data`` extra.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import lzma
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from lmcli.errors import LmcliError
from lmcli.extras import optional_module
from lmcli.tokenizer.chunks import check_text_file, last_safe_cut

END_OF_TEXT = "<|endoftext|>"  # follows every record, as it follows every document of the CS336 files
COMPRESSIONS = (".gz", ".zst", ".xz")
RECORD_SUFFIXES = (".jsonl", ".parquet")
HUB_PREFIX = "hf:"
PIECE_CHARS = 1 << 20  # text handed on at once (a worker's unit of work)
READ_BYTES = 1 << 20  # compressed bytes read at once
PARQUET_BATCH_ROWS = 256  # rows of a parquet file converted to Python strings at once


@dataclass(frozen=True)
class JsonLines:
    """Complete lines of a JSON-lines file, parsed only when their text is asked for: in the worker
    process that tokenizes them, so the one process reading the file does no more than decompress."""

    path: Path
    first_line: int  # the number of the first line, for error messages
    data: bytes
    text_field: str
    errors: str

    def text(self) -> str:
        """Each line's record text followed by END_OF_TEXT; blank lines are skipped."""
        parts = []
        for number, line in enumerate(self.data.split(b"\n"), self.first_line):
            parts += (_jsonl_text(self.path, line, number, self.text_field, self.errors), END_OF_TEXT) if line.strip() else ()
        return "".join(parts)


@dataclass(frozen=True)
class Piece:
    content: str | JsonLines  # ends where a cut cannot change the tokens
    bytes_read: int  # input bytes read so far (compressed bytes for a compressed file)

    @property
    def text(self) -> str:
        return self.content if isinstance(self.content, str) else self.content.text()


@dataclass(frozen=True)
class TextSource:
    """One input: a path (or hub id) and how to read it."""

    name: str
    kind: str  # "text" | "compressed" | "jsonl" | "parquet" | "dataset" | "hub"
    size: int  # bytes on disk (0 for the hub)

    @property
    def plain(self) -> bool:
        """Read by byte range (in parallel chunks), not streamed."""
        return self.kind == "text"

    @property
    def path(self) -> Path:
        return Path(self.name)

    @property
    def stem(self) -> str:
        """The name without its format and compression suffixes (``a.jsonl.zst`` -> ``a``)."""
        name = self.name.removeprefix(HUB_PREFIX).rstrip("/").replace("/", "-") if self.kind == "hub" else self.path.name
        for suffix in (*COMPRESSIONS, *RECORD_SUFFIXES, ".txt", ".arrow"):
            name = name.removesuffix(suffix)
        return name


def open_source(name: str | os.PathLike) -> TextSource:
    """The source ``name`` names, checked to exist and be readable (one-line errors)."""
    text = str(name)
    if text.startswith(HUB_PREFIX):
        if not text[len(HUB_PREFIX):].strip("/"):
            raise LmcliError(f"{text!r} names no dataset: write hf:OWNER/NAME")
        return TextSource(text, "hub", 0)
    path = Path(text).expanduser()
    if path.is_dir():
        if not dataset_files(path) and not (path / "state.json").is_file():
            raise LmcliError(f"input {path} is a directory without a saved dataset or .parquet/.jsonl files")
        return TextSource(str(path), "dataset", sum(f.stat().st_size for f in path.rglob("*") if f.is_file()))
    path = check_text_file(path)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if ".jsonl" in suffixes:
        kind = "jsonl"
    elif suffixes[-1:] == [".parquet"]:
        kind = "parquet"
    elif suffixes[-1:] and suffixes[-1] in COMPRESSIONS:
        kind = "compressed"
    else:
        kind = "text"
    return TextSource(str(path), kind, path.stat().st_size)


def expand_inputs(names: Iterable[str | os.PathLike]) -> list[TextSource]:
    """Every input, glob patterns expanded (sorted); a pattern that matches nothing is an error."""
    sources = []
    for name in names:
        text = str(name)
        if glob.has_magic(text) and not text.startswith(HUB_PREFIX):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise LmcliError(f"{text} matches no file")
            sources += [open_source(m) for m in matches]
        else:
            sources.append(open_source(text))
    return sources


def dataset_files(directory: Path) -> list[Path]:
    """The record files of a dataset folder, in name order: names ending .parquet or .jsonl[.gz|.zst|.xz].

    Hidden folders (tools' bookkeeping, such as huggingface_hub's ``.cache``) and files whose
    name goes on past those endings (a download's ``.part``) are not records.
    """
    record_endings = (".parquet", ".jsonl", *(f".jsonl{c}" for c in COMPRESSIONS))
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and p.name.lower().endswith(record_endings)
        and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def pieces(source: TextSource, special_tokens: list[str], text_field: str = "text", errors: str = "strict",
           split: str = "train") -> Iterator[Piece]:
    """The text of a streamed source, a piece of about PIECE_CHARS at a time."""
    if source.kind in ("compressed", "text"):  # (a plain file is read by byte range instead, but streams as well)
        return _compressed_text(source.path, special_tokens, errors)
    if source.kind == "jsonl":
        return _jsonl_pieces(source.path, text_field, errors)
    if source.kind == "parquet":
        return _joined(_parquet_records(source.path, text_field))
    if source.kind == "dataset":
        return _dataset_pieces(source.path, text_field, errors)
    return _joined(_hub_records(source.name, text_field, split))


def one_stream(sources: list[TextSource], special_tokens: list[str], text_field: str = "text", errors: str = "strict",
               split: str = "train") -> Iterator[Piece]:
    """The pieces of several streamed sources one after another (``bytes_read`` counted over all)."""
    done = 0
    for source in sources:
        last = 0
        for piece in pieces(source, special_tokens, text_field, errors, split):
            yield Piece(piece.content, done + piece.bytes_read)
            last = piece.bytes_read
        done += source.size or last


def _joined(records: Iterable[tuple[str, int]]) -> Iterator[Piece]:
    """Records (text, bytes read) joined into pieces, each record followed by END_OF_TEXT."""
    batch, size, read = [], 0, 0
    for text, read in records:
        batch += (text, END_OF_TEXT)
        size += len(text) + len(END_OF_TEXT)
        if size >= PIECE_CHARS:
            yield Piece("".join(batch), read)
            batch, size = [], 0
    if batch:
        yield Piece("".join(batch), read)


# ---------------------------------------------------------------- compressed text


def _decompressed_blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """(decompressed block, compressed bytes read so far) of ``path``, decompressed as its suffix
    says (as they are for any other suffix); a damaged or truncated stream is one line."""
    suffix = path.suffix.lower()
    with open(path, "rb") as raw:
        if suffix == ".zst":
            yield from _zstd_blocks(raw, path)
            return
        reader = gzip.GzipFile(fileobj=raw, mode="rb") if suffix == ".gz" else lzma.LZMAFile(raw) if suffix == ".xz" else raw
        while True:
            try:
                block = reader.read(READ_BYTES)
            except (EOFError, OSError, zlib.error, lzma.LZMAError) as e:
                raise LmcliError(f"{path} is not a complete {suffix} stream ({e})") from None
            if not block:
                return
            yield block, raw.tell()


def _zstd_blocks(raw: IO[bytes], path: Path) -> Iterator[tuple[bytes, int]]:
    """The frames of a .zst file one after another (zstd -T and pzstd write several); zstandard's own
    reader ends a truncated frame silently, so each frame is checked to be complete."""
    zstandard = optional_module("zstandard", "data", f"reading {path.name}")
    decompressor = zstandard.ZstdDecompressor()

    def new_frame():  # output in 1 MB steps: 1.6x faster than the default 128 KB on a 100 MB file
        return decompressor.decompressobj(write_size=READ_BYTES)

    frame, fed = new_frame(), False
    try:
        while chunk := raw.read(READ_BYTES):
            while chunk:
                fed = True
                if out := frame.decompress(chunk):
                    yield out, raw.tell()
                chunk = b""
                if frame.eof:  # the frame ended: what follows starts the next one
                    chunk, frame, fed = frame.unused_data, new_frame(), False
    except zstandard.ZstdError as e:
        raise LmcliError(f"{path} is not a complete .zst stream ({e})") from None
    if fed and not frame.eof:
        raise LmcliError(f"{path} is not a complete .zst stream (it ends inside a frame: truncated?)")


def _decoded(path: Path, errors: str) -> Iterator[tuple[str, int]]:
    """(decoded text, input bytes read so far); invalid UTF-8 names its offset in the decompressed text."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    done = read = 0
    for block, read in _decompressed_blocks(path):
        try:
            yield decoder.decode(block), read
        except UnicodeDecodeError as e:
            raise LmcliError(f"{path}: invalid UTF-8 at byte {done + e.start:,} of the decompressed text "
                             "(--errors replace accepts it)") from None
        done += len(block)
    try:
        yield decoder.decode(b"", final=True), read
    except UnicodeDecodeError:
        raise LmcliError(f"{path}: the text ends inside a UTF-8 character (truncated?)") from None


def _compressed_text(path: Path, special_tokens: list[str], errors: str) -> Iterator[Piece]:
    """The decoded text in pieces cut where a cut cannot change the tokens."""
    pending, read = "", 0
    for text, read in _decoded(path, errors):
        pending += text
        while len(pending) >= PIECE_CHARS:
            # the last boundary in the first PIECE_CHARS (its next character is there too), else anywhere
            cut = last_safe_cut(pending[:PIECE_CHARS], special_tokens) or last_safe_cut(pending, special_tokens)
            if not cut:
                break  # no boundary yet (one enormous word): read on
            yield Piece(pending[:cut], read)
            pending = pending[cut:]
    if pending:
        yield Piece(pending, read)


# ---------------------------------------------------------------- records


def _field_text(record, text_field: str, where: str) -> str:
    if not isinstance(record, dict):
        raise LmcliError(f"{where} is a JSON {type(record).__name__}, not an object with a {text_field!r} field")
    if text_field not in record:
        raise LmcliError(f"{where} has no field {text_field!r} (it has {', '.join(map(repr, list(record)[:8])) or 'none'}; "
                         "choose one with --text-field)")
    value = record[text_field]
    if not isinstance(value, str):
        raise LmcliError(f"{where}: field {text_field!r} is {'null' if value is None else 'a ' + type(value).__name__}, not a string")
    return value


def _jsonl_pieces(path: Path, text_field: str, errors: str) -> Iterator[Piece]:
    """The file's complete lines, about READ_BYTES of them at a time (a longer line: whole)."""
    pending, first_line = b"", 1
    for block, read in _decompressed_blocks(path):
        data, start = pending + block, 0
        while (end := _lines_end(data, start)) >= 0:
            yield Piece(JsonLines(path, first_line, data[start:end], text_field, errors), read)
            first_line += data.count(b"\n", start, end + 1)
            start = end + 1
        pending = data[start:]
    if pending:
        yield Piece(JsonLines(path, first_line, pending, text_field, errors), path.stat().st_size)


def _lines_end(data: bytes, start: int) -> int:
    """Where the lines of the next piece from ``start`` end: the first newline READ_BYTES on, else the last (-1: none)."""
    end = data.find(b"\n", start + READ_BYTES)
    return end if end >= 0 else data.rfind(b"\n", start)


def _jsonl_text(path: Path, line: bytes, number: int, text_field: str, errors: str) -> str:
    try:
        record = json.loads(line.decode("utf-8", errors))
    except UnicodeDecodeError:
        raise LmcliError(f"{path} line {number:,}: invalid UTF-8 (--errors replace accepts it)") from None
    except ValueError as e:
        raise LmcliError(f"{path} line {number:,} is not valid JSON ({e})") from None
    return _field_text(record, text_field, f"{path} line {number:,}")


def _parquet_records(path: Path, text_field: str) -> Iterator[tuple[str, int]]:
    """(text, bytes read) of every row, PARQUET_BATCH_ROWS at a time (never a whole row group:
    one may hold the whole file), reading the one column."""
    pq = optional_module("pyarrow.parquet", "data", f"reading {path.name}")
    pa = optional_module("pyarrow", "data", f"reading {path.name}")
    try:
        # read the column a megabyte at a time: by default a whole column chunk (here 238 MB of a 1 GB file) is read at once
        parquet = pq.ParquetFile(path, buffer_size=READ_BYTES, pre_buffer=False)
    except (pa.ArrowInvalid, OSError) as e:
        raise LmcliError(f"{path} is not a parquet file ({e})") from None
    names = parquet.schema_arrow.names
    if text_field not in names:
        raise LmcliError(f"{path} has no column {text_field!r} (it has {', '.join(map(repr, names[:8]))}; "
                         "choose one with --text-field)")
    column_type = parquet.schema_arrow.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)):
        raise LmcliError(f"{path}: column {text_field!r} holds {column_type}, not strings")
    row, rows, size = 0, parquet.metadata.num_rows, path.stat().st_size
    batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=[text_field])
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowInvalid, OSError) as e:
            raise LmcliError(f"{path}: the rows after row {row:,} cannot be read ({e})") from None
        if batch is None:
            return
        for text in batch.column(0).to_pylist():
            row += 1
            if text is None:
                raise LmcliError(f"{path} row {row:,}: field {text_field!r} is null, not a string")
            yield text, size * row // rows


def _dataset_pieces(directory: Path, text_field: str, errors: str) -> Iterator[Piece]:
    """A ``save_to_disk`` dataset's records, or those of the folder's .parquet/.jsonl files in name order."""
    if (directory / "state.json").is_file():
        datasets = optional_module("datasets", "data", f"reading the dataset {directory}")
        try:
            dataset = datasets.load_from_disk(str(directory))
        except (OSError, ValueError) as e:
            raise LmcliError(f"{directory} is not a readable saved dataset ({e})") from None
        if isinstance(dataset, datasets.DatasetDict):
            raise LmcliError(f"{directory} holds the splits {', '.join(dataset)}: give one split's directory")
        yield from _joined(_dataset_rows(dataset, text_field, str(directory)))
        return
    yield from one_stream([open_source(path) for path in dataset_files(directory)], [], text_field, errors)


def _dataset_rows(dataset, text_field: str, where: str) -> Iterator[tuple[str, int]]:
    """The text field of every row of a ``datasets`` dataset (bytes read: not known, 0)."""
    columns = getattr(dataset, "column_names", None)
    if columns is not None and text_field not in columns:
        raise LmcliError(f"{where} has no column {text_field!r} (it has {', '.join(map(repr, columns[:8]))}; "
                         "choose one with --text-field)")
    for row, record in enumerate(dataset, 1):
        yield _field_text(record, text_field, f"{where} row {row:,}"), 0


def _hub_records(name: str, text_field: str, split: str) -> Iterator[tuple[str, int]]:
    """A hub dataset's split, streamed (nothing downloaded whole)."""
    datasets = optional_module("datasets", "data", f"reading {name}")
    datasets.logging.set_verbosity_error()  # their retry warnings would add lines to the one error below
    optional_module("huggingface_hub", "data", f"reading {name}").utils.logging.set_verbosity_error()
    repo = name[len(HUB_PREFIX):]
    try:
        dataset = datasets.load_dataset(repo, split=split, streaming=True)
    except Exception as e:  # the hub's errors are many (network, authentication, missing split): one line each
        raise LmcliError(f"{name}: cannot stream split {split!r} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    yield from _dataset_rows(dataset, text_field, name)
