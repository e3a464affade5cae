"""The CS336 training API: cross_entropy, AdamW, cosine_lr, clip_grad_norm, get_batch."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from lmcli.errors import LmcliError
from lmcli.model import ModelConfig, TransformerLM
from lmcli.training import AdamW, clip_grad_norm, cosine_lr, cross_entropy, get_batch
from lmcli.training.optim import decay_groups

TINY = ModelConfig(vocab_size=64, context_length=16, d_model=32, num_layers=2, num_heads=2, d_ff=64)



# --- cross_entropy ---------------------------------------------------------------------------


def test_cross_entropy_matches_torch_with_leading_batch_dims():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    targets = torch.randint(11, (3, 5))
    ours = cross_entropy(logits, targets)
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), targets.reshape(-1))
    torch.testing.assert_close(ours, expected)
    (grad,) = torch.autograd.grad(ours, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, expected_grad)


def test_cross_entropy_gradient_is_the_same_on_a_second_backward():
    """The fast kernel computes the gradient in its forward and the backward only scales it: a
    retained graph run backward twice accumulates the same gradient twice."""
    logits = torch.randn(4, 7, requires_grad=True)
    loss = cross_entropy(logits, torch.randint(7, (4,)))
    loss.backward(retain_graph=True)
    once = logits.grad.clone()
    loss.backward()
    torch.testing.assert_close(logits.grad, 2 * once)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 1e4, 0.0]])
    loss = cross_entropy(logits, torch.tensor([2, 0]))
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, torch.tensor((2000.0 + 1e4) / 2))


def test_cross_entropy_computes_in_float32_for_bf16_logits():
    torch.manual_seed(0)
    logits = torch.randn(4, 8, 50)
    targets = torch.randint(50, (4, 8))
    loss = cross_entropy(logits.bfloat16(), targets)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, cross_entropy(logits.bfloat16().float(), targets))


# --- AdamW -----------------------------------------------------------------------------------


def _train_steps(model, optimizer, steps: int) -> list[float]:
    generator = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        starts = torch.randint(TINY.vocab_size, (4, 1), generator=generator)
        ids = (starts + 3 * torch.arange(TINY.context_length + 1)) % TINY.vocab_size  # learnable: next = id + 3
        loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("foreach", [True, False])
def test_adamw_matches_torch_on_a_transformer_over_many_steps(foreach):
    torch.manual_seed(0)
    model = TransformerLM.from_config(TINY)
    reference = copy.deepcopy(model)
    no_decay = ["*ln*", "token_embeddings.weight"]
    ours = AdamW(decay_groups(model, 0.1, no_decay), lr=3e-3, betas=(0.9, 0.95), eps=1e-8)
    theirs = torch.optim.AdamW(decay_groups(reference, 0.1, no_decay), lr=3e-3, betas=(0.9, 0.95), eps=1e-8,
                               foreach=foreach)
    our_losses = _train_steps(model, ours, 40)
    their_losses = _train_steps(reference, theirs, 40)
    assert our_losses[-1] < our_losses[0] - 0.5  # it learns
    np.testing.assert_allclose(our_losses, their_losses, rtol=1e-4)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_a_compiled_adamw_step_equals_the_eager_one_and_compiles_once_per_group():
    """compile_step: the same updates (to rounding), and changing lr and step counts recompile nothing."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = TransformerLM.from_config(TINY)
    reference = copy.deepcopy(model)
    no_decay = ["*ln*", "token_embeddings.weight"]
    compiled = AdamW(decay_groups(model, 0.1, no_decay), lr=3e-3, betas=(0.9, 0.95))
    eager = AdamW(decay_groups(reference, 0.1, no_decay), lr=3e-3, betas=(0.9, 0.95))
    torch._dynamo.reset()
    counters.clear()
    compiled.compile_step({"backend": "aot_eager", "dynamic": False})
    for trained, optimizer in ((model, compiled), (reference, eager)):
        for step in range(1, 6):  # a new lr every step, as the schedule sets it
            for group in optimizer.param_groups:
                group["lr"] = 3e-3 * step / 5
            _train_steps(trained, optimizer, 1)
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 2  # one per parameter group (its weight decay), then never again
    torch._dynamo.reset()


def test_adamw_update_is_the_documented_formula():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    lr, (b1, b2), eps, wd = 0.1, (0.9, 0.99), 1e-8, 0.5
    optimizer = AdamW([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    expected, m, v = p.detach().clone(), torch.zeros(2), torch.zeros(2)
    for t, g in enumerate([torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 2.0])], start=1):
        p.grad = g.clone()
        optimizer.step()
        expected = expected - lr * wd * expected
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        expected = expected - lr / (1 - b1**t) * m / ((v / (1 - b2**t)).sqrt() + eps)
        torch.testing.assert_close(p.detach(), expected)
    assert optimizer.state[p]["step"] == 2


def test_adamw_skips_parameters_without_gradients_and_keeps_group_settings():
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    optimizer = AdamW([{"params": [a], "weight_decay": 0.0}, {"params": [b]}], lr=0.1, weight_decay=0.5)
    a.grad = torch.zeros(3)
    optimizer.step()
    torch.testing.assert_close(a.detach(), torch.ones(3))  # zero gradient, no decay: unchanged
    torch.testing.assert_close(b.detach(), torch.ones(3))  # no gradient: not touched at all
    assert b not in optimizer.state


def test_decay_groups_rejects_a_pattern_that_matches_nothing():
    with pytest.raises(LmcliError, match="'layernorm' matches no parameter"):
        decay_groups(TransformerLM.from_config(TINY), 0.1, ["layernorm"])


# --- cosine_lr -------------------------------------------------------------------------------


def test_cosine_lr_follows_the_formula_in_every_phase():
    a_max, a_min, warmup, cycle = 1.0, 0.1, 7, 21
    for t in range(30):
        if t < warmup:
            expected = t / warmup * a_max
        elif t <= cycle:
            expected = a_min + 0.5 * (1 + math.cos(math.pi * (t - warmup) / (cycle - warmup))) * (a_max - a_min)
        else:
            expected = a_min
        assert cosine_lr(t, a_max, a_min, warmup, cycle) == pytest.approx(expected)
    assert cosine_lr(warmup, a_max, a_min, warmup, cycle) == pytest.approx(a_max)
    assert cosine_lr(cycle, a_max, a_min, warmup, cycle) == pytest.approx(a_min)


def test_cosine_lr_matches_the_cs336_reference_values():
    expected = [0, 0.14285714285714285, 0.2857142857142857, 0.42857142857142855, 0.5714285714285714,
                0.7142857142857143, 0.8571428571428571, 1.0, 0.9887175604818206, 0.9554359905560885,
                0.9018241671106134, 0.8305704108364301, 0.7452476826029011, 0.6501344202803414,
                0.55, 0.44986557971965857, 0.3547523173970989, 0.26942958916356996, 0.19817583288938662,
                0.14456400944391146, 0.11128243951817937, 0.1, 0.1, 0.1, 0.1]
    actual = [cosine_lr(t, 1, 0.1, 7, 21) for t in range(25)]
    np.testing.assert_allclose(actual, expected)


# --- clip_grad_norm --------------------------------------------------------------------------


def _params_with_grads(scale: float) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 4)), torch.nn.Parameter(torch.randn(3)), torch.nn.Parameter(torch.randn(2))]
    for p in params[:2]:
        p.grad = torch.randn_like(p) * scale
    return params  # the last one has no gradient


def test_clip_grad_norm_matches_torch_and_returns_the_norm_before_clipping():
    ours, theirs = _params_with_grads(10.0), _params_with_grads(10.0)
    norm = clip_grad_norm(ours, 1.0)
    expected_norm = torch.nn.utils.clip_grad_norm_([p for p in theirs if p.grad is not None], 1.0)
    torch.testing.assert_close(norm, expected_norm)
    for p, q in zip(ours[:2], theirs[:2]):
        torch.testing.assert_close(p.grad, q.grad)
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours[:2]]))
    assert total.item() == pytest.approx(1.0, rel=1e-5)


def test_clip_grad_norm_leaves_small_gradients_alone():
    params = _params_with_grads(1e-3)
    before = [p.grad.clone() for p in params[:2]]
    clip_grad_norm(params, 1.0)
    for p, g in zip(params[:2], before):
        torch.testing.assert_close(p.grad, g)


# --- get_batch -------------------------------------------------------------------------------


@pytest.fixture
def memmap_ids(tmp_path) -> np.ndarray:
    np.save(tmp_path / "ids.npy", np.arange(1000, dtype=np.uint16))
    return np.load(tmp_path / "ids.npy", mmap_mode="r")


def test_get_batch_from_a_memmap_gives_windows_and_next_token_targets(memmap_ids):
    x, y = get_batch(memmap_ids, batch_size=8, context_length=16, device="cpu")
    assert x.shape == y.shape == (8, 16)
    assert x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
    starts = x[:, 0]
    torch.testing.assert_close(x, starts[:, None] + torch.arange(16))  # ids == positions: windows are contiguous
    torch.testing.assert_close(y, x + 1)
    assert int(y.max()) <= 999


def test_get_batch_samples_every_start_uniformly_and_reproducibly(memmap_ids):
    context = 990  # 10 possible starts: 0..9
    starts = torch.cat([get_batch(memmap_ids, 100, context, "cpu")[0][:, 0] for _ in range(20)])
    counts = torch.bincount(starts, minlength=10)
    assert len(counts) == 10 and counts.min() > 150  # 2000 draws over 10 starts: ~200 each
    first = get_batch(memmap_ids, 4, 16, "cpu", torch.Generator().manual_seed(7))
    again = get_batch(memmap_ids, 4, 16, "cpu", torch.Generator().manual_seed(7))
    torch.testing.assert_close(first, again)


def test_get_batch_rejects_an_unknown_device(memmap_ids):
    with pytest.raises((RuntimeError, AssertionError)):
        get_batch(memmap_ids, 2, 4, "cuda:99")


# --- other schedules -------------------------------------------------------------------------


@pytest.mark.parametrize(("shape", "f"), [("linear", lambda p: 1 - p), ("cosine", lambda p: (1 + math.cos(math.pi * p)) / 2),
                                          ("1-sqrt", lambda p: 1 - math.sqrt(p))])
def test_wsd_warms_up_holds_then_decays_over_the_last_fraction(shape, f):
    from lmcli.training.schedule import wsd_lr

    a_max, a_min, warmup, total = 1.0, 0.1, 10, 100  # decay_fraction 0.2: steps 80..100
    for t in range(0, 120):
        if t < warmup:
            expected = t / warmup * a_max
        elif t < 80:
            expected = a_max
        elif t < total:
            expected = a_min + f((t - 80) / 20) * (a_max - a_min)
        else:
            expected = a_min
        assert wsd_lr(t, a_max, a_min, warmup, total, 0.2, shape) == pytest.approx(expected), t
    # the stable phase does not depend on the budget: a longer run agrees up to its own decay
    assert [wsd_lr(t, a_max, a_min, warmup, 200, 0.2, shape) for t in range(80)] == \
           [wsd_lr(t, a_max, a_min, warmup, 100, 0.2, shape) for t in range(80)]
