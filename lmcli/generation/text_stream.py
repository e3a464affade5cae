"""Streaming token ids as text, one token at a time.

A byte-level BPE token is a run of bytes, not of characters: "é" (0xC3 0xA9) can be split over
two tokens, and decoding each token on its own would print two replacement characters. An
incremental UTF-8 decoder holds back the bytes of an incomplete character until the token that
completes it arrives; bytes that can never form a character become U+FFFD, as in ``decode``.
"""

from __future__ import annotations

import codecs


class TextStream:
    """Feed token ids with ``push``, get the text they complete; ``flush`` at the end."""

    def __init__(self, vocab: dict[int, bytes]):
        self.vocab = vocab
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self.decoder.decode(self.vocab[token_id])

    def flush(self) -> str:
        """Text of the bytes still held back (an incomplete character at the very end becomes U+FFFD)."""
        return self.decoder.decode(b"", final=True)
