"""Where text can be cut without changing its tokens: file chunks, stream flushes, bounded pieces.

A multi-GB corpus cannot be read at once, and it cannot be cut anywhere either: a cut inside a
word or a run of whitespace would change how the text pre-tokenizes. Each cut is therefore
placed where pre-tokenization would split anyway, so processing the chunks one by one (or in
parallel) gives exactly the result of processing the whole file:

1. at the start of the first special token at or after the target offset (documents are
   separated by ``<|endoftext|>``, and nothing spans a special token), else
2. between a non-whitespace character and an ASCII whitespace character: GPT-2 pre-tokens
   never run from a non-space character into whitespace, so that is always a boundary
   (unless a special token spans it, which is checked). The character before may be any
   printable ASCII one or a whole non-ASCII one that is not whitespace (Japanese "。" before
   a newline), so text without any ASCII gets cuts too.

Both kinds of cut fall on UTF-8 character boundaries, so each chunk decodes on its own and a
decoding error is reported at its byte offset in the file.

API: ``chunk_ranges(path, special_tokens, chunk_bytes)`` lists ``(start, end)`` byte ranges
covering the file; ``read_text(path, start, end, errors)`` reads and decodes one of them
(``read_range`` and ``decode_utf8`` do the two steps apart, e.g. to decode one document at a
time).

The same rule cuts decoded text: ``last_safe_cut`` finds where a stream of text can be flushed
(after a non-whitespace character that GPT-2 whitespace follows, outside special tokens), and
``bounded_pieces`` cuts one huge document before a newline that follows a non-space character.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from lmcli.errors import LmcliError
from lmcli.tokenizer.special_tokens import inside_special, special_bytes_pattern

DEFAULT_CHUNK_BYTES = 4 << 20
SCAN_BYTES = 1 << 16  # how far to look ahead for a cut at a time

# A printable ASCII byte or the last byte of a multi-byte character, followed by ASCII
# whitespace: a cut candidate (the multi-byte character is checked by _ends_non_space).
_SAFE_CUT = re.compile(rb"[\x21-\x7e\x80-\xbf](?=[\t\n\v\f\r ])")
# The rule for decoded text: a non-whitespace character that whitespace follows (GPT-2's \s,
# which does not include \x1c-\x1f), a pre-token boundary whatever text follows.
_TEXT_CUT = re.compile(r"\S(?=[^\S\x1c-\x1f])")
TEXT_CUT_WINDOW = 1 << 16  # how far back from the end of a text last_safe_cut looks


def chunk_ranges(path: str | os.PathLike, special_tokens: Iterable[str], chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> list[tuple[int, int]]:
    """Byte ranges of roughly ``chunk_bytes`` each that cover the file and cut only at boundaries."""
    if chunk_bytes < 1:
        raise ValueError("chunk_bytes must be positive")
    specials = _special_bytes(special_tokens)
    special = special_bytes_pattern(special_tokens)
    size = Path(path).stat().st_size
    cuts = [0]
    with open(path, "rb") as f:
        while size - cuts[-1] > chunk_bytes:
            cut = _next_cut(f, cuts[-1] + chunk_bytes, size, special, specials)
            if cut >= size:
                break
            cuts.append(cut)
    cuts.append(size)
    return list(zip(cuts, cuts[1:]))


def _next_cut(f, target: int, size: int, special: re.Pattern[bytes] | None, specials: list[bytes]) -> int:
    """A boundary at or after ``target``, preferring special tokens (``size`` when there is none)."""
    longest = max(map(len, specials), default=1)
    pos = target
    while pos < size:
        # Read a little before pos too, so a special token straddling pos is seen whole.
        start = max(0, pos - longest + 1)
        f.seek(start)
        window = f.read(pos - start + SCAN_BYTES + longest)
        cut = _cut_in_window(window, pos - start, special, specials)
        if cut is not None:
            return start + cut
        pos += SCAN_BYTES
    return size


def _cut_in_window(window: bytes, lo: int, special: re.Pattern | None, specials: list[bytes]) -> int | None:
    """The first special token start at or after ``lo`` in the window, else the first safe cut."""
    starts = (m.start() for m in special.finditer(window, lo)) if special else ()
    safe = (m.end() for m in _SAFE_CUT.finditer(window, max(lo - 1, 0)) if _ends_non_space(window, m.end()))
    return next((c for c in itertools.chain(starts, safe) if not inside_special(window, c, specials)), None)


def _ends_non_space(window: bytes, cut: int) -> bool:
    """Whether the character that ends at byte ``cut`` is whole in the window and not whitespace
    (``str.isspace`` covers every character GPT-2's ``\\s`` matches, and \\x1c-\\x1f besides)."""
    if window[cut - 1] < 0x80:
        return True
    start = cut - 1
    while start > 0 and cut - start < 4 and 0x80 <= window[start] < 0xC0:
        start -= 1
    char = window[start:cut].decode("utf-8", errors="ignore")
    return len(char) == 1 and len(char.encode("utf-8")) == cut - start and not char.isspace()


def read_range(path: str | os.PathLike, start: int, end: int) -> bytes:
    """Bytes ``start:end`` of the file."""
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def decode_utf8(data: bytes, path: str | os.PathLike, offset: int, errors: str = "strict") -> str:
    """``data`` (found at byte ``offset`` of the file) decoded; an error names its file offset."""
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as e:
        raise LmcliError(
            f"{path} is not valid UTF-8 at byte offset {offset + e.start} ({e.reason}); "
            "pass --errors replace to substitute U+FFFD for invalid bytes"
        ) from None


def read_text(path: str | os.PathLike, start: int, end: int, errors: str = "strict") -> str:
    """Bytes ``start:end`` of the file decoded as UTF-8; a decoding error names its file offset."""
    return decode_utf8(read_range(path, start, end), path, start, errors)


def _special_bytes(special_tokens: Iterable[str]) -> list[bytes]:
    """The distinct non-empty special tokens as UTF-8 bytes, longest first."""
    return sorted({t.encode("utf-8") for t in special_tokens if t}, key=len, reverse=True)


def check_text_file(path: str | os.PathLike) -> Path:
    """``path`` as a Path, after checking it names a readable regular file (one-line errors)."""
    path = Path(path).expanduser()
    if not path.exists():
        raise LmcliError(f"input file {path} does not exist")
    if path.is_dir():
        raise LmcliError(f"input {path} is a directory, not a text file")
    if not os.access(path, os.R_OK):
        raise LmcliError(f"input file {path} is not readable (permission denied)")
    return path


def last_safe_cut(text: str, special_tokens: list[str], window: int = TEXT_CUT_WINDOW) -> int:
    """The last position in the final ``window`` characters of ``text`` where it can be split
    whatever follows it (0 if there is none yet): never where a special token could still
    complete or inside one."""
    end = len(text) - max(map(len, special_tokens), default=0)
    lo = max(0, end - window)
    for m in reversed(list(_TEXT_CUT.finditer(text, lo, max(end, 0)))):
        if not inside_special(text, m.end(), special_tokens):
            return m.end()
    return 0


def bounded_pieces(text: str, max_chars: int) -> Iterator[str]:
    """Text cut into pieces of about ``max_chars`` at pre-token boundaries (a newline after \\S)."""
    start = 0
    while len(text) - start > max_chars:
        cut = text.find("\n", start + max_chars)
        # str.isspace() is true for every character \s matches, so "not isspace" means \S.
        while cut != -1 and text[cut - 1].isspace():
            cut = text.find("\n", cut + 1)
        if cut == -1:
            break
        yield text[start:cut]
        start = cut
    yield text[start:]
