"""A dataset in several files: `lmcli encode A B C --out-dir DIR`, then training on a glob or a list of the shards."""

from __future__ import annotations

import json

import numpy as np

from lmcli.tokenizer.files import save_tokenizer
from tests.training.test_run import TINY_CONFIG, _text


def make_workspace(tmp_path):
    ws = tmp_path / "workspace"
    save_tokenizer(ws / "tokenizer", {i: bytes([i]) for i in range(256)}, [], [])
    texts = {name: _text(1500, seed) for seed, name in enumerate(["a.txt", "b.txt", "c.txt"])}
    for name, text in texts.items():
        (tmp_path / name).write_bytes(text)
    (tmp_path / "tiny.toml").write_text(TINY_CONFIG)
    return ws, texts


def test_encode_writes_one_npy_per_input_and_training_reads_them_as_one_dataset(cli, tmp_path, monkeypatch):
    ws, texts = make_workspace(tmp_path)
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    inputs = [str(tmp_path / name) for name in texts]
    result = cli("encode", *inputs, "--out-dir", str(ws / "data" / "shards"), "--json")
    assert result.exit_code == 0, result.output
    assert [f["output"] for f in json.loads(result.stdout)["files"]] == [str(ws / "data" / "shards" / f"{n[0]}.npy") for n in texts]
    for name, text in texts.items():  # byte-level tokenizer: the ids are the bytes
        assert np.load(ws / "data" / "shards" / f"{name[0]}.npy").tolist() == list(text)

    result = cli("train", "--config", str(tmp_path / "tiny.toml"), "--name", "shards", "--json", "--quiet",
                 "--set", "data.train='data/shards/[ab].npy'", "--set", "data.valid=['data/shards/c.npy']")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["steps"] == 40
    train = texts["a.txt"] + texts["b.txt"]
    counts = np.bincount(np.frombuffer(train, dtype=np.uint8), minlength=256) / len(train)
    p = counts[counts > 0]
    assert abs(summary["unigram_entropy"] - float(-(p * np.log(p)).sum())) < 1e-9  # both shards counted, c not

    result = cli("eval", "--checkpoint", "shards", "--json")  # the run's validation shards by default
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tokens"] == (len(texts["c.txt"]) - 1) // 16 * 16


def test_shards_that_do_not_exist_are_one_error(cli, tmp_path, monkeypatch):
    ws, _ = make_workspace(tmp_path)
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    result = cli("train", "--config", str(tmp_path / "tiny.toml"), "--set", "data.train='data/none-*.npy'", "--quiet")
    assert result.exit_code == 1
    assert result.stderr == f"error: no file matches {ws / 'data' / 'none-*.npy'}\n"
    result = cli("encode", str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "--out", str(tmp_path / "x.npy"))
    assert result.exit_code == 1 and "--out names one output" in result.stderr
