"""The BPE merge loop: repeatedly merge the most frequent adjacent pair of tokens.

The merges equal those of ``lmcli.tokenizer.reference.train_bpe``, which recounts every pair
after every merge; this loop counts once and then only updates the counts a merge changes.

Every distinct pre-token ("word") starts as its sequence of bytes (token ids 0-255) and carries
its count in the corpus, so the work is per distinct word, weighted by count, never per
occurrence. The loop keeps

- ``pairs``: for each adjacent pair of tokens, how often it occurs in the corpus and an array of
  the words it was seen in (entries may go stale: a word that no longer holds the pair is simply
  skipped when that pair is merged);
- a max-heap of pairs by count, for picking the next merge.

Both hold only the pairs that occur at least ``floor`` times. Most pairs are rare (at the end of
a 32,000-token vocabulary on a gigabyte of text, nine in ten occur fewer than 128 times, and the
last merge's pair over 400 times), and keeping each rare pair's count, words and heap entry made
the memory grow with the corpus. A pair's count only ever falls once the merge that made it is
over, so a pair below the floor can never become the most frequent while any tracked pair is
left, and nothing needs to know its count until then. The floor starts at a fixed share of all
pair occurrences (``TRACKED_SHARE``): the pairs that frequent number about the same whatever the
corpus's size (about 25,000 at the end of 0.25 GB and of 1 GB), so this bookkeeping no longer
grows with the input; the words themselves still do. When no tracked pair is left
and merges remain, the pairs are counted again from the words as they are, with a floor
``FLOOR_DROP`` times lower, and the loop goes on; after the last count (floor 1) every pair is
tracked. A merge gives the same pair whichever pairs are tracked: the highest count is the same.

Merging ``(a, b)`` into a new token ``t`` only rewrites the words that hold the pair and only
adjusts the counts of pairs next to each occurrence: ``(x, a) -> (x, t)`` and ``(b, y) -> (t, y)``.
Nothing is recounted.

Picking the pair: the highest count wins and ties go to the lexicographically greater pair of
byte strings. Counts of existing pairs only ever fall and a new pair (one holding ``t``) can
never outnumber the pair that made it, so the heap is lazy: an entry records the count when it
was pushed, and a popped entry whose count is out of date is pushed back with the true count.
All pairs tied at the top count are moved into a small second heap ordered by their bytes
(``_tie_key``), from which the merges at that count are drawn in the right order.

Pairs are packed into one int ``a << SHIFT | b`` and heap entries into one int of
(count, pair): ints hash, compare and store more cheaply than tuples. The byte-order key that
breaks a tie is made only for the pairs tied at the top, never stored per token.

A short word is a run of token ids in one array holding all words (``_packed_words``), which a
merge copies out, scans, rewrites and writes back: cheap for the words of natural text. A long
one (a megabyte of DNA is a single pre-token) would make every merge cost its whole length, so
a word of more than ``LONG_WORD`` (4,096) bytes is a doubly linked list of tokens (``LongWord``)
that also records where each of its pairs starts: merging then touches only the occurrences of
the pair, and the work stays near-linear in the word's length.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Callable, Iterator

import numpy as np

from lmcli.allocator import release_free_pages
from lmcli.tokenizer.fast_count import Packed

_INVERTED = bytes(range(255, -1, -1))  # byte x -> 255 - x
_TIE_END = chr(256)  # sorts after every inverted byte
# Words longer than this (in bytes) are linked lists with their pairs' positions. A linked list costs
# about 15 times a list's memory, so only words whose rescans would dominate the merges take it: at
# 64 bytes, the long tokens of real text (rules, URLs, base64) raised train-bpe's peak by about 10%.
LONG_WORD = 4096
# Pairs occurring fewer than this share of all pair occurrences are not tracked until no other pair is
# left (see the module's docstring). At 2**-22, the last of 31,743 merges of 0.25-1 GB of text is well
# above the floor, so the words are counted once.
TRACKED_SHARE = 2**-22
FLOOR_DROP = 16
RELEASE_EVERY_MERGES = 1000  # a malloc_trim takes milliseconds: a few dozen per vocabulary cost nothing
NODE_TYPE, NODE_DTYPE = "i", np.int32  # a long word's nodes and tokens: signed 32 bits (-1 ends a list)
WORD_INDEX = "I"  # the words a pair was seen in: unsigned 32-bit, not a list of ints (8 bytes a slot and an int each)


class LongWord:
    """A long word as a linked list: node i starts as byte i; ``sym[i]`` is its token (-1 once merged
    into its left neighbour) and ``where[pair]`` lists the nodes at which ``pair`` may start (entries go
    stale as merges happen; they are checked when used). All of them are 32-bit arrays: Python lists
    of ints took about 160 bytes per byte of the word (a 9 MB word, 1.5 GB)."""

    def __init__(self, word: bytes, shift: int):
        nodes = np.arange(len(word), dtype=NODE_DTYPE)
        self.sym = _node_array(np.frombuffer(word, dtype=np.uint8))
        self.nxt = _node_array(np.append(nodes[1:], -1))
        self.prv = _node_array(nodes - 1)
        # The start of every pair, grouped by pair with numpy (a Python loop over megabytes is slow).
        codes = np.frombuffer(word, dtype=np.uint8).astype(np.int64)
        pairs = codes[:-1] << shift | codes[1:]
        order = np.argsort(pairs, kind="stable")
        cuts = np.flatnonzero(np.diff(pairs[order])) + 1
        keys = pairs[order][np.concatenate([[0], cuts])].tolist()
        self.where: dict[int, array] = dict(zip(keys, map(_node_array, np.split(order, cuts))))

    def pair_counts(self, shift: int) -> dict[int, int]:
        """How often each pair occurs in the word now, with numpy: a merge drops its right node and
        never moves one, so the tokens still there, in node order, are the word."""
        sym = np.frombuffer(self.sym, dtype=NODE_DTYPE).astype(np.int64)
        tokens = sym[sym >= 0]
        keys, occurrences = np.unique(tokens[:-1] << shift | tokens[1:], return_counts=True)
        return dict(zip(keys.tolist(), occurrences.tolist()))


class MergeLoop:
    """``MergeLoop.of(word_counts, num_merges).run(num_merges)``: the merges, in creation order.

    Building it packs the words; ``count_pairs`` counts their pairs (the "count" stage); ``run`` does
    the merges.
    Token ids: 0-255 are the bytes, merge k creates token 256 + k.
    """

    def __init__(self, words: Packed, num_merges: int):
        """``words``: the distinct pre-tokens joined, their lengths and their counts (``PretokenCounts.packed``)."""
        self.shift = max(256 + num_merges, 2).bit_length()
        self.pair_mask = (1 << 2 * self.shift) - 1
        self.tokens: list[bytes] = [bytes([i]) for i in range(256)]
        blob, lengths, counts = words
        merging = lengths > 1  # single-byte words have no pairs: they never take part in a merge
        short = merging & (lengths <= LONG_WORD)
        self.text, self.starts, self.sizes = _packed_words(blob, lengths, short, merging, self.shift)
        # Only the long words' offsets are kept: whole-corpus slices alive here would add to the peak.
        long = lengths > LONG_WORD
        long_words = np.flatnonzero(long[merging])  # numbered among the merging words
        long_starts = (np.cumsum(lengths) - lengths)[long].tolist()
        self.long: dict[int, LongWord] = {int(w): LongWord(blob[start : start + n], self.shift)
                                          for w, start, n in zip(long_words, long_starts, lengths[long].tolist())}
        self.counts: list[int] = counts[merging].tolist()
        self.ties: list[tuple[str, int]] = []  # (tie key, pair) of the pairs at count tie_count
        self.tie_count = 0
        occurrences = int(np.dot(counts, lengths - 1))  # a single-byte word adds 0
        self.floor = max(1, int(occurrences * TRACKED_SHARE))
        self.pairs: dict[int, list] = {}  # pair -> [count, words]
        self.heap: list[int] = []
        self.counted = False

    @classmethod
    def of(cls, word_counts: dict[bytes, int], num_merges: int) -> MergeLoop:
        """The loop for a word -> count dict."""
        words = list(word_counts)
        lengths = np.fromiter(map(len, words), np.int64, len(words))
        return cls((b"".join(words), lengths, np.fromiter(word_counts.values(), np.int64, len(words))), num_merges)

    def count_pairs(self) -> None:
        """The "count" stage: count the pairs of all words (``run`` does it if it was not done; the
        caller may drop the word counts first, as the loop holds the words)."""
        self._track_pairs(self.floor)
        self.counted = True

    def _track_pairs(self, floor: int) -> None:
        """Count the pairs of the words as they are now and track those occurring at least ``floor``
        times: ``pairs`` (pair -> [count, the words holding it, each listed once]) and the heap.
        Two passes, so that the rare pairs' words are never listed."""
        self.floor = floor
        counts: dict[int, int] = {}
        for w, pair in self._short_word_pairs():
            counts[pair] = counts.get(pair, 0) + self.counts[w]
        long_pairs = {w: word.pair_counts(self.shift) for w, word in self.long.items()}
        for w, occurrences in long_pairs.items():
            for pair, k in occurrences.items():
                counts[pair] = counts.get(pair, 0) + k * self.counts[w]
        pairs: dict[int, list] = {pair: [n, array(WORD_INDEX)] for pair, n in counts.items() if n >= floor}
        del counts
        for w, pair in self._short_word_pairs():
            entry = pairs.get(pair)
            if entry is not None and (not entry[1] or entry[1][-1] != w):
                entry[1].append(w)
        for w, occurrences in long_pairs.items():  # after the short words: no word is listed twice
            for pair in occurrences:
                if pair in pairs:
                    pairs[pair][1].append(w)
        self.pairs = pairs
        self.heap = [self._entry(pair, entry[0]) for pair, entry in pairs.items()]
        heapq.heapify(self.heap)

    def _short_word_pairs(self) -> Iterator[tuple[int, int]]:
        """(word, pair) for every adjacent pair of every short word as it is now, word by word (a long
        word is empty in ``text``)."""
        shift, text, starts, sizes = self.shift, self.text, self.starts, self.sizes
        for w in range(len(self.counts)):
            word = text[starts[w] : starts[w] + sizes[w]]
            for a, b in zip(word, word[1:]):
                yield w, a << shift | b

    def _count(self, pair: int) -> int:
        """How often the pair occurs now (0 once it is gone)."""
        entry = self.pairs.get(pair)
        return entry[0] if entry else 0

    def run(self, num_merges: int, on_merge: Callable[[int], None] | None = None) -> list[tuple[bytes, bytes]]:
        """Up to ``num_merges`` merges; fewer if the words run out of pairs. ``on_merge(done)`` is
        called now and then with the number of merges made so far (for a progress bar)."""
        if not self.counted:
            self.count_pairs()
        merges: list[tuple[bytes, bytes]] = []
        mask = (1 << self.shift) - 1
        if on_merge:
            on_merge(0)
        while len(merges) < num_merges:
            if len(merges) % RELEASE_EVERY_MERGES == 0:
                release_free_pages()  # a merge frees a pair's small list of words: the holes add up to ~20 MB a GB
            pair = self._best_pair()
            if pair is None:
                break  # no adjacent pairs left anywhere
            a, b = pair >> self.shift, pair & mask
            merges.append((self.tokens[a], self.tokens[b]))
            self._merge(pair, a, b)
            if on_merge and len(merges) % 100 == 0:
                on_merge(len(merges))
        if on_merge:
            on_merge(len(merges))
        return merges

    def _entry(self, pair: int, count: int) -> int:
        # heapq is a min-heap: negate so the highest (count, pair) comes out first.
        return -(count << 2 * self.shift | pair)

    def _best_pair(self) -> int | None:
        """The pair to merge next: highest count, ties to the greater bytes; None when none is left."""
        while True:
            while self.ties:
                tie_key, pair = heapq.heappop(self.ties)
                count = self._count(pair)
                if count == self.tie_count:
                    return pair
                if count:  # fell below the tie count since: back to the main heap
                    heapq.heappush(self.heap, self._entry(pair, count))
            if self._gather_ties():
                continue
            if self.floor == 1:
                return None
            self._track_pairs(max(1, self.floor // FLOOR_DROP))  # the rarer pairs, counted now

    def _gather_ties(self) -> bool:
        """Move every pair with the top count from the main heap into the tie heap."""
        heap, shift2, mask = self.heap, 2 * self.shift, self.pair_mask
        self.tie_count = 0
        while heap:
            value = -heap[0]
            recorded, pair = value >> shift2, value & mask
            if recorded < self.tie_count:
                break
            heapq.heappop(heap)
            count = self._count(pair)
            if count == recorded:
                self.tie_count = count
                self.ties.append((self._tie_key(pair), pair))
            elif count:
                heapq.heappush(heap, self._entry(pair, count))
        heapq.heapify(self.ties)
        return bool(self.ties)

    def _tie_key(self, pair: int) -> str:
        # Made when needed rather than kept per token: only pairs tied at the top count need one.
        first, second = self.tokens[pair >> self.shift], self.tokens[pair & ((1 << self.shift) - 1)]
        return _reverse_order_key(first) + _reverse_order_key(second)

    def _merge(self, pair: int, a: int, b: int) -> None:
        """Replace every occurrence of (a, b) by a new token t and move the neighbouring pairs'
        counts: (x, a) -> (x, t) and (b, y) -> (t, y)."""
        t = len(self.tokens)
        self.tokens.append(self.tokens[a] + self.tokens[b])
        shift, text, starts, sizes, counts, pairs = self.shift, self.text, self.starts, self.sizes, self.counts, self.pairs
        created: list[int] = []
        as_t = array(text.typecode, [t])
        floor = self.floor

        def move(old: int, new: int, n: int, w: int) -> None:
            """n occurrences in word w of pair ``old`` become occurrences of pair ``new`` (holding t)."""
            entry = pairs.get(old)
            if entry is not None:  # else too rare to be tracked
                entry[0] -= n
                if entry[0] < floor:  # no longer tracked: it could not be merged before the next count
                    del pairs[old]
            # Pairs holding t are all created in this merge, so their word lists are new too.
            entry = pairs.get(new)
            if entry is None:
                pairs[new] = [n, array(WORD_INDEX, (w,))]
                created.append(new)
            else:
                entry[0] += n
                if entry[1][-1] != w:
                    entry[1].append(w)

        # The merged pair's own count can fall during the loop ("caaa" merging (a, a) moves the
        # last (a, a)), and its entry may leave ``pairs``; the loop holds its words, to which no
        # word is ever added.
        for w in pairs[pair][1]:
            if w in self.long:
                self._merge_long(self.long[w], pair, a, b, t, counts[w], w, move)
                continue
            start, size = starts[w], sizes[w]
            word = text[start : start + size]  # a copy to rewrite; written back if it shrank
            todo = word.count(a)  # occurrences of a still to look at; 0 for a stale entry
            i, n = 0, counts[w]
            while todo:
                i = word.index(a, i)
                todo -= 1
                if i + 1 < len(word) and word[i + 1] == b:
                    if i:  # left neighbour x; it is t when the previous occurrence was just merged
                        x = word[i - 1]
                        move((b if x == t else x) << shift | a, x << shift | t, n, w)
                    # right neighbour y, unless it starts another occurrence (then it is that one's left)
                    if i + 2 < len(word):
                        y = word[i + 2]
                        if not (y == a and i + 3 < len(word) and word[i + 3] == b):
                            move(b << shift | y, t << shift | y, n, w)
                    word[i : i + 2] = as_t
                    if a == b:
                        todo -= 1  # the b just merged was one of the a's
                i += 1
            if len(word) < size:
                text[start : start + len(word)] = word
                sizes[w] = len(word)
        pairs.pop(pair, None)
        for new in created:
            count = pairs[new][0]
            if count < floor:
                del pairs[new]
                continue
            if count == self.tie_count:
                heapq.heappush(self.ties, (self._tie_key(new), new))
            else:
                heapq.heappush(self.heap, self._entry(new, count))


    def _merge_long(self, word: LongWord, pair: int, a: int, b: int, t: int, n: int, w: int, move: Callable) -> None:
        """``_merge``'s rewrite of one word, for a linked-list word: only the occurrences of the pair,
        left to right, are visited; the neighbouring pairs move exactly as in the list code."""
        shift, sym, nxt, prv, where = self.shift, word.sym, word.nxt, word.prv, word.where
        for i in sorted(where.pop(pair, ())):
            j = nxt[i]
            if sym[i] != a or j < 0 or sym[j] != b:
                continue  # a stale entry: the pair is no longer there
            p, q = prv[i], nxt[j]
            if p >= 0:  # left neighbour x; it is t when the previous occurrence was just merged
                x = sym[p]
                move((b if x == t else x) << shift | a, x << shift | t, n, w)
                _starts_of(where, x << shift | t).append(p)
            if q >= 0:  # right neighbour y, unless it starts another occurrence (then it is that one's left)
                y = sym[q]
                if not (y == a and nxt[q] >= 0 and sym[nxt[q]] == b):
                    move(b << shift | y, t << shift | y, n, w)
                    _starts_of(where, t << shift | y).append(i)
            sym[i], sym[j], nxt[i] = t, -1, q
            if q >= 0:
                prv[q] = i


def _node_array(values: np.ndarray) -> array:
    """Node numbers or tokens of a long word as a 32-bit array."""
    return _array(values, NODE_TYPE, NODE_DTYPE)


def _starts_of(where: dict[int, array], pair: int) -> array:
    """The nodes listed for ``pair`` (a new, empty list if none)."""
    starts = where.get(pair)
    if starts is None:
        starts = where[pair] = array(NODE_TYPE)
    return starts


def _packed_words(blob: bytes, lengths: np.ndarray, short: np.ndarray, merging: np.ndarray, shift: int) -> tuple[array, array, array]:
    """The ``merging`` words (of ``lengths``, joined in ``blob``) as tokens in one array (``text``): word i
    (counting the merging ones) at ``text[starts[i] : starts[i] + sizes[i]]``, empty unless ``short``. A
    merge only shortens a word, so it is rewritten in place. Tokens take 16 bits while every id fits,
    else 32 (a list of ints would take 8 bytes per token and 56 per word more); starts and sizes
    take 32 or 16 bits where they fit, else 64."""
    sizes = np.where(short, lengths, 0)[merging]
    ends = np.cumsum(sizes)
    text = _unsigned_array(np.frombuffer(blob, np.uint8)[np.repeat(short, lengths)], 1 << shift)
    starts = _unsigned_array(ends - sizes, int(ends[-1]) + 1 if len(ends) else 1)
    return text, starts, _unsigned_array(sizes, LONG_WORD + 1)


def _unsigned_array(values: np.ndarray, bound: int) -> array:
    """``values`` (each below ``bound``) in an array of 16, 32 or 64 bits: the fewest that hold them."""
    typecode, dtype = next((t, d) for t, d in (("H", np.uint16), ("I", np.uint32), ("q", np.int64))
                           if bound <= int(np.iinfo(d).max) + 1)
    return _array(values, typecode, dtype)


def _array(values: np.ndarray, typecode: str, dtype: type) -> array:
    """``values`` as an ``array`` of ``typecode`` (whose items are ``dtype``)."""
    result = array(typecode)
    result.frombytes(values.astype(dtype).tobytes())
    return result


def _reverse_order_key(token: bytes) -> str:
    """A string that sorts in the reverse of the token's byte order, so that the concatenated
    keys of two pairs sort in reverse of their (first, second) byte order: each byte is
    inverted and the end marker sorts after every byte (a prefix sorts after its extensions)."""
    return token.translate(_INVERTED).decode("latin-1") + _TIE_END
