"""Encoding text to token ids and back with a byte-level BPE vocabulary (GPT-2 compatible).

Encoding runs in three steps, exactly as GPT-2 (and tiktoken's ``gpt2``) does:

1. Special tokens (``<|endoftext|>``) are cut out first, longest first, and map to their own id;
   nothing is ever merged across them.
2. The text between them is split into pre-tokens by GPT-2's regex.
3. Each pre-token's UTF-8 bytes start as single-byte tokens, and the adjacent pair with the
   lowest merge rank (earliest learned merge) is merged until no pair has a merge.

``lmcli.tokenizer.reference.encode`` is these steps written plainly, one pre-token at a time:
it is the definition. ``Tokenizer`` gives the same ids fast (``lmcli.tokenizer.fast_encode``);
the tests hold the two equal, and both to tiktoken.

Decoding concatenates the tokens' bytes and decodes UTF-8, replacing malformed sequences
(a model can emit half a character) with U+FFFD.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from lmcli.errors import LmcliError
from lmcli.tokenizer.chunks import TEXT_CUT_WINDOW, last_safe_cut
from lmcli.tokenizer.fast_encode import FastEncoder, merge_id_table
from lmcli.tokenizer.files import load_tokenizer_files, read_meta, tokenizer_paths
from lmcli.tokenizer.special_tokens import END_OF_TEXT, check_special_tokens


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
        self.special_tokens = check_special_tokens(special_tokens or [])
        token_ids = {token: i for i, token in self.vocab.items()}
        if len(token_ids) < len(self.vocab):  # a token listed twice: the lowest id wins
            token_ids = {token: i for i, token in sorted(self.vocab.items(), reverse=True)}
        for special in self.special_tokens:
            token = special.encode("utf-8")
            if token not in token_ids:
                new_id = max(self.vocab, default=-1) + 1
                self.vocab[new_id], token_ids[token] = token, new_id
        self.special_ids = {s: token_ids[s.encode("utf-8")] for s in self.special_tokens}
        missing = [b for b in range(256) if bytes([b]) not in token_ids]
        if missing:
            raise LmcliError(f"the vocabulary lacks {len(missing)} of the 256 single bytes (e.g. 0x{missing[0]:02x})")
        byte_ids = [token_ids[bytes([b])] for b in range(256)]
        self._encoder = FastEncoder(byte_ids, merge_id_table(self.merges, token_ids), self.max_id, self.special_ids)

    def __reduce__(self):
        # Worker processes rebuild the tables instead of receiving (possibly large) caches.
        return Tokenizer, (self.vocab, self.merges, self.special_tokens)

    @classmethod
    def from_files(
        cls, vocab_path: str | Path, merges_path: str | Path, special_tokens: list[str] | None = None
    ) -> Tokenizer:
        """Load GPT-2-format ``vocab.json`` and ``merges.txt`` (checked to belong together)."""
        vocab, merges = load_tokenizer_files(vocab_path, merges_path)
        return cls(vocab, merges, special_tokens)

    @classmethod
    def from_dir(cls, tokenizer_dir: str | Path, special_tokens: list[str] | None = None) -> Tokenizer:
        """Load a tokenizer directory; special tokens default to its tokenizer-meta.json, else <|endoftext|>."""
        vocab_path, merges_path = tokenizer_paths(tokenizer_dir)
        if special_tokens is None:
            special_tokens = read_meta(tokenizer_dir).get("special_tokens", [END_OF_TEXT])
        return cls.from_files(vocab_path, merges_path, special_tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def max_id(self) -> int:
        return max(self.vocab)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        return self._encoder.encode(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids of ``text`` as a uint32 array (for whole files: no list of Python ints)."""
        return self._encoder.encode(text)

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Lazily encode a stream of strings (e.g. a file's lines) exactly as their concatenation.

        Text is buffered and flushed only up to the last position where a cut cannot change
        the result, so memory stays bounded however long the stream is.
        """
        pending: list[str] = []
        size = 0
        flush_at = TEXT_CUT_WINDOW
        for piece in iterable:
            pending.append(piece)
            size += len(piece)
            if size < flush_at:
                continue
            text = "".join(pending)
            cut = last_safe_cut(text, self.special_tokens)
            yield from self.encode(text[:cut])
            pending, size = [text[cut:]], len(text) - cut
            # With no cut in sight, wait for the buffer to double rather than rescanning it per line.
            flush_at = max(TEXT_CUT_WINDOW, 2 * size)
        yield from self.encode("".join(pending))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; malformed UTF-8 (e.g. half a character) becomes U+FFFD."""
        vocab = self.vocab
        try:
            data = b"".join([vocab[i] for i in ids])
        except KeyError as e:
            raise LmcliError(f"token id {e.args[0]} is not in the vocabulary (ids 0..{self.max_id})") from None
        return data.decode("utf-8", errors="replace")
