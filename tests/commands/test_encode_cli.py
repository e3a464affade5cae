"""Encoding files to .npy (parallel chunks equal one-piece encoding, atomic writes), lmcli encode/decode/stats."""

from __future__ import annotations

import json
import os
import random
import signal
import time

import numpy as np
import pytest

from lmcli.errors import LmcliError
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer import encode_file as encode_file_module
from lmcli.tokenizer.encode_file import encode_file
from lmcli.tokenizer.files import save_tokenizer
from lmcli.tokenizer.stats import document_ranges

EOT = "<|endoftext|>"


@pytest.fixture
def gpt2_dir(fixtures, tmp_path):
    """A tokenizer directory holding GPT-2's files (no meta: special tokens default to <|endoftext|>)."""
    d = tmp_path / "gpt2"
    d.mkdir()
    (d / "vocab.json").symlink_to(fixtures / "gpt2_vocab.json")
    (d / "merges.txt").symlink_to(fixtures / "gpt2_merges.txt")
    return d


@pytest.fixture
def gpt2(gpt2_dir):
    return Tokenizer.from_dir(gpt2_dir)


def adversarial_text(rng: random.Random, n: int) -> str:
    """Whitespace runs of every kind, contractions, digits, non-Latin scripts, special tokens."""
    atoms = [" ", "  ", "   ", "\n", "\n\n", " \n ", "\t", "\r\n", "\xa0", "\u3000", "\x1c", "word", "it's",
             "'ll", "x", "42", "日本語", "é", "🙃", ".", "...", EOT, EOT + EOT, "<|endof", "text|>"]
    return "".join(rng.choice(atoms) for _ in range(n))


@pytest.mark.parametrize("kind", ["documents", "no_special_token", "adversarial", "no_ascii_space"])
def test_parallel_chunks_equal_one_piece(gpt2, fixtures, tmp_path, kind):
    rng = random.Random(kind)
    texts = {
        "documents": (fixtures / "tinystories_sample.txt").read_text(encoding="utf-8") * 8,
        "no_special_token": (fixtures / "corpus.en").read_text(encoding="utf-8")[:40_000],
        "adversarial": adversarial_text(rng, 6000),
        "no_ascii_space": "日本語の文章、" * 3000,  # no safe cut at all: one chunk
    }
    text = texts[kind]
    src = tmp_path / "in.txt"
    src.write_text(text, encoding="utf-8")
    result = encode_file(gpt2, src, tmp_path / "out.npy", workers=2, chunk_bytes=2048)
    ids = np.load(tmp_path / "out.npy", mmap_mode="r")
    assert ids.dtype == np.uint16
    assert ids.tolist() == gpt2.encode(text)
    assert result.tokens == len(ids) and result.bytes == src.stat().st_size
    assert (result.chunks == 1) == (kind == "no_ascii_space")


def test_large_vocabulary_uses_uint32_and_uint16_overflow_is_an_error(tmp_path):
    vocab = {i: bytes([i]) for i in range(256)} | {70_000: b"<|big|>"}
    save_tokenizer(tmp_path / "tok", vocab, [], ["<|big|>"])
    tok = Tokenizer.from_dir(tmp_path / "tok")
    src = tmp_path / "in.txt"
    src.write_text("ab<|big|>c", encoding="utf-8")
    encode_file(tok, src, tmp_path / "out.npy")
    ids = np.load(tmp_path / "out.npy")
    assert ids.dtype == np.uint32 and ids.tolist() == [97, 98, 70_000, 99]
    with pytest.raises(LmcliError, match="overflow uint16"):
        encode_file(tok, src, tmp_path / "small.npy", dtype="uint16")
    assert not (tmp_path / "small.npy").exists()


def test_interrupted_encode_leaves_nothing_that_looks_like_a_result(gpt2, fixtures, tmp_path, monkeypatch):
    src = tmp_path / "in.txt"
    src.write_text((fixtures / "corpus.en").read_text(encoding="utf-8"), encoding="utf-8")
    calls = []

    def interrupt_second_chunk(byte_range):
        calls.append(byte_range)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(byte_range)

    real = encode_file_module._encode_range
    monkeypatch.setattr(encode_file_module, "_encode_range", interrupt_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        encode_file(gpt2, src, tmp_path / "out.npy", workers=1, chunk_bytes=4096)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpt2", "in.txt"]


def square_or_die(n: int) -> int:
    """A worker's task (module-level, so the pool can send it by name): 13 is the out-of-memory killer."""
    if n == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return n * n


def test_a_worker_that_is_killed_ends_the_encoding_with_one_error_not_a_hang():
    init = (None, "", np.uint16, "strict")
    assert list(encode_file_module._in_order(square_or_die, range(12), 2, init)) == [n * n for n in range(12)]
    start = time.monotonic()
    with pytest.raises(LmcliError, match="an encoding worker process died"):  # multiprocessing.Pool waited forever here
        list(encode_file_module._in_order(square_or_die, range(40), 2, init))
    assert time.monotonic() - start < 30


def test_document_ranges_find_separators_across_blocks(monkeypatch, tmp_path):
    monkeypatch.setattr("lmcli.tokenizer.stats.SCAN_BLOCK", 5)  # separators straddle every block edge
    text = f"one{EOT}{EOT}two\n{EOT}three{EOT}"
    path = tmp_path / "docs.txt"
    path.write_text(text, encoding="utf-8")
    data = text.encode()
    assert [data[a:b].decode() for a, b in document_ranges(path, EOT)] == ["one", "two\n", "three"]


def test_cli_encode_default_demo_splits_and_decode(cli, gpt2_dir, gpt2, tmp_path):
    result = cli("encode", "--tokenizer", gpt2_dir, "--workers", "2", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    data = tmp_path / "workspace" / "data"
    assert [f["output"] for f in report["files"]] == [str(data / "train.npy"), str(data / "valid.npy")]
    valid_text = (data / "demo-valid.txt").read_text(encoding="utf-8")
    valid = np.load(data / "valid.npy", mmap_mode="r")
    assert valid.tolist() == gpt2.encode(valid_text)
    assert report["files"][1]["tokens"] == len(valid)

    result = cli("decode", data / "valid.npy", "--tokenizer", gpt2_dir, "--start", "10", "--count", "50")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == gpt2.decode(valid[10:60].tolist())


def test_cli_encode_input_summary(cli, gpt2_dir, fixtures, tmp_path):
    result = cli("encode", fixtures / "tinystories_sample.txt", "--tokenizer", gpt2_dir)
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "workspace" / "data" / "tinystories_sample.npy"
    assert out.is_file()
    assert "tokens (uint16)" in result.stdout and "bytes/token" in result.stdout and "MB/s" in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["encode", "missing.txt", "--tokenizer", "{gpt2}"], "does not exist"),
        (["encode", "{gpt2}", "--tokenizer", "{gpt2}"], "is a directory without a saved dataset or .parquet/.jsonl files"),
        (["stats", "{gpt2}", "--tokenizer", "{gpt2}"], "is a directory without a saved dataset or .parquet/.jsonl files"),
        (["encode", "{sample}", "--tokenizer", "no-such-dir"], "does not exist"),
        (["encode", "{sample}", "--tokenizer", "{mismatched}"], "do not belong together"),
        (["encode", "--tokenizer", "{gpt2}", "--out", "x.npy"], "--out and --out-dir need INPUT files"),
        (["decode", "{ids}", "--tokenizer", "{gpt2}"], "out of range"),
        (["decode", "{sample}", "--tokenizer", "{gpt2}"], "not a .npy"),
    ],
)
def test_cli_bad_input_is_one_clear_line(cli, gpt2_dir, fixtures, tmp_path, args, message):
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    (mismatched / "vocab.json").write_bytes((fixtures / "train-bpe-reference-vocab.json").read_bytes())
    (mismatched / "merges.txt").write_bytes((fixtures / "gpt2_merges.txt").read_bytes())
    np.save(tmp_path / "ids.npy", np.array([1, 2, 60_000], dtype=np.uint16))
    paths = {"gpt2": gpt2_dir, "sample": fixtures / "tinystories_sample.txt", "mismatched": mismatched, "ids": tmp_path / "ids.npy"}
    result = cli(*[a.format(**paths) for a in args])
    assert result.exit_code == 1
    assert message in result.stderr and result.stderr.startswith("error:")
    assert "Traceback" not in result.stderr


def test_cli_stats_side_by_side(cli, gpt2_dir, fixtures, tmp_path):
    small = tmp_path / "bytes-only"
    save_tokenizer(small, {i: bytes([i]) for i in range(256)} | {256: EOT.encode()}, [], [EOT])
    sample = fixtures / "tinystories_sample.txt"
    result = cli("stats", sample, "--tokenizer", gpt2_dir, "--tokenizer", small, "--docs", "3", "--workers", "2", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["documents"] == 3
    gpt2_stats, bytes_stats = report["tokenizers"]
    assert bytes_stats["bytes_per_token"] == 1.0  # a byte-level vocabulary without merges
    assert bytes_stats["tokens"] == report["bytes"]
    assert gpt2_stats["bytes_per_token"] > 3
    assert gpt2_stats["vocab_size"] == 50257 and bytes_stats["vocab_size"] == 257
    assert 0 < gpt2_stats["vocab_used_share"] < 0.1
    assert gpt2_stats["pile_hours_workers"] > 0 and gpt2_stats["bytes_per_s_1_process"] > 0

    table = cli("stats", sample, "--tokenizer", gpt2_dir, "--tokenizer", small, "--docs", "2", "--workers", "1")
    assert table.exit_code == 0, table.stderr
    assert "bytes / token" in table.stdout and "the Pile" in table.stdout and str(small)[-20:] in table.stdout
