"""The training-throughput benchmark compares like with like: its PyTorch-layers model computes what
lmcli's does (same loss, same weights after a full training step). Correctness only, no timing."""

from __future__ import annotations

import pytest
import torch

from benchmarks.train_throughput import build_trainers, main  # noqa: E402
from lmcli.model import ModelConfig

TINY = ModelConfig(vocab_size=97, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64)


def test_both_sides_take_the_same_training_step():
    ours, theirs = build_trainers(TINY, torch.device("cpu"), "fp32", compile_=False)
    x, y = torch.randint(TINY.vocab_size, (2, 3, TINY.context_length), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours.loss(x, y), theirs.loss(x, y), rtol=1e-5, atol=1e-6)
    for _ in range(2):
        ours.step(x, y)
        theirs.step(x, y)
    theirs_params = dict(theirs.model.named_parameters())
    for name, p in ours.model.named_parameters():
        torch.testing.assert_close(p, theirs_params[name], rtol=1e-4, atol=1e-5, msg=name)


def test_the_script_reports_both_sides_and_their_ratio(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text("[model]\nvocab_size = 97\ncontext_length = 16\nd_model = 32\nnum_layers = 2\nnum_heads = 4\n"
                      "d_ff = 64\n\n[training]\nbatch_size = 2\n")
    report = main(["--config", str(config), "--steps", "1", "--repeats", "1", "--warmup", "1", "--peak-flops", "1e12"])
    out = capsys.readouterr().out
    assert "ratio lmcli / pytorch" in out and "batch 2 x 16" in out
    assert report["first_loss"]["lmcli"] == pytest.approx(report["first_loss"]["pytorch"], rel=1e-5)
    for side in ("lmcli", "pytorch"):
        assert report[side]["tokens_per_s"] > 0 and 0 < report[side]["mfu"] < 1
    assert report["ratio"] == pytest.approx(report["lmcli"]["tokens_per_s"] / report["pytorch"]["tokens_per_s"], rel=1e-2)
