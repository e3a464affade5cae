"""Applying BPE merges to many pre-tokens at once, vectorized with numpy.

For each word the tokens equal ``lmcli.tokenizer.reference.bpe`` (one word at a time, in Python).

Each pre-token's bytes start as single-byte tokens; then, repeatedly, the adjacent pair with the
lowest merge rank (the earliest learned merge; the leftmost such pair on a tie) becomes its
merged token, until no adjacent pair has a merge. Pre-tokens never interact, so instead of
running that loop in Python once per pre-token (~1 us per merge), every pre-token still
merging takes its next step together, one round of array operations per step:

1. rank every adjacent pair: its key ``left * base + right`` is looked up (binary search) in
   the sorted keys of all merges; the last token of a pre-token has no right neighbour;
2. per pre-token, the minimum of ``rank * n + position`` (``np.minimum.reduceat``) gives both
   the lowest rank and its leftmost position;
3. pre-tokens without any mergeable pair are finished and set aside; in the others that pair
   becomes one token and the right-hand token is dropped.

A round costs a few passes over the tokens of the unfinished pre-tokens, so the total work
is about (bytes x merges) per pre-token, all in C; a few thousand pre-tokens take a handful
of rounds per merge depth instead of a Python loop per merge.
"""

from __future__ import annotations

import numpy as np

# Pairs of two ids below this are ranked by a direct lookup in a dense table (4 MB) rather than
# by binary search: byte tokens and the first merges, which are most of the pairs to rank.
DENSE_IDS = 1024


class MergeTable:
    """The merges of a vocabulary as sorted arrays, for ranking many pairs at once."""

    def __init__(self, byte_ids: list[int], merges: np.ndarray | list[tuple[int, int, int]], max_id: int, dense_ids: int = DENSE_IDS):
        """``merges``: (left id, right id, merged id) rows in rank order; a repeated pair keeps its first rank."""
        self.byte_ids = np.array(byte_ids, dtype=np.int64)
        self.base = max_id + 1
        table = np.asarray(merges, dtype=np.int64).reshape(-1, 3)
        keys, first = np.unique(table[:, 0] * self.base + table[:, 1], return_index=True)
        self.keys = np.append(keys, -1)  # a sentinel, so a search past the end finds no match
        self.key_ranks = np.append(first, 0)
        self.merged = table[:, 2]
        self.no_merge = len(merges)  # the rank of a pair that never merges
        left, right = np.divmod(keys, self.base)
        self.dense_ids = dense_ids
        small = (left < dense_ids) & (right < dense_ids)
        self.dense_ranks = np.full(dense_ids * dense_ids, self.no_merge, dtype=np.int32)
        self.dense_ranks[left[small] * dense_ids + right[small]] = first[small]

    def pair_ranks(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Merge rank of each pair (left[i], right[i]); ``no_merge`` for a pair that never merges."""
        ranks = np.empty(len(left), dtype=np.int64)
        small = (left < self.dense_ids) & (right < self.dense_ids)
        ranks[small] = self.dense_ranks[left[small] * self.dense_ids + right[small]]
        large = ~small
        pair_keys = left[large] * self.base + right[large]
        at = np.searchsorted(self.keys[:-1], pair_keys)
        ranks[large] = np.where(self.keys[at] == pair_keys, self.key_ranks[at], self.no_merge)
        return ranks


def merge_words(table: MergeTable, words: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """BPE of each word (non-empty bytes): all token ids in word order, and each word's token count."""
    lengths = np.fromiter(map(len, words), np.int64, len(words))
    ids = table.byte_ids[np.frombuffer(b"".join(words), dtype=np.uint8)]
    ends = np.cumsum(lengths)
    # ranks[i]: rank of the pair (ids[i], ids[i + 1]); a word's last token starts no pair.
    ranks = np.append(table.pair_ranks(ids[:-1], ids[1:]), table.no_merge)
    ranks[ends - 1] = table.no_merge
    owner = np.arange(len(words))  # which word each unfinished word is
    done_ids, done_owner, done_lengths = [], [], []
    while len(owner):
        n = len(ids)
        best = np.minimum.reduceat(ranks * n + np.arange(n), ends - lengths)
        rank, at = np.divmod(best, n)
        finished = rank == table.no_merge
        if finished.any():
            in_finished = np.repeat(finished, lengths)
            done_ids.append(ids[in_finished])
            done_owner.append(owner[finished])
            done_lengths.append(lengths[finished])
        going = ~finished
        at, rank = at[going], rank[going]
        ids[at] = table.merged[rank]
        keep = np.repeat(going, lengths)
        keep[at + 1] = False  # the right-hand token of each merged pair
        at = np.cumsum(keep)[at] - 1  # the merged token's position once the dropped ones are gone
        ids, ranks, owner, lengths = ids[keep], ranks[keep], owner[going], lengths[going] - 1
        ends = np.cumsum(lengths)
        # Only the pairs on either side of a merged token change rank.
        ranks[at] = table.no_merge
        right = at[at < ends - 1]
        ranks[right] = table.pair_ranks(ids[right], ids[right + 1])
        left = at[at > ends - lengths] - 1
        ranks[left] = table.pair_ranks(ids[left], ids[left + 1])
    return _in_word_order(done_ids, done_owner, done_lengths)


def _in_word_order(chunks: list[np.ndarray], owners: list[np.ndarray], lengths: list[np.ndarray]):
    """Reassemble words finished round by round into the original word order."""
    if not chunks:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    ids, owner, length = np.concatenate(chunks), np.concatenate(owners), np.concatenate(lengths)
    source_start = np.cumsum(length) - length
    order = np.argsort(owner, kind="stable")
    counts = length[order]
    target_start = np.cumsum(counts) - counts
    # Position k of the output takes ids[source_start[word] + (k - target_start[word])].
    gather = np.repeat(source_start[order] - target_start, counts) + np.arange(counts.sum())
    return ids[gather], counts
