"""Byte-level BPE in its plain form: the definitions that lmcli's fast tokenizer code must equal.

Read this file to learn the algorithms; the rest of the package computes exactly the same
results with the work organised for speed (see the ``fast_*`` modules), and the tests hold
every fast path to the functions here on real text and random input.

Pre-tokenization. A text is first cut at its special tokens (``<|endoftext|>``), which are
tokens of their own. Each piece between them is split by GPT-2's regex into pre-tokens:
words with their leading space, numbers, runs of punctuation, whitespace. BPE works inside
one pre-token at a time, so no token ever spans two of them.

Training (CS336 ``train_bpe``). Every pre-token starts as its sequence of bytes. Repeatedly:
count every adjacent pair of tokens over all pre-tokens, weighted by how often each pre-token
occurs; the most frequent pair becomes a new token, its two parts merged everywhere. Ties go
to the lexicographically greater pair (compared as byte strings). Stop when the vocabulary
(special tokens, the 256 bytes, one token per merge) reaches the requested size, or when no
pair is left.

Encoding. Each pre-token starts as its bytes; repeatedly, the adjacent pair whose merge was
learned earliest (lowest rank) is merged, every occurrence of it, until no adjacent pair has
a merge. The ids of the resulting tokens, pre-token after pre-token, are the encoding.
"""

from __future__ import annotations

import math
from collections import Counter

from lmcli.tokenizer.pretokenize import pretokens
from lmcli.tokenizer.special_tokens import check_special_tokens, special_token_pattern, split_at_special_tokens

Pair = tuple[bytes, bytes]


def pretokenize(text: str, special_tokens: list[str]) -> list[str]:
    """The pre-tokens of ``text`` and its special tokens, in order (a special token is one item)."""
    pieces = split_at_special_tokens(text, special_token_pattern(special_tokens))
    out = []
    for i, piece in enumerate(pieces):
        out += [piece] if i % 2 else pretokens(piece)
    return out


def count_pretokens(text: str, special_tokens: list[str]) -> Counter[bytes]:
    """How often each pre-token (as UTF-8 bytes) occurs in ``text``; special tokens are left out."""
    pieces = split_at_special_tokens(text, special_token_pattern(special_tokens))
    return Counter(p.encode("utf-8") for piece in pieces[::2] for p in pretokens(piece))


def count_pairs(words: dict[tuple[bytes, ...], int]) -> Counter[Pair]:
    """How often each adjacent pair of tokens occurs, over words given with their counts."""
    pairs: Counter[Pair] = Counter()
    for word, n in words.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += n
    return pairs


def merge(tokens: tuple[bytes, ...], pair: Pair) -> tuple[bytes, ...]:
    """``tokens`` with every occurrence of ``pair`` (left to right, not overlapping) made one token."""
    out, i = [], 0
    while i < len(tokens):
        if i + 1 < len(tokens) and (tokens[i], tokens[i + 1]) == pair:
            out.append(tokens[i] + tokens[i + 1])
            i += 2
        else:
            out.append(tokens[i])
            i += 1
    return tuple(out)


def train_bpe(text: str, vocab_size: int, special_tokens: list[str]) -> tuple[dict[int, bytes], list[Pair]]:
    """Train byte-level BPE on ``text``: ``(vocab, merges)`` as ``lmcli.tokenizer.train_bpe`` returns them."""
    special_tokens = check_special_tokens(special_tokens)
    words = {tuple(bytes([b]) for b in word): n for word, n in count_pretokens(text, special_tokens).items()}
    merges: list[Pair] = []
    while len(special_tokens) + 256 + len(merges) < vocab_size:
        pairs = count_pairs(words)
        if not pairs:
            break
        best = max(pairs, key=lambda pair: (pairs[pair], pair))
        merges.append(best)
        words = {merge(word, best): n for word, n in words.items()}
    return build_vocab(special_tokens, merges), merges


def build_vocab(special_tokens: list[str], merges: list[Pair]) -> dict[int, bytes]:
    """The trained vocabulary: the special tokens, then the 256 bytes, then one token per merge."""
    tokens = [t.encode("utf-8") for t in special_tokens] + [bytes([b]) for b in range(256)] + [a + b for a, b in merges]
    return dict(enumerate(tokens))


def bpe(word: bytes, ranks: dict[Pair, int]) -> list[bytes]:
    """The tokens of one pre-token: its bytes, merged by ``ranks`` (merge -> rank) lowest rank first."""
    tokens = tuple(bytes([b]) for b in word)
    while len(tokens) > 1:
        best = min(zip(tokens, tokens[1:]), key=lambda pair: ranks.get(pair, math.inf))
        if best not in ranks:
            break
        tokens = merge(tokens, best)
    return list(tokens)


def encode(text: str, vocab: dict[int, bytes], merges: list[Pair], special_tokens: list[str]) -> list[int]:
    """Token ids of ``text``, as ``lmcli.tokenizer.Tokenizer(vocab, merges, special_tokens).encode`` gives them."""
    ids_of = {token: i for i, token in sorted(vocab.items(), reverse=True)}  # a token listed twice: the lowest id
    ranks = {pair: rank for rank, pair in reversed(list(enumerate(merges)))}  # a merge listed twice: its first rank
    specials = set(special_tokens)
    ids = []
    for pretoken in pretokenize(text, special_tokens):
        if pretoken in specials:
            ids.append(ids_of[pretoken.encode("utf-8")])
        else:
            ids += [ids_of[token] for token in bpe(pretoken.encode("utf-8"), ranks)]
    return ids


def decode(ids: list[int], vocab: dict[int, bytes]) -> str:
    """The text of ``ids``: their bytes joined, decoded as UTF-8 (malformed sequences become U+FFFD)."""
    return b"".join(vocab[i] for i in ids).decode("utf-8", errors="replace")
