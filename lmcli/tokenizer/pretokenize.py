"""Pre-tokenization: split text into the pieces BPE works inside, exactly as GPT-2 does.

BPE never merges across a pre-token boundary. GPT-2's regex splits text into contractions
('s 't 're ...), letter runs and number runs (each with an optional leading space), runs of
other symbols, and whitespace (a run of whitespace gives up its last character when a word
follows, so the word keeps its leading space). Special tokens such as ``<|endoftext|>`` are cut
out first: the regex runs separately on the text between them, so nothing merges across them.

Training only needs how often each pre-token occurs, so ``count_pretokens`` returns a Counter.
Text is regex-split a bounded slice at a time (cut just before a newline that follows a
non-space character, which is always a pre-token boundary), so the list of pre-tokens in memory
stays small even for a single huge document. A slice that is pure ASCII (most of any English
corpus) goes through an equivalent pattern for the standard library's ``re`` engine, about
1.8x faster than ``regex`` on it: ``\\p{L}`` / ``\\p{N}`` / ``\\s`` restricted to ASCII are
exactly ``[A-Za-z]`` / ``[0-9]`` / ``[\\t\\n\\v\\f\\r ]``.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator

import regex

GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_PATTERN = regex.compile(GPT2_SPLIT)

MAX_PIECE_CHARS = 1 << 13  # small enough that one odd character leaves its neighbours on the ASCII path

# The same split for ASCII-only text. The letter alternative comes first because it matches
# most often; it cannot start where the contraction alternative (an apostrophe) does.
_WS = r"\t\n\v\f\r "
GPT2_ASCII_PATTERN = re.compile(
    rf"""[ ]?[A-Za-z]+|'(?:[sdmt]|ll|ve|re)| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
)


def special_token_pattern(special_tokens: Iterable[str]) -> re.Pattern | None:
    """A pattern matching any special token, longest first (so one that contains another wins)."""
    tokens = sorted({t for t in special_tokens if t}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None


def split_on_special_tokens(text: str, special: re.Pattern | None) -> Iterator[str]:
    """The pieces of text between special tokens (the tokens themselves are dropped)."""
    if special is None:
        yield text
    else:
        yield from special.split(text)


def bounded_pieces(text: str, max_chars: int = MAX_PIECE_CHARS) -> Iterator[str]:
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


def pretokens(text: str) -> list[str]:
    """GPT-2 pre-tokens of text that holds no special token."""
    return (GPT2_ASCII_PATTERN if text.isascii() else GPT2_PATTERN).findall(text)


def count_pretokens(text: str, special: re.Pattern | None, counts: Counter[str] | None = None) -> Counter[str]:
    """How often each pre-token occurs in text, never spanning a special token (added to
    ``counts`` when given, so one Counter can gather many texts)."""
    counts = Counter() if counts is None else counts
    for piece in split_on_special_tokens(text, special):
        for part in bounded_pieces(piece):
            counts.update(pretokens(part))
    return counts
