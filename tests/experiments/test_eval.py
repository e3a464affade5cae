"""``lmcli eval`` on a tiny checkpoint: the loss over non-overlapping windows, checked independently."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmcli.errors import LmcliError
from lmcli.experiments.evaluate import evaluate_checkpoint
from lmcli.model import ModelConfig, TransformerLM
from lmcli.training import AdamW, save_checkpoint
from lmcli.workspace import Workspace

TINY = ModelConfig(vocab_size=50, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32)


@pytest.fixture
def run(tmp_path):
    """A workspace with a checkpoint (as `lmcli train` writes it) and a 203-token validation file."""
    ws = tmp_path / "workspace"
    torch.manual_seed(0)
    model = TransformerLM.from_config(TINY)
    checkpoint = ws / "runs" / "tiny" / "best.pt"
    checkpoint.parent.mkdir(parents=True)
    save_checkpoint(model, AdamW(model.parameters()), 7, checkpoint, extra={
        "model_config": dataclasses.asdict(TINY), "config": {"data": {"valid": "data/valid.npy"}},
    })
    tokens = np.random.default_rng(0).integers(0, TINY.vocab_size, 203).astype(np.uint16)
    (ws / "data").mkdir()
    np.save(ws / "data" / "valid.npy", tokens)
    return ws, checkpoint, model, tokens


def reference_loss(model, tokens: np.ndarray, n_windows: int) -> float:
    """Mean F.cross_entropy over the first ``n_windows`` windows of the context length, one window at a time."""
    c = TINY.context_length
    windows = torch.from_numpy(tokens[: n_windows * c + 1].astype(np.int64))
    with torch.no_grad():
        losses = [F.cross_entropy(model(windows[i * c : (i + 1) * c][None])[0], windows[i * c + 1 : (i + 1) * c + 1],
                                  reduction="sum") for i in range(n_windows)]
    return (sum(losses) / (n_windows * c)).item()


def test_loss_over_every_window_with_a_short_last_batch(run, cli):
    ws, checkpoint, model, tokens = run
    result = evaluate_checkpoint(checkpoint, None, 3, 0, "cpu", Workspace(ws))  # 25 windows: batches of 3, last of 1
    assert result["tokens"] == 25 * 8 and result["step"] == 7 and result["data"] == str(ws / "data" / "valid.npy")
    assert result["loss"] == pytest.approx(reference_loss(model.eval(), tokens, 25), rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    printed = cli("eval", "--checkpoint", checkpoint, "--batch-size", "3", "--workspace", ws, "--json")
    assert printed.exit_code == 0, printed.stderr
    assert {k: v for k, v in json.loads(printed.stdout).items() if k not in ("seconds", "tokens_per_s")} == {
        k: v for k, v in result.items() if k not in ("seconds", "tokens_per_s")
    }


def test_max_tokens_caps_the_windows(run):
    ws, checkpoint, model, tokens = run
    result = evaluate_checkpoint(checkpoint, ws / "data" / "valid.npy", 32, 20, "cpu", Workspace(ws))
    assert result["tokens"] == 16  # two whole windows fit in 20 tokens
    assert result["loss"] == pytest.approx(reference_loss(model.eval(), tokens, 2), rel=1e-5)


def test_eval_cli_table_and_workspace_relative_data(cli, run):
    ws, checkpoint, _, _ = run
    result = cli("eval", "--checkpoint", checkpoint, "--data", "valid.npy", "--batch-size", "4")
    assert result.exit_code == 0, result.stderr
    assert "perplexity" in result.stdout and "200 in windows of 8" in result.stdout and "(step 7)" in result.stdout
    assert "evaluating valid.npy" in result.stderr  # the progress bar


def test_eval_cli_errors(cli, run, tmp_path):
    ws, checkpoint, _, _ = run
    np.save(ws / "data" / "big.npy", np.array([1, 2, 3, 99] * 10, dtype=np.uint16))
    cases = [
        (["--checkpoint", tmp_path], "holds no checkpoint (best.pt or latest.pt)"),
        (["--checkpoint", tmp_path / "none.pt"], "does not exist"),
        (["--checkpoint", checkpoint, "--data", "missing.npy"], "missing.npy does not exist"),
        (["--checkpoint", checkpoint, "--data", "big.npy"], "token id 99, outside the model's vocabulary of 50"),
        (["--checkpoint", checkpoint, "--batch-size", "0"], "--batch-size must be positive"),
        (["--checkpoint", checkpoint, "--device", "tpu"], "unknown device 'tpu'"),
    ]
    for args, message in cases:
        result = cli("eval", *args)
        assert result.exit_code == 1, args
        last = result.stderr.splitlines()[-1]  # a progress bar may precede it
        assert last.startswith("error: ") and message in last, (args, result.stderr)


def test_a_file_that_is_not_a_checkpoint(run, tmp_path):
    ws = run[0]
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    with pytest.raises(LmcliError, match="not an lmcli checkpoint"):
        evaluate_checkpoint(bogus, None, 4, 0, "cpu", Workspace(ws))
