"""Tests for byte-level BPE training: exactness (the CS336 reference and a naive trainer), special
tokens, the chunked parallel path, bad inputs, and the ``lmcli train-bpe`` command."""

from __future__ import annotations

import json
import os
import pstats
import random
import signal
import time
from array import array
from collections import Counter

import numpy as np
import pytest

from lmcli.errors import LmcliError
from lmcli.tokenizer import fast_count, fast_merges, fast_pretoken_ids, reference, train_bpe
from lmcli.tokenizer.chunks import bounded_pieces, chunk_ranges, read_text
from lmcli.tokenizer.fast_encode import GPT2_ASCII_PATTERN
from lmcli.tokenizer.fast_pretoken_ids import packed_keys, padded_bytes, unpacked_keys
from lmcli.tokenizer.files import load_merges, load_tokenizer_files, load_vocab, read_meta
from lmcli.tokenizer.pretokenize import GPT2_PATTERN
from lmcli.tokenizer.sources import Piece
from lmcli.tokenizer.train import TrainStats

EOT = "<|endoftext|>"


def reference_merges(text: str, vocab_size: int, special_tokens: list[str]) -> list[tuple[bytes, bytes]]:
    """The merges of the plain algorithm (recount every pair after every merge: slow, obviously right)."""
    return reference.train_bpe(text, vocab_size, special_tokens)[1]


def write(tmp_path, text: str | bytes, name: str = "corpus.txt"):
    path = tmp_path / name
    (path.write_bytes if isinstance(text, bytes) else lambda t: path.write_text(t, encoding="utf-8"))(text)
    return path


# --- exactness -------------------------------------------------------------------------------


def test_matches_cs336_reference(fixtures):
    vocab, merges = train_bpe(fixtures / "corpus.en", 500, [EOT])
    assert merges == load_merges(fixtures / "train-bpe-reference-merges.txt")
    reference_vocab = load_vocab(fixtures / "train-bpe-reference-vocab.json")
    assert set(vocab.values()) == set(reference_vocab.values())
    assert set(vocab) == set(range(500))
    assert vocab[0] == EOT.encode()
    assert [vocab[1 + b] for b in range(256)] == [bytes([b]) for b in range(256)]
    assert [vocab[257 + k] for k in range(len(merges))] == [a + b for a, b in merges]


@pytest.mark.parametrize("seed", range(12))
def test_matches_the_reference_trainer_including_ties(tmp_path, seed):
    # Tiny alphabets make many pairs tie, which exercises the lexicographic tie-break.
    rng = random.Random(seed)
    alphabet = rng.choice(["ab", "abc ", "aab\n", "xyz éé  ", "a'sb 12 \t\n"])
    text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 400)))
    if seed % 3 == 0:
        text = text.replace("c", EOT)
    vocab_size = 257 + rng.randint(1, 60)
    _, merges = train_bpe(write(tmp_path, text), vocab_size, [EOT], workers=1)
    assert merges == reference_merges(text, vocab_size, [EOT])


def test_matches_the_reference_trainer_on_stories(fixtures, tmp_path):
    text = (fixtures / "tinystories_sample.txt").read_text(encoding="utf-8")
    _, merges = train_bpe(fixtures / "tinystories_sample.txt", 400, [EOT])
    assert merges == reference_merges(text, 400, [EOT])


def test_ascii_pattern_equals_gpt2_pattern():
    rng = random.Random(0)
    alphabet = [chr(i) for i in range(128)] + [" "] * 20 + ["'", "s", "t", "l", "\n", "1"] * 6
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert GPT2_ASCII_PATTERN.findall(text) == GPT2_PATTERN.findall(text), text


def test_array_counts_equal_regex_counts(monkeypatch):
    monkeypatch.setattr(fast_count, "BATCH_CHARS", 50)  # batches of documents and cuts inside long ones
    rng = random.Random(4)
    words = ["Grüße", ",", " naïve", " café", "!", "  ", "It's", " 2024", "\u00a0alles", "\n\n", "\n", " \t", "x" * 20,
             " ünïcödé-wörds-longer-than-15-bytes", "'ll", "😀", EOT, EOT]
    for _ in range(30):
        text = "".join(rng.choice(words) for _ in range(rng.randrange(0, 200)))
        counts = fast_count.PretokenCounts()
        for batch in fast_count._batches(text.split(EOT)):
            counts.add(batch)
        assert counts.counter() == reference.count_pretokens(text, [EOT])


def test_packed_counts_added_with_arrays_equal_adding_them_one_by_one(monkeypatch):
    monkeypatch.setattr(fast_pretoken_ids, "PROBE_SLICE", 7)  # a received set is probed a slice at a time
    rng = random.Random(5)
    alphabet = ["a", "b", " ", "é", "😀", "x" * 7]  # pre-tokens of 0 to 40 bytes: either side of the 15-byte keys
    fast, plain = fast_count.PretokenCounts(), Counter()
    for _ in range(20):  # sets from several workers, overlapping
        sent = fast_count.PretokenCounts()
        sent._long.update({"".join(rng.choices(alphabet, k=rng.randrange(4, 9))).encode(): rng.randrange(1, 9) for _ in range(10)})
        sent.add(["".join(rng.choices(alphabet[:5], k=rng.randrange(1, 60))) for _ in range(5)])
        packed = sent.packed()
        fast.add_packed(packed)
        fast_count.add_packed(plain, packed)
    assert fast.counter() == plain and any(len(token) > 15 for token in plain)


def test_packed_keys_give_back_their_bytes():
    rng = random.Random(7)
    pieces = [bytes(rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)]) for _ in range(n)) for n in [*range(16), *rng.choices(range(16), k=200)]]
    blob = b"".join(pieces)
    lengths = np.array([len(p) for p in pieces])
    lo, hi = packed_keys(padded_bytes(blob), np.cumsum(lengths) - lengths, lengths)
    assert unpacked_keys(lo, hi)[0] == blob and unpacked_keys(lo, hi)[1].tolist() == lengths.tolist()


# --- special tokens --------------------------------------------------------------------------


def test_special_tokens_are_never_split_or_merged_across(tmp_path):
    # Without the split, "x<" and "|>x" would be by far the most frequent pairs.
    text = ("x" + EOT) * 200 + "hello world hello"
    vocab, merges = train_bpe(write(tmp_path, text), 300, [EOT])
    assert vocab[0] == EOT.encode()
    assert sum(t == EOT.encode() for t in vocab.values()) == 1
    for token in vocab.values():
        assert token == EOT.encode() or not ({ord("<"), ord("|"), ord(">")} & set(token) and len(token) > 1)
    assert merges == reference_merges(text, 300, [EOT])


def test_longest_special_token_wins_when_they_overlap(tmp_path):
    text = "a<|x|><|x|><|y|>b<|x|>a" * 30
    _, merges = train_bpe(write(tmp_path, text), 270, ["<|x|>", "<|x|><|y|>"])
    assert merges == reference_merges(text, 270, ["<|x|>", "<|x|><|y|>"])


# --- chunked and parallel --------------------------------------------------------------------


@pytest.mark.parametrize("special", [[EOT], [], ["<| sep |>"]])
def test_chunk_ranges_cut_only_at_pretoken_boundaries(tmp_path, special):
    rng = random.Random(1)
    words = ["hello", " world", "  ", "\n\n", "x.y", "über", "\t", "it's", " 42", *(special or ["?"]),
             "日本語。", "全角\u3000", "\u00a0", "\u2028", "’", "\x85", "😀"]
    path = write(tmp_path, "".join(rng.choice(words) for _ in range(5000)))
    ranges = chunk_ranges(path, special, chunk_bytes=97)
    assert len(ranges) > 50 and ranges[0][0] == 0 and ranges[-1][1] == path.stat().st_size
    assert all(end == next_start for (_, end), (next_start, _) in zip(ranges, ranges[1:]))
    whole = reference.count_pretokens(path.read_text(encoding="utf-8"), special)
    chunked = sum((reference.count_pretokens(read_text(path, s, e), special) for s, e in ranges), Counter())
    assert chunked == whole


def test_text_without_ascii_is_cut_after_its_non_space_characters(tmp_path):
    lines = ["日本語の文章です。", "全角スペースで終わる\u3000", "ｘ", "ノーブレーク\u00a0"] * 200
    path = write(tmp_path, "\n".join(lines))
    ranges = chunk_ranges(path, [], chunk_bytes=500)
    assert len(ranges) > 20
    data = path.read_bytes()
    for _, end in ranges[:-1]:
        before = data[:end].decode("utf-8")
        assert not before[-1].isspace() and data[end:end + 1] == b"\n"
    assert sum((reference.count_pretokens(read_text(path, s, e), []) for s, e in ranges), Counter()) == (
        reference.count_pretokens(path.read_text(encoding="utf-8"), [])
    )


def test_bounded_pieces_cut_only_at_pretoken_boundaries():
    rng = random.Random(2)
    parts = ["word", " x", "\n", "\n\n", "  \n", "é\n", "\x1c\n", "\t", ".", "\u3000\n"]
    text = "".join(rng.choice(parts) for _ in range(4000))
    pieces = list(bounded_pieces(text, max_chars=20))
    assert len(pieces) > 100 and "".join(pieces) == text
    assert sum((Counter(GPT2_PATTERN.findall(p)) for p in pieces), Counter()) == Counter(GPT2_PATTERN.findall(text))


def test_parallel_small_chunks_give_the_same_merges(fixtures, monkeypatch):
    single = train_bpe(fixtures / "corpus.en", 700, [EOT], workers=1)
    stats = TrainStats()
    parallel = train_bpe(fixtures / "corpus.en", 700, [EOT], workers=2, chunk_bytes=8000, stats=stats)
    assert parallel == single
    assert stats.merges == 700 - 257
    # Workers that hand over their Counters many times along the way (forked: they see the patch).
    monkeypatch.setattr(fast_count, "FLUSH_ENTRIES", 50)
    progress = []
    flushed = train_bpe(fixtures / "corpus.en", 700, [EOT], workers=3, chunk_bytes=5000, on_bytes=progress.append)
    assert flushed == single and sum(progress) == (fixtures / "corpus.en").stat().st_size


# --- bad input -------------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(tmp_path):
    good = write(tmp_path, "some text to train on")
    with pytest.raises(LmcliError, match="does not exist"):
        train_bpe(tmp_path / "missing.txt", 300, [EOT])
    with pytest.raises(LmcliError, match="is a directory"):
        train_bpe(tmp_path, 300, [EOT])
    with pytest.raises(LmcliError, match="is empty"):
        train_bpe(write(tmp_path, "", "empty.txt"), 300, [EOT])
    with pytest.raises(LmcliError, match="at least 257"):
        train_bpe(good, 256, [EOT])
    with pytest.raises(LmcliError, match="cannot be empty"):
        train_bpe(good, 300, [""])
    with pytest.raises(LmcliError, match="unknown errors mode"):
        train_bpe(good, 300, [EOT], errors="ignore")


def test_invalid_utf8_names_the_byte_offset(tmp_path):
    path = write(tmp_path, b"hello world\n" * 10 + b"caf\xe9 au lait")
    with pytest.raises(LmcliError, match=r"byte offset 123 .*--errors replace"):
        train_bpe(path, 300, [EOT])
    vocab, _ = train_bpe(path, 300, [EOT], errors="replace")
    assert "\ufffd".encode() in vocab.values() or any(b"\xef\xbf" in t for t in vocab.values())


def test_invalid_utf8_found_by_a_worker_names_its_file_offset(tmp_path):
    good = b"one two three four five six seven\n" * 400
    path = write(tmp_path, good + b"bad \xc3\x28 byte\n" + good)
    with pytest.raises(LmcliError, match=f"byte offset {len(good) + 4} "):
        train_bpe(path, 300, [EOT], workers=2, chunk_bytes=1000)


def killed_at_once(*args) -> None:
    """A counting worker that the out-of-memory killer takes as it starts."""
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_counting_worker_is_one_error_found_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(fast_count, "_worker", killed_at_once)
    path = write(tmp_path, b"one two three four five six seven\n" * 60_000)  # 2 MB: 128 chunks of 16 KB
    counted = []

    def slowly(n: int) -> None:  # 20 ms a chunk: the worker has 1.3 s to start and die, even on a busy machine
        counted.append(n)
        time.sleep(0.02)

    with pytest.raises(LmcliError, match="a pre-tokenizing worker process died"):
        fast_count.count_file_pretokens(path, [EOT], workers=2, chunk_bytes=1 << 14, on_bytes=slowly)
    assert sum(counted) < path.stat().st_size / 2  # found between this process's own chunks, not after all of them


def test_a_killed_streaming_worker_is_one_error_found_at_once(monkeypatch):
    monkeypatch.setattr(fast_count, "_stream_worker", killed_at_once)
    handed_over = []

    def stream():
        for i in range(1, 2_000):
            handed_over.append(i)
            yield Piece("one two three " * 100, i)

    with pytest.raises(LmcliError, match="a pre-tokenizing worker process died"):
        fast_count.count_stream_pretokens(stream(), [EOT], workers=2)
    assert len(handed_over) < 1_000  # the reading stopped as soon as it was found


def test_stops_when_pairs_run_out(tmp_path):
    stats = TrainStats()
    vocab, merges = train_bpe(write(tmp_path, "abcd abcd"), 1000, [EOT], stats=stats)
    assert merges == reference_merges("abcd abcd", 1000, [EOT]) and len(merges) == 4
    assert len(vocab) == 257 + 4 and stats.merges < stats.requested_merges


def test_words_hold_every_token_id_of_the_vocabulary():
    # Words are 16-bit arrays while every id fits; a larger vocabulary needs 32 bits.
    for num_merges in (100, 65_280, 65_281, 200_000):
        loop = fast_merges.MergeLoop.of({b"ab": 2}, num_merges)
        loop.text[0] = 255 + num_merges  # the last id a merge creates
        assert loop.text[0] == 255 + num_merges
        if num_merges > 65_280:
            with pytest.raises(OverflowError):
                array("H", [255 + num_merges])



@pytest.mark.parametrize("share, long_word", [(0.02, 10**9), (0.3, 10**9), (0.02, 4)])
def test_leaving_rare_pairs_untracked_gives_the_same_merges(monkeypatch, share, long_word):
    """Pairs rarer than the floor are counted again only once no tracked pair is left: a high share makes
    the loop start with few pairs and count again several times, and the merges stay the reference's."""
    rng = random.Random(11)
    monkeypatch.setattr(fast_merges, "LONG_WORD", long_word)
    monkeypatch.setattr(fast_merges, "TRACKED_SHARE", share)
    counted_again = 0
    for _ in range(40):
        alphabet = rng.choice(["ab", "abc ", "xyz ", "a'sb 12"])
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(50, 600)))
        words = reference.count_pretokens(text, [EOT])
        n = rng.randrange(1, 80)
        loop = fast_merges.MergeLoop.of(dict(words), n)
        first_floor = loop.floor
        assert loop.run(n) == reference_merges(text, 256 + 1 + n, [EOT]), text
        counted_again += loop.floor < first_floor
    assert counted_again >= 10


# --- the command -----------------------------------------------------------------------------


def test_cli_trains_writes_gpt2_files_and_json(cli, fixtures, tmp_path):
    out = tmp_path / "tok"
    result = cli("train-bpe", fixtures / "corpus.en", "--vocab", 500, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["vocab_size"] == 500 and summary["merges"] == 243 and not summary["ran_out_of_pairs"]
    assert set(summary["seconds"]) == {"pretokenize", "count", "merge", "write", "total"}
    assert summary["peak_memory_mb"] > 0 and len(summary["longest_tokens"]) == 5
    assert EOT not in summary["longest_tokens"] and all(len(t) >= 4 for t in summary["longest_tokens"])
    vocab, merges = load_tokenizer_files(out / "vocab.json", out / "merges.txt")
    assert merges == load_merges(fixtures / "train-bpe-reference-merges.txt")
    assert read_meta(out)["requested_vocab_size"] == 500 and read_meta(out)["special_tokens"] == [EOT]


def test_cli_output_loads_in_hugging_face_tokenizers_and_tiktoken(cli, fixtures, tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    tiktoken = pytest.importorskip("tiktoken")
    out = tmp_path / "tok"
    assert cli("train-bpe", fixtures / "corpus.en", "--vocab", 400, "--out", out).exit_code == 0
    text = "the steel ingot mould, iron cement!"
    hf = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(str(out / "vocab.json"), str(out / "merges.txt")))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = tokenizers.decoders.ByteLevel()
    ids = hf.encode(text).ids
    assert len(ids) < len(text) and hf.decode(ids) == text
    vocab, _ = load_tokenizer_files(out / "vocab.json", out / "merges.txt")
    tt = tiktoken.Encoding(
        name="trained", pat_str=GPT2_PATTERN.pattern, special_tokens={EOT: 0},
        mergeable_ranks={token: i for i, token in vocab.items() if i},
    )
    assert tt.encode(text) == ids


def test_cli_default_input_is_the_demo_corpus_and_summary_table(cli, tmp_path):
    result = cli("train-bpe", "--vocab", 300)
    assert result.exit_code == 0, result.output
    assert "Trained a 300-token BPE tokenizer" in result.stdout and "demo-train.txt" in result.stdout
    assert "peak memory" in result.stdout and "merge" in result.stdout
    assert (tmp_path / "workspace" / "tokenizer" / "merges.txt").is_file()


def test_cli_refuses_to_overwrite_a_different_tokenizer(cli, fixtures, tmp_path):
    out = tmp_path / "tok"
    assert cli("train-bpe", fixtures / "corpus.en", "--vocab", 300, "--out", out).exit_code == 0
    before = (out / "merges.txt").read_text()
    again = cli("train-bpe", fixtures / "corpus.en", "--vocab", 300, "--out", out)
    assert again.exit_code == 0  # the identical command may overwrite its own output
    other = cli("train-bpe", fixtures / "corpus.en", "--vocab", 320, "--out", out)
    assert other.exit_code == 1 and "different tokenizer" in other.stderr and "--force" in other.stderr
    assert (out / "merges.txt").read_text() == before
    forced = cli("train-bpe", fixtures / "corpus.en", "--vocab", 320, "--out", out, "--force")
    assert forced.exit_code == 0 and len(load_merges(out / "merges.txt")) == 320 - 257
    (out / "tokenizer-meta.json").unlink()  # e.g. GPT-2's own files: no record of how they were made
    foreign = cli("train-bpe", fixtures / "corpus.en", "--vocab", 320, "--out", out)
    assert foreign.exit_code == 1 and "without a readable tokenizer-meta.json" in foreign.stderr


def test_cli_bad_inputs_fail_in_one_line_without_output(cli, tmp_path):
    out = tmp_path / "tok"
    cases = [
        ((tmp_path / "missing.txt",), "does not exist"),
        ((tmp_path,), "is a directory"),
        ((write(tmp_path, "", "empty.txt"),), "is empty"),
        ((write(tmp_path, "text"), "--vocab", 200), "too small"),
        ((write(tmp_path, b"ok \xff\xfe", "bad.txt"),), "byte offset 3"),
        ((write(tmp_path, "text"), "--errors", "bogus"), "unknown errors mode"),
    ]
    for args, message in cases:
        vocab = [] if "--vocab" in args else ["--vocab", 300]
        result = cli("train-bpe", *args, *vocab, "--out", out)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr and "Traceback" not in result.output
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("error: ") and sum("error" in line for line in lines) == 1, result.stderr
        assert not (out / "vocab.json").exists()
    result = cli("train-bpe", write(tmp_path, "text"), "--out", write(tmp_path, "x", "file.txt"))
    assert result.exit_code == 1 and "not a directory" in result.stderr


def test_cli_warns_when_the_corpus_runs_out_of_pairs(cli, tmp_path):
    out = tmp_path / "tok"
    result = cli("train-bpe", write(tmp_path, "abcd abcd"), "--vocab", 1000, "--out", out)
    assert result.exit_code == 0 and "ran out of pairs" in result.stderr
    assert len(json.loads((out / "vocab.json").read_text(encoding="utf-8"))) == 257 + 4


def test_cli_with_no_room_for_merges_says_there_are_none(cli, tmp_path):
    result = cli("train-bpe", write(tmp_path, "abcd abcd"), "--vocab", 257, "--out", tmp_path / "tok")
    assert result.exit_code == 0 and "longest tokens: none (no merges" in result.stdout


def test_cli_profile_writes_pstats(cli, fixtures, tmp_path):
    prof = tmp_path / "train.prof"
    result = cli("train-bpe", fixtures / "corpus.en", "--vocab", 300, "--out", tmp_path / "tok", "--profile", prof)
    assert result.exit_code == 0, result.output
    assert pstats.Stats(str(prof)).total_calls > 0


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_input(tmp_path):
    path = write(tmp_path, "text")
    path.chmod(0)
    with pytest.raises(LmcliError, match="not readable"):
        train_bpe(path, 300, [EOT])


# --- pathological input ----------------------------------------------------------------------


def test_long_words_take_the_linked_list_path_and_give_the_same_merges(monkeypatch):
    rng = random.Random(6)
    for _ in range(60):
        words = Counter()
        for _ in range(rng.randrange(1, 5)):
            alphabet = rng.choice([b"ab", b"abc", b"a", b"abcd"])
            words[bytes(rng.choice(alphabet) for _ in range(rng.choice([2, 5, 30, 70, 200])))] += rng.randrange(1, 4)
        n = rng.randrange(1, 60)
        monkeypatch.setattr(fast_merges, "LONG_WORD", 10**9)
        as_lists = fast_merges.MergeLoop.of(dict(words), n).run(n)
        monkeypatch.setattr(fast_merges, "LONG_WORD", 4)
        assert fast_merges.MergeLoop.of(dict(words), n).run(n) == as_lists, words


def test_one_very_long_word_trains_like_the_reference_and_prints_short(cli, tmp_path):
    word = "".join(random.Random(3).choice("acgt") for _ in range(3000))
    path = write(tmp_path, word)
    vocab, merges = train_bpe(path, 300, [EOT])
    assert merges == reference_merges(word, 300, [EOT])
    result = cli("train-bpe", path, "--vocab", "300", "--out", tmp_path / "tok", "--json")
    assert all(len(t) < 80 for t in json.loads(result.stdout)["longest_tokens"])
