"""The fast encoder behind ``Tokenizer.encode``: the ids of ``lmcli.tokenizer.reference.encode``, fast.

The reference pre-tokenizes with GPT-2's regex and runs BPE on every pre-token, one Python step
at a time. Natural text repeats a few hundred thousand distinct pre-tokens, so this encoder
runs BPE once per distinct pre-token and keeps the result in a cache; everything else works on
whole arrays instead of one Python operation per pre-token:

- the text (with a barrier character where each special token was) becomes an array of code
  points, ``lmcli.tokenizer.fast_pretokenize`` finds where every pre-token starts, and
  ``lmcli.tokenizer.fast_pretoken_ids`` maps each pre-token to its cache entry;
- BPE runs only for pre-tokens never seen before, all of a text's new ones together
  (``lmcli.tokenizer.fast_bpe``); the ids of the text are then one gather from the cache.

On the 20 MB bench corpus one process takes about 0.9 s cold, against 1.3 s for tiktoken on
one thread. A short text (a prompt, one document) skips the arrays, whose set-up costs a fixed
~0.1 ms: it goes through GPT-2's regex (an equivalent ``re`` pattern when it is pure ASCII)
and a dict from pre-token to packed ids. A long text is encoded a piece of ~2M characters at a
time, cut where a cut cannot change the result, so the working arrays stay small. Both caches
start over past a bound, so memory stays bounded on any corpus.
"""

from __future__ import annotations

import re

import numpy as np

from lmcli.errors import LmcliError
from lmcli.tokenizer.chunks import last_safe_cut
from lmcli.tokenizer.fast_bpe import MergeTable, merge_words
from lmcli.tokenizer.fast_pretoken_ids import MAX_PACKED_BYTES, PretokenIds, byte_slices, packed_keys
from lmcli.tokenizer.fast_pretokenize import pretokenize_segments
from lmcli.tokenizer.files import token_to_str
from lmcli.tokenizer.pretokenize import GPT2_PATTERN
from lmcli.tokenizer.special_tokens import special_token_pattern, split_at_special_tokens

SMALL_TEXT = 3072  # characters; shorter texts take the dict path (measured break-even: ~3,000)
PIECE_CHARS = 1 << 21  # the array path's piece size (its arrays take ~50 bytes per character)
# The caches start over past this many pre-tokens (about 100 MB and 40 MB).
CACHE_ENTRIES = 1 << 20
SMALL_CACHE_ENTRIES = 1 << 18

# GPT-2's pattern for pure-ASCII text, for the standard library's ``re`` (about 1.8x faster
# than ``regex`` there): \p{L} / \p{N} / \s restricted to ASCII are exactly [A-Za-z] / [0-9] /
# [\t\n\v\f\r ]. The letter alternative comes first because it matches most often; it cannot
# start where the contraction alternative (an apostrophe) does.
_WS = r"\t\n\v\f\r "
GPT2_ASCII_PATTERN = re.compile(
    rf"""[ ]?[A-Za-z]+|'(?:[sdmt]|ll|ve|re)| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
)


def fast_pretokens(text: str) -> list[str]:
    """``pretokenize.pretokens``, with the ASCII pattern where it applies."""
    return (GPT2_ASCII_PATTERN if text.isascii() else GPT2_PATTERN).findall(text)


def merge_id_table(merges: list[tuple[bytes, bytes]], token_ids: dict[bytes, int]) -> np.ndarray:
    """(left id, right id, merged id) of each merge, as an (n, 3) array; every token must exist."""
    lefts, rights = (list(parts) for parts in zip(*merges)) if merges else ([], [])
    try:
        columns = [np.fromiter(map(token_ids.__getitem__, tokens), np.int64, len(merges))
                   for tokens in (lefts, rights, map(bytes.__add__, lefts, rights))]
    except KeyError:
        a, b = next((a, b) for a, b in merges if not {a, b, a + b} <= token_ids.keys())
        raise LmcliError(f"merge ({token_to_str(a)} {token_to_str(b)}) uses a token missing from the vocabulary") from None
    return np.stack(columns, axis=1)


class FastEncoder:
    """Text -> uint32 token ids, for a vocabulary given as ids: ``encode(text)``."""

    def __init__(self, byte_ids: list[int], merge_ids: np.ndarray, max_id: int, special_ids: dict[str, int]):
        self.special_tokens = list(special_ids)
        self._special = special_token_pattern(self.special_tokens)
        self._merge_table = MergeTable(byte_ids, merge_ids, max_id)
        # The special tokens are the cache's fixed entries 0, 1, ...
        self._special_entries = {s: i for i, s in enumerate(self.special_tokens)}
        self._cache = PretokenIds([[special_ids[s]] for s in self.special_tokens])
        # Short texts go through a dict instead: pre-token -> packed uint32 ids.
        self._small_cache: dict[str, bytes] = {}
        self._special_packed = {s: np.uint32(i).tobytes() for s, i in special_ids.items()}

    def encode(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as a uint32 array."""
        try:
            return self._encode(text)
        except UnicodeEncodeError as e:  # a lone surrogate (text decoded with errors="surrogateescape", say)
            raise LmcliError(f"the text is not valid Unicode: {text[e.start]!r} at position {e.start} has no UTF-8 form") from None

    def _encode(self, text: str) -> np.ndarray:
        if len(text) < SMALL_TEXT:
            return self._encode_small(text)
        pieces, start = [], 0
        while len(text) - start > PIECE_CHARS:
            cut = last_safe_cut(text[start : start + PIECE_CHARS], self.special_tokens) or len(text) - start
            pieces.append(self._encode_piece(text[start : start + cut]))
            start += cut
        pieces.append(self._encode_piece(text[start:] if start else text))
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _encode_small(self, text: str) -> np.ndarray:
        cache = self._small_cache
        parts = split_at_special_tokens(text, self._special)
        piece_lists = [fast_pretokens(segment) for segment in parts[::2]]
        distinct = set().union(*piece_lists)
        new = distinct.difference(cache)
        if new:
            if len(cache) + len(new) > SMALL_CACHE_ENTRIES:  # start over (keeping this text's pre-tokens)
                cache.clear()
                new = distinct
            words = list(new)
            ids, counts = merge_words(self._merge_table, [w.encode("utf-8") for w in words])
            packed, ends = ids.astype(np.uint32).tobytes(), (np.cumsum(counts) * 4).tolist()
            cache.update(zip(words, map(packed.__getitem__, map(slice, [0, *ends[:-1]], ends))))
        out = list(map(cache.__getitem__, piece_lists[0]))
        for special, pieces in zip(parts[1::2], piece_lists[1:]):
            out.append(self._special_packed[special])
            out.extend(map(cache.__getitem__, pieces))
        return np.frombuffer(b"".join(out), dtype=np.uint32)

    def _encode_piece(self, text: str) -> np.ndarray:
        if self._cache.entries > CACHE_ENTRIES:
            self._cache.clear()
        parts = split_at_special_tokens(text, self._special)
        raw, data, starts, ends, is_special = pretokenize_segments(parts[::2])
        entries = np.empty(len(starts), dtype=np.int64)
        entries[is_special] = list(map(self._special_entries.__getitem__, parts[1::2]))
        entries[~is_special] = self._cache_entries(raw, data, starts[~is_special], ends[~is_special])
        return self._cache.gather(entries)

    def _cache_entries(self, raw: bytes, data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """The cache entry of each pre-token ``raw[starts[k]:ends[k]]``; BPE runs on the new ones, all together."""
        entries = np.empty(len(starts), dtype=np.int64)
        lengths = ends - starts
        short = lengths <= MAX_PACKED_BYTES
        short_starts, short_ends = starts[short], ends[short]
        entries[short], added = self._cache.find_or_add_packed(*packed_keys(data, short_starts, lengths[short]))
        new_words = byte_slices(raw, short_starts[added], short_ends[added])
        entries[~short], new_long = self._cache.find_or_add_bytes(
            byte_slices(raw, starts[~short], ends[~short]), self._cache.entries + len(new_words)
        )
        new_words += new_long
        if new_words:
            self._cache.append(*merge_words(self._merge_table, new_words))
        return entries
