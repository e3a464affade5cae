"""Pre-tokenization: split text into the pieces BPE works inside, exactly as GPT-2 does.

BPE never merges across a pre-token boundary. GPT-2's regex splits text into contractions
('s 't 're ...), letter runs and number runs (each with an optional leading space), runs of
other symbols, and whitespace (a run of whitespace gives up its last character when a word
follows, so the word keeps its leading space). Special tokens such as ``<|endoftext|>`` are cut
out first: the regex runs separately on the text between them, so nothing merges across them.

``pretokens`` applies the regex (used for short texts; long ones go through the equivalent
array rules of ``lmcli.tokenizer.pretokenize_arrays``). A text that is pure ASCII goes through
an equivalent pattern for the standard library's ``re`` engine, about 1.8x faster than
``regex`` on it: ``\\p{L}`` / ``\\p{N}`` / ``\\s`` restricted to ASCII are exactly
``[A-Za-z]`` / ``[0-9]`` / ``[\\t\\n\\v\\f\\r ]``. ``bounded_pieces`` cuts a huge document
where a cut cannot change its pre-tokens (just before a newline that follows a non-space
character), so it can be processed a bounded slice at a time.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import regex

GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_PATTERN = regex.compile(GPT2_SPLIT)


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


def pretokens(text: str) -> list[str]:
    """GPT-2 pre-tokens of text that holds no special token."""
    return (GPT2_ASCII_PATTERN if text.isascii() else GPT2_PATTERN).findall(text)
