"""Special tokens: strings such as ``<|endoftext|>`` that are one token each and never merged across.

Documents in a corpus are separated by ``<|endoftext|>`` (``END_OF_TEXT``, the default special
token everywhere in lmcli). Before pre-tokenization a text is cut at its special tokens, longest
first (so one that contains another wins), and the pieces between them are tokenized on their
own. The same pattern works on decoded text and on raw bytes (file chunking), and a cut of a
text must never fall inside a special token (``inside_special``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import AnyStr

from lmcli.errors import LmcliError

END_OF_TEXT = "<|endoftext|>"


def check_special_tokens(special_tokens: Iterable[str]) -> list[str]:
    """The special tokens without duplicates (first occurrence kept); an empty one is an error."""
    tokens = list(dict.fromkeys(special_tokens))
    if "" in tokens:
        raise LmcliError("a special token cannot be empty")
    return tokens


def special_token_pattern(special_tokens: Iterable[str]) -> re.Pattern[str] | None:
    """A pattern matching any special token, longest first (so one that contains another wins).

    The alternatives are one group, so that ``pattern.split`` also returns the tokens it cuts at."""
    tokens = sorted({t for t in special_tokens if t}, key=len, reverse=True)
    return re.compile("(" + "|".join(map(re.escape, tokens)) + ")") if tokens else None


def special_bytes_pattern(special_tokens: Iterable[str]) -> re.Pattern[bytes] | None:
    """``special_token_pattern`` for UTF-8 bytes."""
    pattern = special_token_pattern(special_tokens)
    return re.compile(pattern.pattern.encode("utf-8")) if pattern else None


def split_at_special_tokens(text: str, pattern: re.Pattern[str] | None) -> list[str]:
    """``[text, special, text, ..., special, text]``: the pieces between special tokens and the tokens."""
    return pattern.split(text) if pattern is not None else [text]


def inside_special(text: AnyStr, cut: int, specials: Iterable[AnyStr]) -> bool:
    """Whether an occurrence of a special token contains both text[cut - 1] and text[cut]."""
    return any(text.find(s, max(0, cut - len(s) + 1), cut - 1 + len(s)) != -1 for s in specials)
