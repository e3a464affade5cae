"""Encoding text to token ids and back with a byte-level BPE vocabulary (GPT-2 compatible).

Encoding runs in three steps, exactly as GPT-2 (and tiktoken's ``gpt2``) does:

1. Special tokens (``<|endoftext|>``) are cut out first, longest first, and map to their own id;
   nothing is ever merged across them.
2. The text between them is split into pre-tokens by GPT-2's regex.
3. Each pre-token's UTF-8 bytes start as single-byte tokens, and the adjacent pair with the
   lowest merge rank (earliest learned merge) is merged until no pair has a merge.

Speed comes from caching, because natural text repeats the same few hundred thousand words.
Step 2 is the slow part in Python, so the text is first cut into *units* with a much cheaper
pattern: a unit is a run of whitespace followed by a run of non-whitespace. GPT-2's regex never
matches across a non-whitespace -> whitespace transition (only a leading space attaches to the
following word, never a trailing one), so these cuts are pre-token boundaries and each unit
encodes on its own. Units (" the", " said,") repeat, so their ids are kept in a cache, and so
are the ids of pre-tokens. Cached ids are packed uint32 bytes, so encoding a text is one
``findall``, one dictionary lookup per unit and one ``bytes.join``.

A cold cache is filled in bulk, never one entry at a time: the units a text brings that are
not cached yet are concatenated and pre-tokenized by one regex call (their ids are then cut
back into units), and all new pre-tokens are merged together by ``lmcli.tokenizer.bpe``. On
a corpus full of rare units (code, identifiers; 10 MB of the bench corpus) a cold start costs
about 0.9 CPU-s against 0.4 warm (1.3 cold when filled one entry at a time).

Decoding concatenates the tokens' bytes and decodes UTF-8, replacing malformed sequences
(a model can emit half a character) with U+FFFD.
"""

from __future__ import annotations

import itertools
import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from lmcli.errors import LmcliError
from lmcli.tokenizer.bpe import MergeTable, merge_words
from lmcli.tokenizer.files import load_tokenizer_files, read_meta, token_to_str, tokenizer_paths
from lmcli.tokenizer.pretokenize import pretokens, special_token_pattern

DEFAULT_SPECIAL_TOKEN = "<|endoftext|>"

# Whitespace exactly as the ``regex`` module's \s (which GPT-2's pattern uses): the standard
# library's \s also counts the separators \x1c-\x1f, which GPT-2 treats as symbols.
_WS = r"[^\S\x1c-\x1f]"
_NON_WS = r"[\S\x1c-\x1f]"
_UNIT = re.compile(rf"{_WS}*{_NON_WS}+|{_WS}+")
_ASCII_UNIT = re.compile(r"\s*\S+|\s+", re.ASCII)  # the same on ASCII text, where \s is [\t\n\v\f\r ]

# Where a stream can be flushed: between printable ASCII and ASCII whitespace, a pre-token
# boundary whatever text follows (the same rule lmcli.tokenizer.chunks cuts files with).
_STREAM_CUT = re.compile(r"[\x21-\x7e](?=[\t\n\v\f\r ])")
_STREAM_FLUSH_CHARS = 1 << 16

UNIT_CACHE_SIZE = 1 << 19
PRETOKEN_CACHE_SIZE = 1 << 18


class Tokenizer:
    """Byte-level BPE tokenizer: ``encode`` text to ids, ``decode`` ids to text."""

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: list[tuple[bytes, bytes]],
        special_tokens: list[str] | None = None,
    ):
        self.vocab = dict(vocab)
        self.merges = list(merges)
        self.special_tokens = list(dict.fromkeys(special_tokens or []))
        if "" in self.special_tokens:
            raise LmcliError("a special token cannot be the empty string")
        token_ids = {token: i for i, token in self.vocab.items()}
        if len(token_ids) < len(self.vocab):  # a token listed twice: the lowest id wins
            token_ids = {token: i for i, token in sorted(self.vocab.items(), reverse=True)}
        for special in self.special_tokens:
            token = special.encode("utf-8")
            if token not in token_ids:
                new_id = max(self.vocab, default=-1) + 1
                self.vocab[new_id], token_ids[token] = token, new_id
        self.special_ids = {s: token_ids[s.encode("utf-8")] for s in self.special_tokens}
        special = special_token_pattern(self.special_tokens)
        # The alternatives in a group, so that split() also returns the special tokens it cuts at.
        self._special_split = special and re.compile(f"({special.pattern})")
        self._special_packed = {s: array("I", [i]).tobytes() for s, i in self.special_ids.items()}
        self._longest_special = max(map(len, self.special_tokens), default=0)

        missing = [b for b in range(256) if bytes([b]) not in token_ids]
        if missing:
            raise LmcliError(f"the vocabulary lacks {len(missing)} of the 256 single bytes (e.g. 0x{missing[0]:02x})")
        self._merge_table = MergeTable([token_ids[bytes([b])] for b in range(256)], _merge_ids(self.merges, token_ids), self.max_id)
        # Ids of what has been encoded before, as packed uint32 bytes (see _complete_cache).
        self._unit_cache: dict[str, bytes] = {}
        self._pretoken_cache: dict[str, bytes] = {}

    def __reduce__(self):
        # Worker processes rebuild the tables instead of receiving (possibly large) caches.
        return Tokenizer, (self.vocab, self.merges, self.special_tokens)

    @classmethod
    def from_files(
        cls, vocab_path: str | Path, merges_path: str | Path, special_tokens: list[str] | None = None
    ) -> "Tokenizer":
        """Load GPT-2-format ``vocab.json`` and ``merges.txt`` (checked to belong together)."""
        vocab, merges = load_tokenizer_files(vocab_path, merges_path)
        return cls(vocab, merges, special_tokens)

    @classmethod
    def from_dir(cls, tokenizer_dir: str | Path, special_tokens: list[str] | None = None) -> "Tokenizer":
        """Load a tokenizer directory; special tokens default to its tokenizer-meta.json, else <|endoftext|>."""
        vocab_path, merges_path = tokenizer_paths(tokenizer_dir)
        if special_tokens is None:
            special_tokens = read_meta(tokenizer_dir).get("special_tokens", [DEFAULT_SPECIAL_TOKEN])
        return cls.from_files(vocab_path, merges_path, special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def max_id(self) -> int:
        return max(self.vocab)

    # -- encoding -------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as a uint32 array (the fast path for whole files)."""
        return np.frombuffer(self._encode_packed(text), dtype=np.uint32)

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Lazily encode a stream of strings (e.g. a file's lines) exactly as their concatenation.

        Text is buffered and flushed only up to the last position where a cut cannot change
        the result, so memory stays bounded however long the stream is.
        """
        pending: list[str] = []
        size = 0
        flush_at = _STREAM_FLUSH_CHARS
        for piece in iterable:
            pending.append(piece)
            size += len(piece)
            if size < flush_at:
                continue
            text = "".join(pending)
            cut = self._last_stream_cut(text)
            yield from self.encode(text[:cut])
            pending, size = [text[cut:]], len(text) - cut
            # With no cut in sight, wait for the buffer to double rather than rescanning it per line.
            flush_at = max(_STREAM_FLUSH_CHARS, 2 * size)
        yield from self.encode("".join(pending))

    def _last_stream_cut(self, text: str) -> int:
        """The last position where ``text`` can be split whatever follows it (0 if none is known yet)."""
        end = len(text) - self._longest_special  # a special token could still complete past here
        lo = max(0, end - _STREAM_FLUSH_CHARS)
        for m in reversed(list(_STREAM_CUT.finditer(text, lo, max(end, 0)))):
            if not self._inside_special(text, m.end()):
                return m.end()
        return 0

    def _inside_special(self, text: str, cut: int) -> bool:
        """Whether an occurrence of a special token contains both text[cut - 1] and text[cut]."""
        for s in self.special_tokens:
            i = text.find(s, max(0, cut - len(s) + 1), cut - 1 + len(s))
            if i != -1:
                return True
        return False

    def _encode_packed(self, text: str) -> bytes:
        """Ids of ``text`` as packed uint32 bytes: the text between special tokens goes by units."""
        if self._special_split is None:
            segments, specials = [text], []
        else:
            parts = self._special_split.split(text)  # text, special, text, ..., special, text
            segments, specials = parts[::2], [self._special_packed[s] for s in parts[1::2]]
        unit_lists = [(_ASCII_UNIT if s.isascii() else _UNIT).findall(s) for s in segments]
        ids_of = self._unit_table(unit_lists).__getitem__
        # Each list is popped as it is joined, so its strings are freed before the next join.
        packed = [b"".join(map(ids_of, unit_lists.pop())) for _ in segments][::-1]
        if not specials:
            return packed[0]
        out = [b""] * (len(packed) + len(specials))
        out[::2], out[1::2] = packed, specials
        return b"".join(out)

    def _unit_table(self, unit_lists: list[list[str]]) -> dict[str, bytes]:
        """A dict with the ids of every unit in ``unit_lists`` (the unit cache, completed)."""
        # A segment's first unit may lack leading whitespace and its last may be all whitespace.
        edges = {units[i] for units in unit_lists if units for i in (0, -1)}
        return _complete_cache(self._unit_cache, UNIT_CACHE_SIZE, unit_lists, lambda new: self._encode_units(new, edges))

    def _encode_units(self, units: set[str], edges: set[str]) -> Iterable[tuple[str, bytes]]:
        """Ids of new units, with one regex call per group of units rather than one per unit.

        Units that start with whitespace and end without concatenate without changing their
        pre-tokens (a pre-token never runs from non-whitespace into whitespace, and GPT-2's
        regex looks neither behind nor, outside whitespace, ahead), so their concatenation is
        pre-tokenized at once; ASCII units go together through the faster ASCII pattern. An
        edge unit (see ``_unit_table``) is pre-tokenized on its own.
        """
        singles = list(units & edges)
        middle = units - edges
        groups = [[u for u in middle if u.isascii()], [u for u in middle if not u.isascii()]]
        piece_lists = list(map(pretokens, ["".join(group) for group in groups] + singles))
        ids_of = self._pretoken_table(piece_lists).__getitem__
        single_ids = [b"".join(map(ids_of, pieces)) for pieces in piece_lists[2:]]
        group_ids = [_split_units(group, pieces, list(map(ids_of, pieces))) for group, pieces in zip(groups, piece_lists)]
        return itertools.chain(zip(singles, single_ids), *map(zip, groups, group_ids))

    def _pretoken_table(self, piece_lists: list[list[str]]) -> dict[str, bytes]:
        """A dict with the ids of every pre-token in ``piece_lists`` (the pre-token cache, completed)."""
        return _complete_cache(self._pretoken_cache, PRETOKEN_CACHE_SIZE, piece_lists, self._encode_pretokens)

    def _encode_pretokens(self, new: set[str]) -> Iterable[tuple[str, bytes]]:
        """BPE of new pre-tokens, all at once (``lmcli.tokenizer.bpe``)."""
        words = list(new)
        ids, counts = merge_words(self._merge_table, [w.encode("utf-8") for w in words])
        packed = ids.astype(np.uint32).tobytes()
        ends = (np.cumsum(counts) * 4).tolist()
        return zip(words, map(packed.__getitem__, map(slice, [0, *ends[:-1]], ends)))

    # -- decoding -------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; malformed UTF-8 (e.g. half a character) becomes U+FFFD."""
        vocab = self.vocab
        try:
            data = b"".join([vocab[i] for i in ids])
        except KeyError as e:
            raise LmcliError(f"token id {e.args[0]} is not in the vocabulary (ids 0..{self.max_id})") from None
        return data.decode("utf-8", errors="replace")


def _merge_ids(merges: list[tuple[bytes, bytes]], token_ids: dict[bytes, int]) -> np.ndarray:
    """(left id, right id, merged id) of each merge, as an (n, 3) array; every token must exist."""
    lefts, rights = (list(parts) for parts in zip(*merges)) if merges else ([], [])
    try:
        columns = [np.fromiter(map(token_ids.__getitem__, tokens), np.int64, len(merges))
                   for tokens in (lefts, rights, map(bytes.__add__, lefts, rights))]
    except KeyError:
        a, b = next((a, b) for a, b in merges if not {a, b, a + b} <= token_ids.keys())
        raise LmcliError(f"merge ({token_to_str(a)} {token_to_str(b)}) uses a token missing from the vocabulary") from None
    return np.stack(columns, axis=1)


def _complete_cache(
    cache: dict, maxsize: int, key_lists: list[list[str]], encode: Callable[[set[str]], Iterable[tuple[str, bytes]]]
) -> dict:
    """``cache`` with every key of ``key_lists`` in it, the missing ones encoded together.

    The cache starts over when it would outgrow ``maxsize`` (memory stays bounded on any corpus,
    at the price of re-warming); keys too many to fit at all are encoded and returned, not kept.
    """
    distinct = set().union(*key_lists)
    new = distinct.difference(cache)  # a plain dict: the set probes it in C
    if not new:
        return cache
    if len(cache) + len(new) > maxsize:
        cache.clear()
        new = distinct
        if len(new) > maxsize:
            return dict(encode(new))
    cache.update(encode(new))  # (key, ids) pairs straight into the cache
    return cache


def _split_units(units: list[str], pieces: list[str], piece_ids: list[bytes]) -> list[bytes]:
    """Cut the ids of concatenated units (``pieces`` pre-tokenize ``"".join(units)``) back into units.

    A unit's ids end with those of the pre-token that ends where the unit ends: found by a
    binary search of the units' running lengths in the pre-tokens' running lengths.
    """
    packed = b"".join(piece_ids)
    unit_ends = np.cumsum(np.fromiter(map(len, units), np.int64, len(units)))
    piece_ends = np.cumsum(np.fromiter(map(len, pieces), np.int64, len(pieces)))
    byte_ends = np.cumsum(np.fromiter(map(len, piece_ids), np.int64, len(piece_ids)))
    ends = byte_ends[np.searchsorted(piece_ends, unit_ends)].tolist()
    return list(map(packed.__getitem__, map(slice, [0, *ends[:-1]], ends)))
