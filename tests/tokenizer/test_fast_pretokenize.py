"""The array pre-tokenizer against GPT-2's regex, and the pre-token id cache it feeds."""

from __future__ import annotations

import random

import numpy as np
import pytest

from lmcli.tokenizer import fast_pretoken_ids
from lmcli.tokenizer.fast_pretoken_ids import PretokenIds, packed_keys, padded_bytes
from lmcli.tokenizer.fast_pretokenize import BARRIER, character_classes, pretoken_starts
from lmcli.tokenizer.pretokenize import GPT2_PATTERN

# Characters that exercise every rule: contraction letters, each whitespace kind (\x1c is not
# whitespace for GPT-2), letters, numbers and symbols outside ASCII, a combining mark, emoji.
ALPHABET = list("ab sdmtlvreSL'  \n\t\r\x0b\x1c\x1f9.,()-") + [
    "\u00a0", "\u3000", "\u2028", "\x85", "é", "ß", "中", "²", "٣", "Ⅻ", "😀", "\u0301",
]


def split(text: str) -> list[str]:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    starts = pretoken_starts(codes, character_classes(codes)).tolist()
    return [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]


def test_random_text_splits_exactly_as_the_regex():
    rng = random.Random(7)
    for _ in range(20_000):
        text = "".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 16)))
        assert split(text) == GPT2_PATTERN.findall(text), repr(text)


def test_any_code_point_is_classified_as_the_regex_does():
    rng = random.Random(8)
    for _ in range(200):
        text = "".join(chr(rng.choice([rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)])) for _ in range(40))
        assert split(text) == GPT2_PATTERN.findall(text)


@pytest.mark.parametrize("name", ["address.txt", "german.txt", "tinystories_sample.txt", "corpus.en"])
def test_fixture_text_splits_exactly_as_the_regex(fixtures, name):
    text = (fixtures / name).read_text(encoding="utf-8")
    assert split(text) == GPT2_PATTERN.findall(text)


def test_barriers_are_pieces_that_nothing_crosses():
    rng = random.Random(9)
    for _ in range(2_000):
        segments = ["".join(rng.choice(ALPHABET) for _ in range(rng.randrange(0, 8))) for _ in range(rng.randrange(1, 5))]
        joined = "\x00".join(segments)
        codes = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        classes = character_classes(codes)
        classes[np.cumsum([len(s) + 1 for s in segments[:-1]], dtype=np.int64) - 1] = BARRIER
        starts = pretoken_starts(codes, classes).tolist()
        pieces = [joined[a:b] for a, b in zip(starts, starts[1:] + [len(joined)])]
        expected = []
        for i, segment in enumerate(segments):
            expected += GPT2_PATTERN.findall(segment) + (["\x00"] if i < len(segments) - 1 else [])
        assert pieces == expected, segments


def keys_of(pieces: list[bytes]) -> list[tuple[int, int]]:
    data = padded_bytes(b"".join(pieces))
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    lo, hi = packed_keys(data, np.cumsum(lengths) - lengths, lengths)
    return list(zip(lo.tolist(), hi.tolist()))


def test_packed_keys_are_equal_exactly_when_the_bytes_are():
    rng = random.Random(10)
    pieces = [b"a", b"a\x00", b"a\x00\x00", b"\x00", b"\xff" * 15, b"\xff" * 14, b"abcdefgh", b"abcdefghi"]
    pieces += [bytes(rng.choice(b"\x00ab\xff") for _ in range(rng.randrange(1, 16))) for _ in range(3000)]
    keys = keys_of(pieces)
    for (p, k), (q, m) in zip(zip(pieces, keys), zip(pieces[1:], keys[1:])):
        assert (p == q) == (k == m)
    assert len(set(keys)) == len(set(pieces))


@pytest.mark.parametrize("probe_slice", [1 << 16, 1000])  # keys are probed, added and re-inserted in slices
def test_find_or_add_numbers_new_keys_once_and_finds_them_after_growing(monkeypatch, probe_slice):
    monkeypatch.setattr(fast_pretoken_ids, "PROBE_SLICE", probe_slice)
    cache = PretokenIds(fixed=[[7], [8]])
    rng = random.Random(11)
    words = [bytes(rng.choice(b"abcdefgh") for _ in range(rng.randrange(1, 16))) for _ in range(120_000)]
    first, unkeyed = {}, {0, 1}
    for batch in (words[:1000], words[1000:1000] + words[:1000], words[:60_000], words):
        keys = np.array(keys_of(batch), dtype=np.uint64).reshape(-1, 2)
        entries, added = cache.find_or_add_packed(keys[:, 0].copy(), keys[:, 1].copy())
        assert len({batch[i] for i in added.tolist()}) == len(added)  # each new key once
        for word, entry in zip(batch, entries.tolist()):
            assert first.setdefault(word, entry) == entry and entry not in unkeyed  # fixed entries are never found by key
        new_ids = np.arange(len(added), dtype=np.uint32)
        cache.append(new_ids, np.ones(len(added), dtype=np.int64))
        unkeyed.add(cache.entries)  # an entry no packed key leads to (as a long pre-token's) between the keys' numbers
        cache.append(np.array([9], dtype=np.uint32), np.array([1]))
    assert cache.entries == 2 + len(set(words)) + 4


def test_gather_concatenates_the_ids_of_entries():
    cache = PretokenIds(fixed=[[50256]])
    cache.append(np.array([1, 2, 3, 4, 5, 6], dtype=np.uint32), np.array([1, 2, 3]))
    assert cache.gather(np.array([3, 0, 1, 3, 2])).tolist() == [4, 5, 6, 50256, 1, 4, 5, 6, 2, 3]
    assert cache.gather(np.array([], dtype=np.int64)).tolist() == []
    cache.clear()
    assert cache.entries == 1 and cache.gather(np.array([0])).tolist() == [50256]
