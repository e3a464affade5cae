"""A cache of the token ids of every pre-token seen so far, looked up for many pre-tokens at once.

It changes no result, only how fast the ids of a repeated pre-token are found: an entry holds
exactly what ``lmcli.tokenizer.reference.bpe`` gives for its pre-token.

Natural text repeats a few hundred thousand pre-tokens, so BPE runs once per distinct
pre-token and later occurrences reuse its ids. The cache holds the ids of all entries
back to back in one array (``ids[offsets[i] : offsets[i] + counts[i]]`` for entry ``i``), so
turning a text's entry numbers into its token ids is one numpy gather.

Finding the entry number of each pre-token must not cost a Python operation per pre-token
either. A pre-token of at most 15 UTF-8 bytes (99% of them in English text) is packed into
two 64-bit integers, its bytes and its length, which identify it exactly; those keys live in an
open-addressing hash table made of numpy arrays, probed for all pre-tokens at once (a round
of array operations per probe step, about two rounds at the table's load of at most 1/2).
Longer pre-tokens go through a Python dict keyed by their bytes. (``PackedKeyTable`` is that
hash table on its own; BPE training counts pre-tokens with it.)

Entries ``0 .. len(fixed) - 1`` are fixed ones (the special tokens), which no key leads to.
``clear`` drops everything else, to bound memory on corpora with millions of distinct pre-tokens.
"""

from __future__ import annotations

import numpy as np

MAX_PACKED_BYTES = 15
GROWTH = 1.5  # a grown array's new length: the old and the new one briefly both exist
PROBE_SLICE = 1 << 16  # keys probed at once: the probing arrays stay a few MB however many keys come
# _LOW_BYTES[k]: a mask of the low k bytes of a 64-bit word.
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [0xFFFF_FFFF_FFFF_FFFF], dtype=np.uint64)
_MIX_LO, _MIX_HI = np.uint64(0x9E37_79B9_7F4A_7C15), np.uint64(0xC2B2_AE3D_27D4_EB4F)


def packed_keys(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact 128-bit keys (two uint64) of the byte strings ``data[starts : starts + lengths]`` (lengths <= 15).

    ``data`` must be followed by at least 16 bytes of padding in its buffer (see ``padded_bytes``).
    """
    # Unaligned little-endian loads of 8 bytes at every offset, so masking keeps the first bytes on any machine.
    words = np.ndarray(shape=(len(data) + 8,), dtype=np.dtype("<u8"), buffer=data.base, strides=(1,))
    lo = words[starts] & _LOW_BYTES[np.minimum(lengths, 8)]
    hi = words[starts + 8] & _LOW_BYTES[np.clip(lengths - 8, 0, 7)]
    hi |= lengths.astype(np.uint64) << np.uint64(56)
    return lo, hi


def unpacked_keys(lo: np.ndarray, hi: np.ndarray) -> tuple[bytes, np.ndarray]:
    """The byte strings that ``packed_keys`` made the keys of, joined, and their lengths
    (``PROBE_SLICE`` keys at a time: a byte matrix and mask of all keys at once, 32 bytes a key,
    would add to train-bpe's peak)."""
    lengths = (hi >> np.uint64(56)).astype(np.int64)
    parts = []
    for part in _slices(len(lo)):
        rows = np.stack([lo[part], hi[part]], axis=1).astype("<u8", copy=False).view(np.uint8).reshape(-1, 16)
        parts.append(rows[np.arange(16) < lengths[part, None]].tobytes())
    return b"".join(parts), lengths


def byte_slices(data: bytes, starts: np.ndarray, ends: np.ndarray) -> list[bytes]:
    """``data[starts[k]:ends[k]]`` for each k."""
    return list(map(data.__getitem__, map(slice, starts.tolist(), ends.tolist())))


def padded_bytes(data: bytes) -> np.ndarray:
    """``data`` as a uint8 array whose buffer has 16 more zero bytes, for ``packed_keys``."""
    buffer = np.zeros(len(data) + 16, dtype=np.uint8)
    buffer[: len(data)] = np.frombuffer(data, dtype=np.uint8)
    return buffer[: len(data)]


class PretokenIds:
    """Entry numbers of pre-tokens (by packed key or by bytes) and the token ids of each entry."""

    def __init__(self, fixed: list[list[int]]):
        self._fixed = fixed
        self.clear()

    def clear(self) -> None:
        """Forget every pre-token (the fixed entries stay)."""
        self._table = PackedKeyTable()
        self._by_bytes: dict[bytes, int] = {}
        self.ids = np.zeros(1 << 16, dtype=np.uint32)
        self.offsets = np.zeros(1 << 12, dtype=np.int64)
        self.counts = np.zeros(1 << 12, dtype=np.int64)
        self.entries = self._used_ids = 0
        for ids in self._fixed:
            self.append(np.array(ids, dtype=np.uint32), np.array([len(ids)]))

    # -- finding entries ------------------------------------------------------------------

    def find_or_add_packed(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The entry of each key, adding the missing ones: (entries, positions of the added keys).

        A key seen for the first time gets the next entry number (its ids must then be
        appended, in the order of the returned positions); repeats of it get the same number.
        """
        return self._table.find_or_add(lo, hi, self.entries)

    def find_or_add_bytes(self, pieces: list[bytes], first_new: int) -> tuple[list[int], list[bytes]]:
        """The entry of each long pre-token, numbering new ones from ``first_new``: (entries, new pieces)."""
        new = [p for p in dict.fromkeys(pieces) if p not in self._by_bytes]
        self._by_bytes.update(zip(new, range(first_new, first_new + len(new))))
        return [self._by_bytes[p] for p in pieces], new

    # -- ids of entries -------------------------------------------------------------------

    def append(self, ids: np.ndarray, counts: np.ndarray) -> None:
        """Add entries whose ids are ``ids``, ``counts[k]`` of them for the k-th new entry."""
        self.ids = grown(self.ids, self._used_ids + len(ids))
        self.offsets = grown(self.offsets, self.entries + len(counts))
        self.counts = grown(self.counts, self.entries + len(counts))
        self.ids[self._used_ids : self._used_ids + len(ids)] = ids
        self.offsets[self.entries : self.entries + len(counts)] = self._used_ids + np.cumsum(counts) - counts
        self.counts[self.entries : self.entries + len(counts)] = counts
        self._used_ids += len(ids)
        self.entries += len(counts)

    def gather(self, entries: np.ndarray) -> np.ndarray:
        """The token ids of a sequence of entries, concatenated (uint32)."""
        counts = self.counts[entries]
        ends = np.cumsum(counts)
        total = int(ends[-1]) if len(ends) else 0
        return self.ids[np.repeat(self.offsets[entries] - (ends - counts), counts) + np.arange(total)]


class PackedKeyTable:
    """An open-addressing hash table (linear probing, at most half full) from packed keys to
    entry numbers, made of numpy arrays and probed for all keys at once.

    As in CPython's compact dict, a slot holds only a 4-byte index into dense arrays of the keys
    (in the order they came) and their entries, 20 bytes a key: the two to four slots per key
    cost 8 to 16 bytes, where slots holding the keys would cost 40 to 80. Growing the table makes
    a new slot array from the dense keys, which are not copied; ``keys`` is a view.
    """

    def __init__(self):
        self._slot_bits = 16
        self._slots = np.full(1 << self._slot_bits, -1, dtype=np.int32)  # key index, -1 where empty
        self._lo = np.zeros(1 << 12, dtype=np.uint64)
        self._hi = np.zeros(1 << 12, dtype=np.uint64)
        self._entries = np.zeros(1 << 12, dtype=np.int32)
        self.size = 0  # keys in the table

    def find_or_add(self, lo: np.ndarray, hi: np.ndarray, first_entry: int) -> tuple[np.ndarray, np.ndarray]:
        """The entry of each key, adding the missing ones numbered from ``first_entry``:
        (entries, positions of the added keys, in the order of their numbers)."""
        found = self._lookup(lo, hi)
        missing = np.flatnonzero(found < 0)
        if len(missing) == 0:
            return self._entries[found].astype(np.int64), missing
        self._reserve(len(missing))
        before = self.size
        found[missing], added = self._insert(lo[missing], hi[missing])
        self._entries[before : self.size] = first_entry + np.arange(self.size - before)
        return self._entries[found].astype(np.int64), missing[added]

    def keys(self) -> tuple[np.ndarray, np.ndarray]:
        """The keys in the order they were added, which is that of their entry numbers (views)."""
        return self._lo[: self.size], self._hi[: self.size]

    def _home_slots(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        mixed = (lo * _MIX_LO) ^ (hi * _MIX_HI)
        return (mixed >> np.uint64(64 - self._slot_bits)).astype(np.int64)

    def _lookup(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """The index of each key, -1 where it is not in the table (``PROBE_SLICE`` keys at a time)."""
        return np.concatenate([self._lookup_slice(lo[part], hi[part]) for part in _slices(len(lo))])

    def _lookup_slice(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """``_lookup`` of keys probed all at once (linear probing)."""
        mask = (1 << self._slot_bits) - 1
        found = np.full(len(lo), -1, dtype=np.int64)
        slot = self._home_slots(lo, hi)
        pending = np.arange(len(lo))
        while len(pending):
            s = slot[pending]
            held, same = self._probe(s, lo[pending], hi[pending])
            found[pending[same]] = held[same]
            pending = pending[(held >= 0) & ~same]  # a different key holds the slot: try the next one
            slot[pending] = (slot[pending] + 1) & mask
        return found

    def _probe(self, slots: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The key index each slot holds (-1: empty) and whether it is the key (lo, hi)."""
        held = self._slots[slots].astype(np.int64)
        index = np.maximum(held, 0)
        return held, (held >= 0) & (self._lo[index] == lo) & (self._hi[index] == hi)

    def _insert(self, lo: np.ndarray, hi: np.ndarray, indices: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Put keys that are not in the table into free slots: (the index of each key, positions of
        the keys that took a slot). Each distinct key is appended to the dense arrays, in the order
        of the returned positions, unless ``indices`` says where it already is (a re-placing).
        ``PROBE_SLICE`` keys at a time (a repeat of a key of an earlier slice finds it placed)."""
        results, placed = [], []
        for part in _slices(len(lo)):
            result, took = self._insert_slice(lo[part], hi[part], None if indices is None else indices[part])
            results.append(result)
            placed.append(took + part.start)
        return np.concatenate(results), np.concatenate(placed)

    def _insert_slice(self, lo: np.ndarray, hi: np.ndarray, indices: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """``_insert`` of keys probed all at once."""
        mask = (1 << self._slot_bits) - 1
        result = np.empty(len(lo), dtype=np.int64)
        slot = self._home_slots(lo, hi)
        pending = np.arange(len(lo))
        placed = [np.zeros(0, dtype=np.int64)]
        while len(pending):
            s = slot[pending]
            held, same = self._probe(s, lo[pending], hi[pending])
            result[pending[same]] = held[same]  # a repeat of a key placed in an earlier round
            # One key per free slot; the others retry that slot (it may now hold their key).
            free = np.flatnonzero(held < 0)
            claimed, first = np.unique(s[free], return_index=True)
            winners = pending[free[first]]
            if indices is None:
                numbers = self.size + np.arange(len(winners))
                self._lo[numbers], self._hi[numbers] = lo[winners], hi[winners]
                self.size += len(winners)
            else:
                numbers = indices[winners]
            self._slots[claimed] = numbers
            result[winners] = numbers
            placed.append(winners)
            moving = pending[(held >= 0) & ~same]
            slot[moving] = (slot[moving] + 1) & mask
            retry = ~same
            retry[free[first]] = False
            pending = pending[retry]
        return result, np.concatenate(placed)

    def _reserve(self, incoming: int) -> None:
        """Room in the dense arrays for ``incoming`` more keys, and more slots (the keys re-placed)
        so the table stays at most half full with them."""
        needed = self.size + incoming
        self._lo, self._hi, self._entries = (grown(a, needed) for a in (self._lo, self._hi, self._entries))
        if 2 * needed <= 1 << self._slot_bits:
            return
        while 2 * needed > 1 << self._slot_bits:
            self._slot_bits += 1
        self._slots = np.full(1 << self._slot_bits, -1, dtype=np.int32)
        self._insert(*self.keys(), indices=np.arange(self.size))


def _slices(n: int) -> list[slice]:
    """Consecutive slices of ``range(n)`` of PROBE_SLICE items (one empty one for n = 0)."""
    return [slice(first, first + PROBE_SLICE) for first in range(0, max(n, 1), PROBE_SLICE)]


def grown(array: np.ndarray, needed: int) -> np.ndarray:
    """``array``, or a copy at least GROWTH times as long when it is shorter than ``needed``."""
    if needed <= len(array):
        return array
    bigger = np.zeros(max(needed, int(GROWTH * len(array))), dtype=array.dtype)
    bigger[: len(array)] = array
    return bigger
