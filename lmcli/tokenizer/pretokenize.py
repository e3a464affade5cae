"""Pre-tokenization: split text into the pieces BPE works inside, exactly as GPT-2 does.

BPE never merges across a pre-token boundary. GPT-2's regex splits text into contractions
('s 't 're ...), letter runs and number runs (each with an optional leading space), runs of
other symbols, and whitespace (a run of whitespace gives up its last character when a word
follows, so the word keeps its leading space). Special tokens such as ``<|endoftext|>`` are cut
out first (``lmcli.tokenizer.special_tokens``): the regex runs separately on the text between
them, so nothing merges across them.

``pretokens`` is the regex applied plainly. ``lmcli.tokenizer.fast_pretokenize`` finds the same
pre-tokens for a whole text with array operations, and ``lmcli.tokenizer.fast_encode`` runs an
equivalent pattern for pure-ASCII text; the tests hold both to this one.
"""

from __future__ import annotations

import regex

GPT2_SPLIT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT2_PATTERN = regex.compile(GPT2_SPLIT)


def pretokens(text: str) -> list[str]:
    """GPT-2 pre-tokens of text that holds no special token."""
    return GPT2_PATTERN.findall(text)
