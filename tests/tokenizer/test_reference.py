"""The plain algorithms of ``lmcli.tokenizer.reference`` are right (the CS336 reference merges),
and the fast tokenizer equals them on real text and on random text, through both encode paths."""

from __future__ import annotations

import random

import pytest

from lmcli.tokenizer import Tokenizer, fast_encode, reference, train_bpe
from lmcli.tokenizer.files import load_merges, load_vocab
from tests.tokenizer.test_tokenizer import random_text

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2(fixtures_dir) -> Tokenizer:
    return Tokenizer.from_files(fixtures_dir / "gpt2_vocab.json", fixtures_dir / "gpt2_merges.txt", [EOT])


@pytest.fixture(scope="module")
def fixtures_dir():
    from tests.conftest import FIXTURES

    if not FIXTURES.is_dir():
        pytest.skip(f"CS336 fixtures not found at {FIXTURES} (../shared is absent)")
    return FIXTURES


def test_the_reference_trainer_gives_the_cs336_reference_merges(fixtures_dir):
    vocab, merges = reference.train_bpe((fixtures_dir / "corpus.en").read_text(encoding="utf-8"), 500, [EOT])
    assert merges == load_merges(fixtures_dir / "train-bpe-reference-merges.txt")
    assert set(vocab.values()) == set(load_vocab(fixtures_dir / "train-bpe-reference-vocab.json").values())


def test_the_fast_trainer_returns_the_reference_vocab_and_merges(fixtures_dir, tmp_path):
    text = (fixtures_dir / "tinystories_sample.txt").read_text(encoding="utf-8") * 3 + EOT + "ünïcödé 😀 naïve"
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    assert train_bpe(path, 420, [EOT]) == reference.train_bpe(text, 420, [EOT])


@pytest.mark.parametrize("small_text", [0, 10**9])  # the array path for every text, then the dict path
@pytest.mark.parametrize("name", ["tinystories_sample.txt", "german.txt", "address.txt",
                                  "special_token_double_newlines_non_whitespace.txt", "special_token_trailing_newlines.txt"])
def test_fast_encode_equals_reference_encode_on_the_fixtures(gpt2, fixtures_dir, name, small_text, monkeypatch):
    monkeypatch.setattr(fast_encode, "SMALL_TEXT", small_text)
    text = (fixtures_dir / name).read_text(encoding="utf-8")
    ids = gpt2.encode(text)
    assert ids == reference.encode(text, gpt2.vocab, gpt2.merges, gpt2.special_tokens)
    assert gpt2.decode(ids) == reference.decode(ids, gpt2.vocab) == text


@pytest.mark.parametrize("small_text", [0, 10**9])
def test_fast_encode_equals_reference_encode_on_random_text(gpt2, small_text, monkeypatch):
    monkeypatch.setattr(fast_encode, "SMALL_TEXT", small_text)
    rng = random.Random(7)
    for _ in range(60):
        text = random_text(rng, rng.randrange(200)) + rng.choice(["", EOT, f" {EOT}\n"]) + random_text(rng, 20)
        assert gpt2.encode(text) == reference.encode(text, gpt2.vocab, gpt2.merges, gpt2.special_tokens), text


def test_reference_bpe_merges_lowest_rank_first_and_every_occurrence():
    ranks = {(b"a", b"a"): 0, (b"b", b"c"): 1, (b"aa", b"bc"): 2}
    assert reference.bpe(b"aaabc", ranks) == [b"aa", b"a", b"bc"]  # (a, a) first, left to right; then (b, c)
    assert reference.bpe(b"aaaa", ranks) == [b"aa", b"aa"]
    assert reference.bpe(b"aabc", ranks) == [b"aabc"]
    assert reference.bpe(b"x", ranks) == [b"x"]
