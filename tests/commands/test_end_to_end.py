"""The whole pipeline through the CLI at a tiny scale: demo corpus -> train-bpe -> encode ->
train -> eval -> generate -> plot, asserting on every artifact a stage hands to the next."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.files import load_tokenizer_files
from lmcli.training.checkpoint import load_model_from_checkpoint

VOCAB = 300
TINY_MODEL = [
    f"model.vocab_size={VOCAB}", "model.context_length=32", "model.d_model=32", "model.num_layers=2",
    "model.num_heads=2", "model.d_ff=64", "training.batch_size=8", "training.max_steps=12",
    "training.eval_interval=6", "training.log_interval=3", "training.checkpoint_interval=6",
    "training.eval_batches=2", "training.final_eval_tokens=4096", "optimizer.warmup_steps=2", "system.device=cpu",
]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Run every stage once into one workspace; tests below inspect what each left behind."""
    from typer.testing import CliRunner

    from lmcli.cli import app

    workspace = tmp_path_factory.mktemp("e2e") / "workspace"
    runner = CliRunner()

    def lmcli(*args: str):
        result = runner.invoke(app, [*args, "--workspace", str(workspace)])
        assert result.exit_code == 0, f"lmcli {' '.join(args)} failed:\n{result.output}"
        return result

    results = {
        "train-bpe": lmcli("train-bpe", "--vocab", str(VOCAB), "--json"),
        "encode": lmcli("encode", "--json"),
        "train": lmcli("train", "--config", "demo", "--name", "tiny", "--json", *[a for s in TINY_MODEL for a in ("--set", s)]),
        "eval": lmcli("eval", "--checkpoint", "tiny", "--data", str(workspace / "data" / "valid.npy"), "--json"),
        "generate": lmcli("generate", "--prompt", "Once upon a time", "--max-tokens", "20", "--seed", "0", "--json"),
        "plot": lmcli("plot", "tiny", "-o", str(workspace / "curves.png")),
    }
    return workspace, results


def test_tokenizer_has_the_requested_vocabulary(pipeline):
    workspace, _ = pipeline
    vocab, merges = load_tokenizer_files(workspace / "tokenizer" / "vocab.json", workspace / "tokenizer" / "merges.txt")
    assert len(vocab) == VOCAB and len(merges) == VOCAB - 257
    assert vocab[0] == b"<|endoftext|>"


def test_encoded_ids_are_compact_and_in_range(pipeline):
    workspace, _ = pipeline
    tokenizer = Tokenizer.from_dir(workspace / "tokenizer")
    for split in ("train", "valid"):
        ids = np.load(workspace / "data" / f"{split}.npy", mmap_mode="r")
        assert ids.dtype == np.uint16 and ids.ndim == 1 and len(ids) > 10_000
        assert int(ids.max()) < VOCAB
        text = (workspace / "data" / f"demo-{split}.txt").read_text(encoding="utf-8")
        assert tokenizer.decode(ids[:2000].tolist()) == tokenizer.decode(tokenizer.encode(text[:20_000])[:2000])


def test_training_recorded_metrics_and_reloadable_checkpoints(pipeline):
    workspace, results = pipeline
    run = workspace / "runs" / "tiny"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    eval_rows = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train_rows] == [3, 6, 9, 12]
    assert [r["step"] for r in eval_rows] == [6, 12]
    assert all(np.isfinite(r["loss"]) for r in train_rows)
    assert train_rows[-1]["loss"] < train_rows[0]["loss"], "a few steps already lower the loss"
    summary = json.loads(results["train"].stdout)
    assert summary["steps"] == 12
    assert summary["final_val_loss"] < math.log(VOCAB), "12 steps already beat a uniform guess over the vocabulary"
    model, config, _ = load_model_from_checkpoint(run / "latest.pt")
    assert config.vocab_size == VOCAB and sum(p.numel() for p in model.parameters()) == summary["parameters"]


def test_eval_agrees_with_the_training_summary(pipeline):
    _, results = pipeline
    evaluation = json.loads(results["eval"].stdout)
    assert evaluation["loss"] > 0 and abs(evaluation["perplexity"] - np.exp(evaluation["loss"])) < 1e-3 * evaluation["perplexity"]


def test_generation_continues_the_prompt(pipeline):
    _, results = pipeline
    out = json.loads(results["generate"].stdout)
    assert out["prompt"] == "Once upon a time"
    assert 0 < len(out["token_ids"]) <= 20 and out["completion"]
    assert all(0 <= i < VOCAB for i in out["token_ids"])


def test_plot_written(pipeline):
    workspace, _ = pipeline
    assert (workspace / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
