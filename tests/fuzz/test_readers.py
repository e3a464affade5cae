"""Every reader of a file lmcli reads back, given damaged bytes, wrong JSON types and impossible
numbers: it returns what it read or raises LmcliError, never anything else."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lmcli.data.token_files import open_token_ids
from lmcli.errors import LmcliError
from lmcli.experiments.runs import read_run
from lmcli.tokenizer import Tokenizer
from lmcli.training.checkpoint import RESUMABLE, load_model_from_checkpoint, read_checkpoint
from lmcli.training.config import load_config
from lmcli.training.metrics import read_metrics, truncate_metrics
from tests.fuzz.common import FUZZ, damaged, json_values, make_workspace, numbers, replaced, toml_number


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return make_workspace(tmp_path_factory.mktemp("fuzz-readers"))


def reads_or_refuses(read) -> None:
    try:
        read()
    except LmcliError:
        pass


@pytest.mark.parametrize("name", ["vocab.json", "merges.txt", "tokenizer-meta.json"])
@FUZZ
@given(data=st.data())
def test_tokenizer_files(ws, name, data):
    tokenizer = ws / "tokenizer"
    path = tokenizer / name
    with replaced(path, data.draw(damaged(path.read_bytes()))):
        reads_or_refuses(lambda: Tokenizer.from_dir(tokenizer).encode("the cat <|endoftext|> sat"))
        # Without the digests of tokenizer-meta.json (GPT-2's own files have none) the parsers see the damage.
        reads_or_refuses(lambda: Tokenizer.from_files(tokenizer / "vocab.json", tokenizer / "merges.txt").encode("the cat"))


@pytest.mark.parametrize("name", ["vocab.json", "tokenizer-meta.json"])
@FUZZ
@given(value=json_values())
def test_tokenizer_json_of_any_shape(ws, name, value):
    tokenizer = ws / "tokenizer"
    with replaced(tokenizer / name, json.dumps(value).encode()):
        reads_or_refuses(lambda: Tokenizer.from_dir(tokenizer))
        reads_or_refuses(lambda: Tokenizer.from_files(tokenizer / "vocab.json", tokenizer / "merges.txt"))


@FUZZ
@given(data=st.data())
def test_config_files(ws, data):
    path = ws / "runs" / "tiny" / "config.toml"
    with replaced(path, data.draw(damaged(path.read_bytes()))):
        reads_or_refuses(lambda: load_config(path))


@FUZZ
@given(table=st.sampled_from(["model", "optimizer", "training", "data", "system"]), key=st.text(max_size=12),
       value=numbers())
def test_config_values_of_any_size(ws, table, key, value):
    known = {"model": ["vocab_size", "d_model", "rope_theta", "num_heads"], "optimizer": ["lr", "eps", "betas"],
             "training": ["batch_size", "seed", "max_steps", "peak_flops"], "data": ["train"], "system": ["device"]}[table]
    for name in [*known, key]:
        reads_or_refuses(lambda: load_config(ws.parent / "tiny.toml", [f"{table}.{name}={toml_number(value)}"]))


@FUZZ
@given(data=st.data())
def test_metrics_files(ws, data, tmp_path_factory):
    run = tmp_path_factory.mktemp("run") / "r"
    shutil.copytree(ws / "runs" / "tiny", run)
    damaged_bytes = data.draw(damaged((run / "metrics.jsonl").read_bytes()))
    (run / "metrics.jsonl").write_bytes(damaged_bytes)
    found = read_metrics(run / "metrics.jsonl")  # never raises: bad lines are reported, not fatal
    assert all(isinstance(row["step"], int) for row in found.rows)
    read_run(run).summary()
    truncate_metrics(run, 2)
    assert all(row["step"] <= 2 for row in read_metrics(run / "metrics.jsonl").rows)
    assert not read_metrics(run / "metrics.jsonl").bad_lines


@FUZZ
@given(data=st.data())
def test_checkpoints(ws, data):
    path = ws / "runs" / "tiny" / "latest.pt"
    with replaced(path, data.draw(damaged(path.read_bytes()))):
        reads_or_refuses(lambda: read_checkpoint(path, entries=RESUMABLE))
        reads_or_refuses(lambda: load_model_from_checkpoint(path))


@FUZZ
@given(entry=st.sampled_from(["iteration", "model", "model_config", "rng", "tokenizer", "best_val_loss", "optimizer"]),
       value=json_values())
def test_checkpoint_entries_of_any_type(ws, entry, value, tmp_path_factory):
    checkpoint = torch.load(ws / "runs" / "tiny" / "latest.pt", weights_only=True)
    checkpoint[entry] = value
    path = tmp_path_factory.mktemp("ckpt") / "x.pt"
    torch.save(checkpoint, path)
    reads_or_refuses(lambda: read_checkpoint(path, entries=RESUMABLE))
    reads_or_refuses(lambda: load_model_from_checkpoint(path))


@FUZZ
@given(data=st.data())
def test_token_id_files(ws, data):
    path = ws / "data" / "valid.npy"
    with replaced(path, data.draw(damaged(path.read_bytes()))):
        reads_or_refuses(lambda: int(open_token_ids(path, "ids", 2)[:64].sum()))
