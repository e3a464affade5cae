"""Text as people have it: compressed text, JSON lines, parquet and saved datasets give exactly the ids,
counts and merges of the plain text file ``t1<|endoftext|>t2<|endoftext|>...`` of their records, and
every kind of bad input is one line naming the file (and the line or row)."""

from __future__ import annotations

import gzip
import json
import lzma
import random
import sys

import numpy as np
import pytest

from lmcli.errors import LmcliError
from lmcli.tokenizer import sources
from lmcli.tokenizer.files import save_tokenizer
from lmcli.tokenizer.reference import train_bpe as reference_train_bpe
from lmcli.tokenizer.train import train_bpe

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
zstandard = pytest.importorskip("zstandard")

EOT = "<|endoftext|>"


def records(n: int = 400, seed: int = 0) -> list[str]:
    """Documents with words, punctuation, newlines, runs of spaces, non-ASCII and an empty one."""
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "naïve", "café", "日本語", "emoji😀", "don't", "1234", "  ", "\n"]
    texts = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(n)]
    texts[7] = ""
    texts[11] = f"a record that holds {EOT} inside"
    return texts


def as_text(texts: list[str]) -> str:
    return "".join(t + EOT for t in texts)


def write_inputs(root, texts: list[str]) -> dict[str, object]:
    """The same records in every format (and the plain text they stand for)."""
    text = as_text(texts)
    lines = "".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)).encode()
    paths = {"txt": root / "plain.txt"}
    paths["txt"].write_text(text, encoding="utf-8")
    (root / "text.txt.gz").write_bytes(gzip.compress(text.encode()))
    (root / "text.txt.xz").write_bytes(lzma.compress(text.encode()))
    half = len(text.encode()) // 2  # two zstd frames, as zstd -T writes
    (root / "text.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(text.encode()[:half])
                                        + zstandard.ZstdCompressor().compress(text.encode()[half:]))
    (root / "records.jsonl").write_bytes(lines)
    (root / "records.jsonl.gz").write_bytes(gzip.compress(lines))
    (root / "records.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    table = pa.table({"id": list(range(len(texts))), "text": texts})
    pq.write_table(table, root / "records.parquet", row_group_size=37)  # many row groups
    (root / "folder").mkdir()
    pq.write_table(table.slice(0, 150), root / "folder" / "part-0.parquet")
    (root / "folder" / "part-1.jsonl").write_bytes(b"".join(lines.splitlines(keepends=True)[150:]))
    for name in ("text.txt.gz", "text.txt.xz", "text.txt.zst", "records.jsonl", "records.jsonl.gz", "records.jsonl.zst",
                 "records.parquet", "folder"):
        paths[name] = root / name
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    texts = records()
    paths = write_inputs(root, texts)
    vocab, merges = reference_train_bpe(as_text(records(200, 1)), 400, [EOT])
    save_tokenizer(root / "tokenizer", vocab, merges, [EOT])
    return root, paths


def test_every_format_streams_the_text_of_its_records(corpus, monkeypatch):
    root, paths = corpus
    monkeypatch.setattr(sources, "PIECE_CHARS", 500)  # many pieces, cut at token boundaries
    monkeypatch.setattr(sources, "READ_BYTES", 500)  # JSON lines: a piece per block read
    expected = paths["txt"].read_text(encoding="utf-8")
    for name, path in paths.items():
        source = sources.open_source(path)
        if source.plain:
            continue
        got = list(sources.pieces(source, [EOT]))
        assert "".join(p.text for p in got) == expected, name
        assert len(got) > 10 and [p.bytes_read for p in got] == sorted(p.bytes_read for p in got)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_encode_gives_every_format_the_ids_of_the_text_file(cli, corpus, tmp_path, workers, monkeypatch):
    root, paths = corpus
    monkeypatch.setattr(sources, "PIECE_CHARS", 2_000)
    tokenizer = str(root / "tokenizer")
    names = [str(paths[name]) for name in ("txt", "text.txt.zst", "records.parquet", "folder")]  # one output name each
    result = cli("encode", *names, "--tokenizer", tokenizer, "--out-dir", str(tmp_path / "ids"), "--workers", workers, "--json")
    assert result.exit_code == 0, result.output
    expected = np.load(tmp_path / "ids" / "plain.npy")
    assert len(expected) > 1000
    for name in ("text", "records", "folder"):
        assert np.array_equal(np.load(tmp_path / "ids" / f"{name}.npy"), expected), name
    clash = cli("encode", str(paths["text.txt.gz"]), str(paths["text.txt.xz"]), "--tokenizer", tokenizer, "--out-dir", str(tmp_path))
    assert clash.exit_code == 1 and "two inputs would be encoded to the same" in clash.stderr
    for name, path in paths.items():  # each one alone
        out = tmp_path / f"{path.name}.npy"
        assert cli("encode", str(path), "--tokenizer", tokenizer, "--out", str(out), "--workers", workers).exit_code == 0
        assert np.array_equal(np.load(out), expected), name


def test_train_bpe_counts_records_as_the_text_file_and_inputs_add_up(corpus, monkeypatch):
    root, paths = corpus
    monkeypatch.setattr(sources, "PIECE_CHARS", 3_000)
    expected = train_bpe(paths["txt"], 350, [EOT], workers=1)
    for name in ("records.jsonl.zst", "records.parquet", "text.txt.gz", "folder"):
        for workers in (1, 2):
            assert train_bpe(paths[name], 350, [EOT], workers=workers) == expected, (name, workers)
    # two inputs count as their concatenation
    first, second = root / "first.jsonl", root / "second.parquet"
    texts = records()
    first.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[:200]))
    pq.write_table(pa.table({"text": texts[200:]}), second)
    assert train_bpe([first, second], 350, [EOT], workers=2) == expected
    assert train_bpe([str(root / "*.txt")], 350, [EOT]) == expected  # a glob


def test_train_bpe_and_stats_through_the_cli(cli, corpus, tmp_path):
    root, paths = corpus
    result = cli("train-bpe", str(paths["records.jsonl.zst"]), "--vocab", "350", "--out", str(tmp_path / "tok"), "--json")
    assert result.exit_code == 0, result.output
    plain = cli("train-bpe", str(paths["txt"]), "--vocab", "350", "--out", str(tmp_path / "plain-tok"), "--json")
    assert (tmp_path / "tok" / "merges.txt").read_text() == (tmp_path / "plain-tok" / "merges.txt").read_text()
    assert json.loads(result.stdout)["input_bytes"] == paths["records.jsonl.zst"].stat().st_size
    stats = cli("stats", str(paths["records.parquet"]), "--tokenizer", str(root / "tokenizer"), "--docs", "50", "--json")
    assert stats.exit_code == 0, stats.output
    report = json.loads(stats.stdout)
    assert report["documents"] == 50 and report["tokenizers"][0]["bytes_per_token"] > 1


def bad(cli, tmp_path, name: str, content: bytes, fragment: str, *options: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out.npy"
    result = cli("encode", str(path), "--out", str(out), *options)
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr and str(path) in result.stderr, result.stderr
    assert not out.exists() and not list(tmp_path.glob(".out.npy*"))  # nothing half-written


def test_bad_records_and_streams_are_one_line_naming_the_file_and_line(cli, corpus, tmp_path):
    root, paths = corpus
    tok = ("--tokenizer", str(root / "tokenizer"))
    good = b'{"text": "fine"}\n'
    bad(cli, tmp_path, "a.jsonl", good + b'{"text": "unclosed\n', "line 2 is not valid JSON", *tok)
    bad(cli, tmp_path, "b.jsonl", good * 3 + b'{"body": "x"}\n', "line 4 has no field 'text'", *tok)
    bad(cli, tmp_path, "c.jsonl", good + b'{"text": 12}\n', "line 2: field 'text' is a int, not a string", *tok)
    bad(cli, tmp_path, "d.jsonl", good + b'[1, 2]\n', "line 2 is a JSON list", *tok)
    bad(cli, tmp_path, "e.jsonl", good + b'{"content": "x"}\n', "line 1 has no field 'content'", *tok, "--text-field", "content")
    gz = paths["records.jsonl.gz"].read_bytes()
    bad(cli, tmp_path, "f.jsonl.gz", gz[: len(gz) // 2], "is not a complete .gz stream", *tok)
    zst = paths["text.txt.zst"].read_bytes()
    bad(cli, tmp_path, "g.txt.zst", zst[: len(zst) // 3], "is not a complete .zst stream", *tok)
    bad(cli, tmp_path, "h.txt.zst", b"not zstd at all", "is not a complete .zst stream", *tok)
    bad(cli, tmp_path, "i.parquet", b"PAR1 but not really", "is not a parquet file", *tok)
    bad(cli, tmp_path, "j.txt.gz", gzip.compress(b"ok \xff\xfe bad"), "invalid UTF-8 at byte 3 of the decompressed text", *tok)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", None]}), nulls)
    bad(cli, tmp_path, "k.parquet", nulls.read_bytes(), "row 2: field 'text' is null", *tok)
    numbers = tmp_path / "numbers.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), numbers)
    bad(cli, tmp_path, "l.parquet", numbers.read_bytes(), "column 'text' holds int64, not strings", *tok)
    result = cli("encode", str(tmp_path / "nothing-*.jsonl"), *tok)
    assert result.exit_code == 1 and "matches no file" in result.stderr


def test_a_missing_extra_is_one_line_naming_it(cli, corpus, monkeypatch):
    root, paths = corpus
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if pyarrow were not installed
    result = cli("encode", str(paths["records.parquet"]), "--tokenizer", str(root / "tokenizer"))
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "needs the pyarrow package: pip install 'lmcli[data]'" in result.stderr


def test_a_saved_dataset_is_read_by_rows(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    root, paths = corpus
    texts = records(60, 3)
    datasets.Dataset.from_dict({"text": texts, "n": list(range(60))}).save_to_disk(str(tmp_path / "saved"))
    source = sources.open_source(tmp_path / "saved")
    assert "".join(p.text for p in sources.pieces(source, [EOT])) == as_text(texts)
    with pytest.raises(LmcliError, match="has no column 'body'"):
        list(sources.pieces(source, [EOT], text_field="body"))


def test_stems_name_outputs_without_format_suffixes():
    assert sources.TextSource("a/b.jsonl.zst", "jsonl", 1).stem == "b"
    assert sources.TextSource("a/c.txt.gz", "compressed", 1).stem == "c"
    assert sources.TextSource("hf:HuggingFaceFW/fineweb-edu", "hub", 0).stem == "HuggingFaceFW-fineweb-edu"


def test_a_dataset_folder_reads_its_record_files_only(tmp_path):
    texts = records(30, 4)
    (tmp_path / "ds" / "nested.parquet").mkdir(parents=True)  # a directory, whatever its name
    pq.write_table(pa.table({"text": texts}), tmp_path / "ds" / "part.parquet")
    (tmp_path / "ds" / "README.md").write_text("not a record file")
    (tmp_path / "ds" / "more.jsonl.0123abcd.part").write_text('{"text": "half a downl')  # a download under way
    (tmp_path / "ds" / ".cache" / "huggingface").mkdir(parents=True)
    (tmp_path / "ds" / ".cache" / "huggingface" / "x.jsonl").write_text('{"text": "bookkeeping"}\n')
    assert sources.dataset_files(tmp_path / "ds") == [tmp_path / "ds" / "part.parquet"]
    assert "".join(p.text for p in sources.pieces(sources.open_source(tmp_path / "ds"), [EOT])) == as_text(texts)
