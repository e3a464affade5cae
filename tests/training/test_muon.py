"""Muon: the Newton-Schulz orthogonalization and the update equal a straightforward implementation of
the published algorithm (Keller Jordan's, as in modded-nanogpt), batched or not; a run with it
trains and resumes bit for bit."""

from __future__ import annotations

import torch

from lmcli.model import ModelConfig, TransformerLM
import pytest

from lmcli.errors import LmcliError
from lmcli.training.config import OptimizerConfig, config_from_dict
from lmcli.training.muon import Muon, build_optimizer, muon_groups, newton_schulz, orthogonalized
from lmcli.training.optim import decay_groups
from tests.training.test_run import _rows, byte_workspace


def published_newton_schulz(G: torch.Tensor) -> torch.Tensor:
    """zeropower_via_newtonschulz5 as published, in float32."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.float()
    if G.size(0) > G.size(1):
        X = X.T
    X = X / (X.norm() + 1e-7)
    for _ in range(5):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    return X


def test_newton_schulz_equals_the_published_iteration_and_nearly_orthogonalizes():
    torch.manual_seed(0)
    for shape in ((32, 64), (64, 32), (48, 48)):
        G = torch.randn(shape)
        X = newton_schulz(G)
        torch.testing.assert_close(X, published_newton_schulz(G))
        singular = torch.linalg.svdvals(X)
        assert 0.6 < singular.min() and singular.max() < 1.25, singular  # every direction about the same size


def test_batched_orthogonalization_equals_one_matrix_at_a_time():
    torch.manual_seed(0)
    updates = [torch.randn(shape) for shape in ((32, 64), (64, 32), (32, 64), (48, 48), (32, 64), (64, 32))]
    for got, update in zip(orthogonalized(updates), updates, strict=True):
        torch.testing.assert_close(got, newton_schulz(update), rtol=1e-5, atol=1e-6)
    for got, update in zip(orthogonalized(updates, torch.bfloat16), updates, strict=True):  # the GPU's dtype
        assert got.dtype == torch.bfloat16
        assert (got.float() - newton_schulz(update)).abs().max() < 0.05


def test_a_muon_step_equals_the_published_update_and_adamw_for_the_rest():
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=50, context_length=8, d_model=16, num_layers=2, num_heads=2, d_ff=32)
    model = TransformerLM.from_config(config)
    reference = TransformerLM.from_config(config)
    reference.load_state_dict(model.state_dict())
    groups = muon_groups(model, decay_groups(model, 0.1, ["*ln*"]), lr_scale=10.0, weight_decay=0.01, momentum=0.95)
    optimizer = Muon(groups, lr=1e-3, betas=(0.9, 0.95), momentum=0.95)
    for group in optimizer.param_groups:
        group["lr"] = 1e-3 * group.get("lr_scale", 1.0)
    buffers = {}
    for step in range(3):
        grads = {n: torch.randn_like(p) for n, p in model.named_parameters()}
        for (n, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
            p.grad = grads[n].clone()
        optimizer.step()
        with torch.no_grad():  # by hand: momentum, Nesterov, orthogonalize, scale by shape, decoupled decay
            for n, q in reference.named_parameters():
                if not (n.startswith("layers.") and q.ndim == 2):
                    continue
                buffer = buffers.setdefault(n, torch.zeros_like(q))
                buffer.mul_(0.95).add_(grads[n], alpha=0.05)
                update = published_newton_schulz(0.05 * grads[n] + 0.95 * buffer)
                q.mul_(1 - 1e-2 * 0.01).add_(update, alpha=-1e-2 * max(1.0, q.shape[0] / q.shape[1]) ** 0.5)
    for (n, p), (_, q) in zip(model.named_parameters(), reference.named_parameters()):
        if n.startswith("layers.") and p.ndim == 2:
            torch.testing.assert_close(p, q, msg=n)
        else:  # AdamW moved them; they are not Muon's
            assert "exp_avg" in optimizer.state[p]


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_the_embeddings_and_the_head_step_at_their_own_rates(name):
    """AdamW's first step moves every entry by about its rate (m / sqrt(v) is the gradient's sign)."""
    torch.manual_seed(0)
    model = TransformerLM.from_config(ModelConfig(vocab_size=50, context_length=8, d_model=16, num_layers=2,
                                                  num_heads=2, d_ff=32))
    o = OptimizerConfig(name=name, lr=1e-3, embedding_lr=3e-2, head_lr=2e-4, weight_decay=0.0)
    optimizer = build_optimizer(model, o, torch.device("cpu"))
    for group in optimizer.param_groups:  # what the training loop does with the schedule's rate
        group["lr"] = o.lr * group.get("lr_scale", 1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    moved = {n: (p - before[n]).abs().mean().item() for n, p in model.named_parameters()}
    assert moved["token_embeddings.weight"] == pytest.approx(3e-2, rel=1e-3)
    assert moved["lm_head.weight"] == pytest.approx(2e-4, rel=1e-3)
    assert moved["ln_final.weight"] == pytest.approx(1e-3, rel=1e-3)


def test_a_tied_head_has_no_rate_of_its_own():
    with pytest.raises(LmcliError, match="optimizer.head_lr: a tied head is the embedding table"):
        config_from_dict({"model": {"tie_embeddings": True}, "optimizer": {"head_lr": 1e-3}})


def test_a_muon_run_trains_and_resumes_bit_for_bit(cli, tmp_path):
    byte_workspace(tmp_path)
    config = tmp_path / "tiny.toml"
    muon = ["--set", "optimizer.name='muon'", "--set", "optimizer.muon_lr=0.02", "--set", "optimizer.embedding_lr=0.01"]
    straight = cli("train", "--config", config, "--name", "straight", *muon, "--set", "training.max_steps=20")
    assert straight.exit_code == 0, straight.output
    first = cli("train", "--config", config, "--name", "split", *muon, "--set", "training.max_steps=20",
                "--set", "training.keep_interval=10")
    assert first.exit_code == 0
    runs = tmp_path / "workspace" / "runs"
    (runs / "split" / "latest.pt").unlink()
    (runs / "split" / "step-000010.pt").rename(runs / "split" / "latest.pt")
    assert cli("train", "--resume", runs / "split").exit_code == 0
    losses = lambda name: {r["step"]: r["loss"] for r in _rows(runs / name, "train")}  # noqa: E731
    assert losses("straight") == losses("split")
    assert losses("straight")[20] < losses("straight")[1] - 1.0  # it learns
