"""Tokenizer encode/decode: identical to tiktoken's gpt2 with GPT-2's files, plus BPE on hand-built vocabularies."""

from __future__ import annotations

import itertools
import lzma
import random
import tracemalloc

import numpy as np
import pytest

from benchmarks.gpt2_tiktoken import gpt2_tiktoken
from lmcli.errors import LmcliError
from lmcli.tokenizer import Tokenizer, fast_encode, reference
from lmcli.tokenizer import tokenizer as tokenizer_module
from lmcli.tokenizer.fast_bpe import MergeTable, merge_words
from lmcli.tokenizer.files import save_tokenizer
from tests.conftest import FIXTURES, SHARED

BENCH = SHARED / "bench" / "docs-bench.txt.xz"
EOT = "<|endoftext|>"
FIXTURE_FILES = [
    "address.txt",
    "corpus.en",
    "german.txt",
    "tinystories_sample.txt",
    "special_token_double_newlines_non_whitespace.txt",
    "special_token_trailing_newlines.txt",
]
STRINGS = [
    "",
    "s",
    "🙃",
    " ",
    "\n",
    "Hello, how are you?",
    "Héllò hôw <|endoftext|><|endoftext|> are ü? 🙃",
    "it's  we'll   they've\n\n\n  x\t\ty\r\n",
    "\x1c\x1d a\x1fb \xa0c\u3000d",
    "<|endoftext|>",
    "text<|endoftext|>\n\nmore<|endoftext|>",
    "1234567 12.5 ३४५ ½",
    "unfinished <|endoftext",
]


@pytest.fixture(scope="module")
def gpt2(fixtures_dir):
    return Tokenizer.from_files(fixtures_dir / "gpt2_vocab.json", fixtures_dir / "gpt2_merges.txt", [EOT])


@pytest.fixture(scope="module")
def tiktoken_gpt2(fixtures_dir):
    return gpt2_tiktoken(fixtures_dir / "gpt2_vocab.json")


@pytest.fixture(scope="module")
def fixtures_dir():
    if not FIXTURES.is_dir():
        pytest.skip(f"CS336 fixtures not found at {FIXTURES} (../shared is absent)")
    return FIXTURES


def tiktoken_ids(enc, text: str) -> list[int]:
    return enc.encode(text, allowed_special="all")


@pytest.mark.parametrize("name", FIXTURE_FILES)
@pytest.mark.parametrize("small_text", [0, 10**9])  # every text through the array path, then through the dict path
def test_fixture_files_match_tiktoken(gpt2, tiktoken_gpt2, fixtures_dir, name, monkeypatch, small_text):
    monkeypatch.setattr(fast_encode, "SMALL_TEXT", small_text)
    text = (fixtures_dir / name).read_text(encoding="utf-8")
    ids = gpt2.encode(text)
    assert ids == tiktoken_ids(tiktoken_gpt2, text)
    assert gpt2.decode(ids) == text


@pytest.mark.parametrize("small_text", [0, fast_encode.SMALL_TEXT])
@pytest.mark.parametrize("text", STRINGS)
def test_strings_match_tiktoken(gpt2, tiktoken_gpt2, text, monkeypatch, small_text):
    monkeypatch.setattr(fast_encode, "SMALL_TEXT", small_text)
    ids = gpt2.encode(text)
    assert ids == tiktoken_ids(tiktoken_gpt2, text)
    assert gpt2.decode(ids) == text


def test_bench_slice_matches_tiktoken(gpt2, tiktoken_gpt2):
    if not BENCH.is_file():
        pytest.skip(f"bench corpus not found at {BENCH}")
    with lzma.open(BENCH) as f:
        text = f.read(400_000).decode("utf-8", errors="ignore")  # the cut may split the last character
    ids = gpt2.encode(text)
    assert ids == tiktoken_ids(tiktoken_gpt2, text)
    assert gpt2.decode(ids) == text


def random_text(rng: random.Random, n: int) -> str:
    """Random text mixing ASCII, whitespace runs, apostrophes, other scripts, emoji and any code point."""
    pools = [
        "abc xyz ABC",
        " \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000",
        "'sdmtlvre",
        "0123456789٣४",
        "äöüßéñçøå",
        "日本語中文한국어",
        "🙃👍🏽🇫🇷",
        ".,;:!?-()[]{}\"/",
    ]
    out = []
    for _ in range(n):
        if rng.random() < 0.05:
            cp = rng.randrange(0x110000)
            out.append(chr(cp) if not 0xD800 <= cp < 0xE000 else "x")
        else:
            out.append(rng.choice(rng.choice(pools)))
    return "".join(out)


@pytest.mark.parametrize("small_text", [0, fast_encode.SMALL_TEXT])  # the array path for all, or only long texts
def test_random_unicode_roundtrips_and_matches_tiktoken(gpt2, tiktoken_gpt2, monkeypatch, small_text):
    monkeypatch.setattr(fast_encode, "SMALL_TEXT", small_text)
    rng = random.Random(0)
    for _ in range(300):
        text = random_text(rng, rng.randrange(0, 60))
        ids = gpt2.encode(text)
        assert gpt2.decode(ids) == text
        assert ids == tiktoken_gpt2.encode(text, disallowed_special=())


def test_overlapping_special_tokens_prefer_the_longest(fixtures_dir):
    double = EOT + EOT
    tok = Tokenizer.from_files(fixtures_dir / "gpt2_vocab.json", fixtures_dir / "gpt2_merges.txt", [EOT, double])
    ids = tok.encode(f"Hello{double}{EOT}world")
    assert ids.count(tok.special_ids[double]) == 1 and ids.count(tok.special_ids[EOT]) == 1
    assert ids.index(tok.special_ids[double]) < ids.index(tok.special_ids[EOT])
    assert tok.decode(ids) == f"Hello{double}{EOT}world"


def test_text_beside_a_special_token_is_pre_tokenized_as_at_a_boundary(gpt2):
    assert gpt2.encode(f"hello{EOT} world") == gpt2.encode("hello") + [50256] + gpt2.encode(" world")
    assert gpt2.encode(f"\n\n{EOT}\n\n") == gpt2.encode("\n\n") + [50256] + gpt2.encode("\n\n")


def test_special_tokens_missing_from_the_vocabulary_are_appended():
    vocab = {i: bytes([i]) for i in range(256)}
    tok = Tokenizer(vocab, [], ["<|a|>", "<|b|>"])
    assert tok.special_ids == {"<|a|>": 256, "<|b|>": 257}
    assert tok.encode("x<|b|>") == [ord("x"), 257]
    assert len(vocab) == 256  # the caller's dict is not modified


def test_bpe_matches_the_textbook_algorithm_on_random_merges():
    rng = random.Random(1)
    for _ in range(20):
        vocab = {i: bytes([i]) for i in range(256)}
        merges = []
        for _ in range(30):
            a, b = rng.choice(list(vocab.values())[ord("a") : ord("e")] + [t for t in vocab.values() if len(t) > 1] or [b"a"]), None
            b = rng.choice([bytes([c]) for c in b"abcd "] + [t for t in vocab.values() if len(t) > 1])
            if a + b not in vocab.values():
                vocab[len(vocab)] = a + b
                merges.append((a, b))
        tok = Tokenizer(vocab, merges)
        for _ in range(20):
            text = "".join(rng.choice("abcd  '") for _ in range(rng.randrange(30)))
            assert tok.encode(text) == reference.encode(text, vocab, merges, []), (merges, text)


def test_decode_replaces_malformed_utf8(gpt2):
    byte_id = {t: i for i, t in gpt2.vocab.items()}
    euro = [byte_id[bytes([b])] for b in "€".encode("utf-8")]  # three single-byte tokens
    assert gpt2.decode(euro) == "€"
    assert gpt2.decode(euro[:2]) == "\ufffd"
    assert gpt2.decode(euro[:1] + gpt2.encode("ok")) == "\ufffdok"


def test_decode_unknown_id_is_a_clear_error(gpt2):
    with pytest.raises(LmcliError, match="not in the vocabulary"):
        gpt2.decode([1, 10**6])


def test_encode_iterable_over_a_file_equals_encode(gpt2, fixtures_dir):
    for name in ("tinystories_sample.txt", "special_token_double_newlines_non_whitespace.txt", "corpus.en"):
        path = fixtures_dir / name
        with open(path, encoding="utf-8") as f:
            assert list(gpt2.encode_iterable(f)) == gpt2.encode(path.read_text(encoding="utf-8"))


def test_encode_iterable_cuts_only_where_safe(gpt2, monkeypatch):
    # A tiny flush threshold makes the stream cut constantly: whitespace runs across lines,
    # contractions and special tokens split over pieces must still give the one-piece ids.
    monkeypatch.setattr(tokenizer_module, "TEXT_CUT_WINDOW", 4)
    rng = random.Random(2)
    pieces = ["a\n", "\n", "   \n", "  b", " it'", "s", " <|endof", "text|>", "\n\n", "x", "  ", "y"]
    assert list(gpt2.encode_iterable(pieces)) == gpt2.encode("".join(pieces))
    for _ in range(100):
        text = random_text(rng, rng.randrange(80)) + rng.choice(["", EOT, f"a {EOT} b"])
        cuts = sorted(rng.sample(range(len(text) + 1), min(len(text) + 1, 6)))
        pieces = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)])]
        assert list(gpt2.encode_iterable(pieces)) == gpt2.encode(text), pieces


def test_encode_iterable_is_lazy_and_memory_stays_flat(gpt2):
    line = "Once upon a time, there was a little robot.\n\n"
    first = list(itertools.islice(gpt2.encode_iterable(itertools.repeat(line)), 1000))  # infinite input
    assert first[:5] == gpt2.encode(line)[:5]
    tracemalloc.start()
    count = sum(1 for _ in gpt2.encode_iterable(itertools.repeat(line, 50_000)))  # ~2.3 MB of text
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    per_line = len(gpt2.encode(line * 2)) - len(gpt2.encode(line))  # "\n\n" splits before a word
    assert count == len(gpt2.encode(line)) + 49_999 * per_line
    assert peak < 8_000_000  # one 64k-character flush and its arrays; the whole stream would take ~100 MB


@pytest.mark.parametrize("path", ["arrays", "small"])
def test_bounded_caches_start_over_and_stay_exact(fixtures_dir, monkeypatch, tiktoken_gpt2, path):
    monkeypatch.setattr(fast_encode, "CACHE_ENTRIES", 20)
    monkeypatch.setattr(fast_encode, "SMALL_CACHE_ENTRIES", 20)
    monkeypatch.setattr(fast_encode, "SMALL_TEXT", 0 if path == "arrays" else 10**6)
    tok = Tokenizer.from_files(fixtures_dir / "gpt2_vocab.json", fixtures_dir / "gpt2_merges.txt", [EOT])
    text = (fixtures_dir / "tinystories_sample.txt").read_text(encoding="utf-8")
    sizes = []
    for paragraph in text.split("\n\n"):
        assert tok.encode(paragraph) == tiktoken_ids(tiktoken_gpt2, paragraph)
        size = tok._encoder._cache.entries if path == "arrays" else len(tok._encoder._small_cache)
        sizes.append(size)
        assert size <= 20 + len(paragraph)  # one text's new pre-tokens past the limit at most
    assert min(sizes[1:]) < max(sizes)  # it did start over


def test_from_dir_reads_special_tokens_from_meta(tmp_path):
    vocab = {i: bytes([i]) for i in range(256)} | {256: b"ab", 257: b"<|doc|>"}
    save_tokenizer(tmp_path, vocab, [(b"a", b"b")], ["<|doc|>"])
    tok = Tokenizer.from_dir(tmp_path)
    assert tok.special_tokens == ["<|doc|>"]
    assert tok.encode("ab<|doc|>ab") == [256, 257, 256]
    assert Tokenizer.from_dir(tmp_path, special_tokens=[]).encode("<|doc|>")[0] == ord("<")


def test_from_dir_errors(tmp_path, fixtures_dir):
    with pytest.raises(LmcliError, match="does not exist"):
        Tokenizer.from_dir(tmp_path / "nope")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.json").write_bytes((fixtures_dir / "train-bpe-reference-vocab.json").read_bytes())
    (bad / "merges.txt").write_bytes((fixtures_dir / "gpt2_merges.txt").read_bytes())
    with pytest.raises(LmcliError, match="do not belong together"):
        Tokenizer.from_dir(bad)


def test_vocabulary_without_all_bytes_is_rejected():
    with pytest.raises(LmcliError, match="lacks 1 of the 256 single bytes"):
        Tokenizer({i: bytes([i]) for i in range(255)}, [])


def one_at_a_time_bpe(byte_ids: list[int], merges: list[tuple[int, int, int]], word: bytes) -> list[int]:
    """The reference loop: merge the lowest-rank adjacent pair (leftmost on a tie) until none merges."""
    ranks = {}
    for rank, (a, b, _) in enumerate(merges):
        ranks.setdefault((a, b), rank)
    ids = [byte_ids[b] for b in word]
    while True:
        pairs = [(ranks.get(pair, len(merges)), i) for i, pair in enumerate(zip(ids, ids[1:]))]
        rank, i = min(pairs, default=(len(merges), 0))
        if rank == len(merges):
            return ids
        ids[i : i + 2] = [merges[rank][2]]


@pytest.mark.parametrize("dense_ids", [0, 270, 1024])  # binary search only, both, dense only
def test_merge_words_equals_the_one_word_loop_on_random_merges(dense_ids):
    rng = random.Random(3)
    for _ in range(30):
        byte_ids = rng.sample(range(256), 256)  # bytes need not have ids 0..255
        tokens = [bytes([b]) for b in range(256)]
        ids_of = {t: byte_ids[t[0]] for t in tokens}
        merges = []
        for _ in range(rng.randrange(1, 40)):
            a, b = rng.choice(tokens[97:100] + tokens[256:]), rng.choice(tokens[97:100] + tokens[256:])
            if a + b not in ids_of:
                ids_of[a + b] = len(tokens)
                tokens.append(a + b)
            merges.append((ids_of[a], ids_of[b], ids_of[a + b]))  # repeated pairs keep their first rank
        table = MergeTable(byte_ids, merges, max(ids_of.values()), dense_ids)
        words = [bytes(rng.choice(b"abcd") for _ in range(rng.choice([1, 2, 5, 40]))) for _ in range(50)]
        ids, counts = merge_words(table, words)
        assert counts.sum() == len(ids)
        ends = np.cumsum(counts)
        got = [ids[e - c : e].tolist() for e, c in zip(ends, counts)]
        assert got == [one_at_a_time_bpe(byte_ids, merges, w) for w in words]


def test_merge_words_on_gpt2_matches_tiktoken_on_long_runs(gpt2, tiktoken_gpt2):
    # Runs of one character merge hundreds of times, one pair per round.
    texts = ["=" * 700, " " * 301 + "x", "a" * 257, "-=" * 100, "😀" * 40]
    for text in texts:
        assert gpt2.encode(text) == tiktoken_ids(tiktoken_gpt2, text)


def test_long_text_is_encoded_in_pieces_exactly(gpt2, fixtures_dir, monkeypatch, tiktoken_gpt2):
    monkeypatch.setattr(fast_encode, "PIECE_CHARS", 64)
    monkeypatch.setattr(fast_encode, "SMALL_TEXT", 0)
    pieces = []
    encode_piece = gpt2._encoder._encode_piece
    monkeypatch.setattr(gpt2._encoder, "_encode_piece", lambda text: pieces.append(text) or encode_piece(text))
    texts = [(fixtures_dir / name).read_text(encoding="utf-8") for name in ["tinystories_sample.txt", "german.txt"]]
    rng = random.Random(5)
    texts += [random_text(rng, 600) for _ in range(20)]
    texts.append("\n".join(["日本語の文章です。", "次の行。\u3000全角スペース", "ｘ\x1c\nｙ"] * 40))  # no ASCII at all to cut after
    for text in texts:
        pieces.clear()
        assert gpt2.encode(text) == tiktoken_ids(tiktoken_gpt2, text)
        assert "".join(pieces) == text and len(pieces) > len(text) // 300, len(pieces)
    no_cut = "x" * 1000 + " " + "\u00e9" * 300  # no safe cut in the first pieces: encoded in one go
    assert gpt2.encode(no_cut) == tiktoken_ids(tiktoken_gpt2, no_cut)
