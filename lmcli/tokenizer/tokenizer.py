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
encodes on its own. Units (" the", " said,") repeat, so a unit's ids are looked up in a bounded
cache; only a new unit is pre-tokenized, and only a new pre-token runs BPE (a second cache).
Cached ids are stored as packed uint32 bytes, so encoding a text is one ``findall``, one
dictionary lookup per unit and one ``bytes.join``.

Decoding concatenates the tokens' bytes and decodes UTF-8, replacing malformed sequences
(a model can emit half a character) with U+FFFD.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from lmcli.errors import LmcliError
from lmcli.tokenizer.files import load_tokenizer_files, read_meta, token_to_str, tokenizer_paths
from lmcli.tokenizer.pretokenize import pretokens, special_token_pattern

DEFAULT_SPECIAL_TOKEN = "<|endoftext|>"

# Whitespace exactly as the ``regex`` module's \s (which GPT-2's pattern uses): the standard
# library's \s also counts the separators \x1c-\x1f, which GPT-2 treats as symbols.
_WS = r"[^\S\x1c-\x1f]"
_NON_WS = r"[\S\x1c-\x1f]"
_UNIT = re.compile(rf"{_WS}*{_NON_WS}+|{_WS}+")

# Where a stream can be flushed: between printable ASCII and ASCII whitespace, a pre-token
# boundary whatever text follows (the same rule lmcli.tokenizer.chunks cuts files with).
_STREAM_CUT = re.compile(r"[\x21-\x7e](?=[\t\n\v\f\r ])")
_STREAM_FLUSH_CHARS = 1 << 16

UNIT_CACHE_SIZE = 1 << 19
PRETOKEN_CACHE_SIZE = 1 << 18


class _BoundedCache(dict):
    """A dict that computes missing values and starts over when it holds ``maxsize`` entries.

    Lookups stay plain C dict lookups (``map(cache.__getitem__, keys)``); clearing when full
    keeps memory bounded on any corpus at the price of re-warming, which is rare in practice.
    """

    def __init__(self, compute: Callable, maxsize: int):
        super().__init__()
        self.compute = compute
        self.maxsize = maxsize

    def __missing__(self, key):
        if len(self) >= self.maxsize:
            self.clear()
        value = self[key] = self.compute(key)
        return value


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
        token_ids = {token: i for i, token in sorted(self.vocab.items(), reverse=True)}  # lowest id wins
        for special in self.special_tokens:
            token = special.encode("utf-8")
            if token not in token_ids:
                new_id = max(self.vocab, default=-1) + 1
                self.vocab[new_id], token_ids[token] = token, new_id
        self.special_ids = {s: token_ids[s.encode("utf-8")] for s in self.special_tokens}
        self._special_pattern = special_token_pattern(self.special_tokens)
        self._longest_special = max(map(len, self.special_tokens), default=0)

        missing = [b for b in range(256) if bytes([b]) not in token_ids]
        if missing:
            raise LmcliError(f"the vocabulary lacks {len(missing)} of the 256 single bytes (e.g. 0x{missing[0]:02x})")
        self._byte_ids = [token_ids[bytes([b])] for b in range(256)]
        self._merge_ranks: dict[tuple[int, int], int] = {}
        self._merged_ids: list[int] = []
        for a, b in self.merges:
            if a + b not in token_ids or a not in token_ids or b not in token_ids:
                raise LmcliError(f"merge ({token_to_str(a)} {token_to_str(b)}) uses a token missing from the vocabulary")
            self._merge_ranks.setdefault((token_ids[a], token_ids[b]), len(self._merged_ids))
            self._merged_ids.append(token_ids[a + b])
        self._pretoken_cache = _BoundedCache(self._encode_pretoken, PRETOKEN_CACHE_SIZE)
        self._unit_cache = _BoundedCache(self._encode_unit, UNIT_CACHE_SIZE)

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
        """Ids of ``text`` as packed uint32 bytes: ordinary runs through the caches, specials direct."""
        if self._special_pattern is None:
            return self._encode_ordinary(text)
        parts = []
        start = 0
        for m in self._special_pattern.finditer(text):
            parts.append(self._encode_ordinary(text[start : m.start()]))
            parts.append(array("I", [self.special_ids[m.group()]]).tobytes())
            start = m.end()
        parts.append(self._encode_ordinary(text[start:]))
        return b"".join(parts)

    def _encode_ordinary(self, text: str) -> bytes:
        """Text without special tokens: cut into units, each looked up in (or added to) the cache."""
        return b"".join(map(self._unit_cache.__getitem__, _UNIT.findall(text)))

    def _encode_unit(self, unit: str) -> bytes:
        return b"".join(map(self._pretoken_cache.__getitem__, pretokens(unit)))

    def _encode_pretoken(self, pretoken: str) -> bytes:
        return array("I", self.bpe(pretoken.encode("utf-8"))).tobytes()

    def bpe(self, piece: bytes) -> list[int]:
        """Merge the bytes of one pre-token: repeatedly merge the adjacent pair learned earliest."""
        ids = [self._byte_ids[b] for b in piece]
        get = self._merge_ranks.get
        missing = len(self._merged_ids)  # rank of a pair that never merges
        # pair_ranks[i] is the rank of (ids[i], ids[i + 1]); a merge only changes its two neighbours.
        pair_ranks = [get(pair, missing) for pair in zip(ids, ids[1:])]
        while pair_ranks:
            rank = min(pair_ranks)
            if rank == missing:
                break
            i = pair_ranks.index(rank)
            ids[i : i + 2] = [self._merged_ids[rank]]
            del pair_ranks[i]
            if i > 0:
                pair_ranks[i - 1] = get((ids[i - 1], ids[i]), missing)
            if i < len(pair_ranks):
                pair_ranks[i] = get((ids[i], ids[i + 1]), missing)
        return ids

    # -- decoding -------------------------------------------------------------------------

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; malformed UTF-8 (e.g. half a character) becomes U+FFFD."""
        vocab = self.vocab
        try:
            data = b"".join([vocab[i] for i in ids])
        except KeyError as e:
            raise LmcliError(f"token id {e.args[0]} is not in the vocabulary (ids 0..{self.max_id})") from None
        return data.decode("utf-8", errors="replace")
