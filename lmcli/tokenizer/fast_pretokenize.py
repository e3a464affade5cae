"""GPT-2 pre-tokenization with array operations: where each pre-token starts, for a whole text at once.

The pre-tokens equal those of ``lmcli.tokenizer.pretokenize.pretokens`` (GPT-2's regex).

GPT-2's pattern ``'(?:[sdmt]|ll|ve|re)| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+``
scanned left to right cuts text where the character class changes (letters, numbers, whitespace,
everything else), with three exceptions, each a local rule that numpy can apply to every
position in a few passes instead of one regex step per pre-token:

1. A run of whitespace followed by a non-space character gives up its last character: that
   character starts a pre-token of its own (``\\s+(?!\\S)`` backs off one), and if it is a
   plain space it joins the word after it (`` ?\\p{L}+`` and its siblings), so no cut follows it.
2. A contraction (``'s 'd 'm 't 'll 've 're``) is one pre-token when its apostrophe starts
   a match: after a letter, a number, the start of the text or whitespace that is not a
   joining space. The letters after it then start a new pre-token.
3. A barrier (where a special token was cut out) is a pre-token of its own that nothing
   crosses: the text on each side is pre-tokenized as if it ended or began there.

``pretokenize_segments`` applies this to the text between a text's special tokens and returns
each pre-token's byte range in the UTF-8 text. Character classes come from the ``regex``
module itself (one lookup per distinct non-ASCII character), so they are exactly the
``\\p{L}``, ``\\p{N}`` and ``\\s`` of GPT-2's pattern.
The tests compare ``pretoken_starts`` with the regex on random and real text.
"""

from __future__ import annotations

import functools

import numpy as np
import regex

from lmcli.tokenizer.fast_pretoken_ids import padded_bytes

WHITESPACE, LETTER, NUMBER, OTHER, BARRIER = range(5)
_BARRIER_CHAR = "\x00"  # stands for a special token in pretokenize_segments (its class is set to BARRIER)
SPACE, APOSTROPHE = ord(" "), ord("'")


@functools.cache
def class_of(code_point: int) -> int:
    """The class of one character in GPT-2's pattern (``regex`` module semantics)."""
    char = chr(code_point)
    for pattern, cls in ((r"\s", WHITESPACE), (r"\p{L}", LETTER), (r"\p{N}", NUMBER)):
        if regex.match(pattern, char):
            return cls
    return OTHER


_ASCII_CLASSES = np.array([class_of(c) for c in range(128)], dtype=np.uint8)


def character_classes(codes: np.ndarray) -> np.ndarray:
    """The class of each code point (uint8); non-ASCII ones are classified once per distinct character."""
    if len(codes) == 0 or codes.max() < 128:
        return _ASCII_CLASSES[codes]
    classes = np.empty(len(codes), dtype=np.uint8)
    narrow = codes < 128
    classes[narrow] = _ASCII_CLASSES[codes[narrow]]
    distinct, which = np.unique(codes[~narrow], return_inverse=True)
    classes[~narrow] = np.array([class_of(c) for c in distinct.tolist()], dtype=np.uint8)[which]
    return classes


def pretoken_starts(codes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Positions where GPT-2's pre-tokens start in the text ``codes`` (code points) of ``classes``."""
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(classes[1:], classes[:-1], out=starts[1:])
    _split_whitespace_runs(codes, classes, starts)
    _join_contractions(codes, classes, starts)
    barriers = np.flatnonzero(classes == BARRIER)
    starts[barriers] = True
    starts[barriers[barriers + 1 < n] + 1] = True  # two barriers in a row are two pre-tokens
    return np.flatnonzero(starts)


def _split_whitespace_runs(codes: np.ndarray, classes: np.ndarray, starts: np.ndarray) -> None:
    """Rule 1: cut before the last character of a run of 2+ whitespace characters that a
    non-space character follows; a space in that last place joins the next pre-token."""
    space = classes == WHITESPACE
    follower = classes[1:]
    after = np.flatnonzero(space[:-1] & (follower != WHITESPACE) & (follower != BARRIER)) + 1
    long_run = (after >= 2) & space[np.maximum(after - 2, 0)]
    starts[after[long_run] - 1] = True
    starts[after[codes[after - 1] == SPACE]] = False


def _join_contractions(codes: np.ndarray, classes: np.ndarray, starts: np.ndarray) -> None:
    """Rule 2: an apostrophe that starts a match and the contraction letters after it are one pre-token."""
    at = np.flatnonzero(codes == APOSTROPHE)
    if len(at) == 0:
        return
    before = np.maximum(at - 1, 0)
    starts_match = (at == 0) | ((classes[before] != OTHER) & (codes[before] != SPACE))
    padded = np.concatenate([codes, np.zeros(2, dtype=codes.dtype)])
    first, second = padded[at + 1], padded[at + 2]
    one_letter = np.isin(first, [ord(c) for c in "sdmt"])
    two_letters = (
        ((first == ord("l")) & (second == ord("l")))
        | ((first == ord("v")) & (second == ord("e")))
        | ((first == ord("r")) & (second == ord("e")))
    )
    found = starts_match & (one_letter | two_letters)
    at, length = at[found], np.where(one_letter[found], 2, 3)
    starts[at + 1] = False
    starts[(at + 2)[length == 3]] = False
    end = at + length
    starts[end[end < len(codes)]] = True


def pretokenize_segments(segments: list[str]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pre-tokens of the segments of a text (the text between its special tokens).

    The segments are joined with a barrier character in place of each special token. Returns
    the joined UTF-8 bytes (also as a padded array for ``packed_keys``), each pre-token's byte
    range (starts, ends) and whether it is a barrier, i.e. a special token.
    """
    joined = _BARRIER_CHAR.join(segments)
    raw = joined.encode("utf-8")
    data = padded_bytes(raw)
    ascii_only = len(raw) == len(joined)
    codes = data if ascii_only else np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
    classes = character_classes(codes)
    classes[np.cumsum([len(s) + 1 for s in segments[:-1]], dtype=np.int64) - 1] = BARRIER
    starts = pretoken_starts(codes, classes)
    is_special = classes[starts] == BARRIER
    if not ascii_only:  # code point positions -> byte positions: add the extra bytes of the wide characters before
        wide = np.flatnonzero(codes >= 0x80)
        extra = np.cumsum(1 + (codes[wide] >= 0x800) + (codes[wide] >= 0x10000))
        starts = starts + np.concatenate([[0], extra])[np.searchsorted(wide, starts)]
    return raw, data, starts, np.append(starts[1:], len(raw)), is_special
