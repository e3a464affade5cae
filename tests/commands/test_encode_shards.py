"""Token shards with a manifest: the ids of one encoding, resumed after kill -9, refused when the
inputs or tokenizer changed, split over machines with --part, and read back by training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lmcli.data.token_shards import shard_paths
from lmcli.errors import LmcliError
from lmcli.tokenizer.encode_shards import parse_part
from lmcli.tokenizer.files import save_tokenizer
from lmcli.tokenizer.reference import train_bpe
from tests.conftest import REPO
from tests.tokenizer.test_sources import EOT, as_text, records

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    vocab, merges = train_bpe(as_text(records(200, 1)), 400, [EOT])
    save_tokenizer(root / "tokenizer", vocab, merges, [EOT])
    texts = records(3000, 2)
    (root / "a.txt").write_text(as_text(texts[:1000]), encoding="utf-8")
    (root / "b.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts[1000:2000]))
    pq.write_table(pa.table({"text": texts[2000:]}), root / "c.parquet")
    (root / "all.txt").write_text(as_text(texts), encoding="utf-8")
    return root


def concatenated(paths) -> np.ndarray:
    return np.concatenate([np.load(p) for p in paths])


def encode(cli, root, *args):
    result = cli("encode", *args, "--tokenizer", str(root / "tokenizer"), "--json")
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


def test_shards_hold_the_ids_of_one_encoding_and_training_reads_the_directory(cli, corpus, tmp_path):
    _, whole = encode(cli, corpus, str(corpus / "all.txt"), "--out", str(tmp_path / "all.npy"))
    result, summary = encode(cli, corpus, str(corpus / "a.txt"), str(corpus / "b.jsonl"), str(corpus / "c.parquet"),
                             "--out-dir", str(tmp_path / "ds"), "--shard-tokens", "5000")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["complete"] and summary["shards"] == len(manifest["shards"]) >= 3  # a shard ends at a chunk's end
    assert [s["name"] for s in manifest["sources"]] == [str(corpus / n) for n in ("a.txt", "b.jsonl", "c.parquet")]
    assert sum(s["documents"] for s in manifest["shards"]) == as_text(records(3000, 2)).count(EOT)
    shards = shard_paths(str(tmp_path / "ds"))
    assert [p.name for p in shards] == [s["file"] for s in manifest["shards"]]
    assert np.array_equal(concatenated(shards), np.load(tmp_path / "all.npy"))
    again, summary = encode(cli, corpus, str(corpus / "a.txt"), str(corpus / "b.jsonl"), str(corpus / "c.parquet"),
                            "--out-dir", str(tmp_path / "ds"), "--shard-tokens", "5000")
    assert again.exit_code == 0 and summary["resumed_shards"] == summary["shards"]  # complete: nothing encoded again
    config = tmp_path / "run.toml"
    vocab_size = len(json.loads((corpus / "tokenizer" / "vocab.json").read_text()))
    config.write_text(f"""
[model]
vocab_size = {vocab_size}
context_length = 16
d_model = 16
num_layers = 1
num_heads = 2
d_ff = 32
[data]
train = "{tmp_path / 'ds'}"
valid = "{tmp_path / 'all.npy'}"
tokenizer = "{corpus / 'tokenizer'}"
[optimizer]
warmup_steps = 1
[training]
batch_size = 4
max_steps = 3
eval_interval = 3
eval_batches = 1
final_eval_tokens = 256
[system]
device = "cpu"
""")
    trained = cli("train", "--config", str(config), "--name", "from-shards", "--json")
    assert trained.exit_code == 0, trained.output


def test_parts_from_several_machines_merge_into_the_ids_of_one(cli, corpus, tmp_path):
    inputs = [str(corpus / n) for n in ("a.txt", "b.jsonl", "c.parquet")]
    assert encode(cli, corpus, str(corpus / "all.txt"), "--out", str(tmp_path / "single.npy"))[0].exit_code == 0
    single = np.load(tmp_path / "single.npy")
    for i in (1, 0):
        result, _ = encode(cli, corpus, *inputs, "--out-dir", str(tmp_path / "ds"), "--part", f"{i}/2", "--shard-tokens", "4000")
        assert result.exit_code == 0, result.output
    assert np.array_equal(concatenated(shard_paths(str(tmp_path / "ds"))), single)
    (tmp_path / "ds" / "part-00001-of-00002" / "manifest.json").unlink()
    with pytest.raises(Exception, match="parts of different or incomplete splits"):
        shard_paths(str(tmp_path / "ds"))


@pytest.mark.parametrize(("part", "message"), [("x", "must look like i/n"), ("1/1", "i must be in 0..0 for n = 1"),
                                               ("0/0", "n, the number of parts, must be at least 1"), ("-1/2", "i must be in 0..1")])
def test_a_part_that_is_not_one_of_n_is_refused(part, message):
    assert parse_part("1/3") == (1, 3)
    with pytest.raises(LmcliError, match=message):
        parse_part(part)


def test_changed_inputs_are_refused_unless_forced(cli, corpus, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text((corpus / "a.txt").read_text())
    args = (str(text), "--out-dir", str(tmp_path / "ds"), "--shard-tokens", "5000")
    assert encode(cli, corpus, *args)[0].exit_code == 0
    os.utime(text, ns=(time.time_ns(), time.time_ns() + 10**9))
    result, _ = encode(cli, corpus, *args)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert "holds shards of another encoding (changed: the inputs" in result.stderr
    result, summary = encode(cli, corpus, *args, "--force")
    assert result.exit_code == 0 and summary["resumed_shards"] == 0
    result, _ = encode(cli, corpus, *args[:4], "4000")
    assert result.exit_code == 1 and "changed: shard_tokens" in result.stderr


def test_kill_9_mid_encoding_resumes_where_it_stopped(corpus, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text((corpus / "all.txt").read_text() * 40, encoding="utf-8")  # ~20 MB: a few seconds on one worker
    out = tmp_path / "ds"
    command = [sys.executable, "-m", "lmcli", "encode", str(big), "--tokenizer", str(corpus / "tokenizer"), "--out-dir", str(out),
               "--shard-tokens", "1", "--workers", "1", "--json"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once two shards are listed, mid-way
        manifest = out / "manifest.json"
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 2:
            break
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    listed = json.loads((out / "manifest.json").read_text())
    assert not listed["complete"] and len(listed["shards"]) >= 2
    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert summary["resumed_shards"] >= 2 and not list(out.glob(".*.tmp"))
    straight = subprocess.run([*command[:7], "--out", str(tmp_path / "straight.npy"), "--workers", "1"], env=env,
                              capture_output=True, text=True, timeout=120)
    assert straight.returncode == 0, straight.stderr
    assert np.array_equal(concatenated(shard_paths(str(out))), np.load(tmp_path / "straight.npy"))
