"""The fast kernels (and PyTorch's, ``kernels="torch"``) equal the plain code they name: values and
gradients of each kernel on random inputs (and finite differences for the hand-written
backwards), then whole models and a training step against ``kernels="reference"``."""

from __future__ import annotations

import pytest
import torch

from lmcli.model import ModelConfig, TransformerLM, kernels, torch_kernels
from lmcli.model.attention import causal_mask, scaled_dot_product_attention
from lmcli.model.layers import RMSNorm, rotate_pairs
from lmcli.model.kernels import IGNORE
from lmcli.model.loss import cross_entropy, linear_cross_entropy, loss_and_z_term

TINY = dict(vocab_size=97, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=48)
ABLATIONS = [{}, {"norm": "post"}, {"norm": "none"}, {"position": "none"}, {"ffn": "silu", "d_ff": 128},
             {"tie_embeddings": True}, {"qk_norm": True}, {"logit_softcap": 2.0}, {"ffn": "relu2", "d_ff": 128},
             {"num_kv_heads": 2}, {"num_kv_heads": 1, "position": "none"},
             {"qk_norm": True, "logit_softcap": 2.0, "ffn": "relu2", "tie_embeddings": True, "num_kv_heads": 2}]


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


def values_and_grads(fn, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """fn(*inputs) and the gradient of a random projection of it with respect to every input."""
    inputs = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in inputs]
    out = fn(*inputs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * weights).sum().backward()
    return [out.detach(), *(t.grad for t in inputs if t.is_floating_point())]


def assert_same(fast, plain, **tolerance):
    for a, b in zip(fast, plain, strict=True):
        torch.testing.assert_close(a, b, **tolerance)


@pytest.mark.parametrize("kernel_set", [kernels, torch_kernels], ids=["fast", "torch"])
@pytest.mark.parametrize("queries", [7, 3, 1])  # square causal mask, fewer queries than keys (KV cache), one query
def test_attention_kernel_equals_scaled_dot_product_attention(queries, kernel_set):
    Q, K, V = torch.randn(2, 3, queries, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8)
    mask = None if queries == 1 else causal_mask(queries, 7)
    assert_same(values_and_grads(lambda q, k, v: kernel_set.attention(q, k, v, mask), Q, K, V),
                values_and_grads(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask), Q, K, V))
    with torch.no_grad():  # the inference path (no autograd Function) gives the same values
        torch.testing.assert_close(kernel_set.attention(Q, K, V, mask), scaled_dot_product_attention(Q, K, V, mask))


@pytest.mark.parametrize("tokens", [9, 600])  # CausalAttention, and TiledAttention past KEY_BLOCK keys
def test_attention_kernel_under_bf16_matches_the_plain_code_under_bf16(tokens):
    Q, K, V = (torch.randn(1, 2, tokens, 16).bfloat16() for _ in range(3))
    mask = causal_mask(tokens, tokens)
    assert_same(values_and_grads(lambda q, k, v: kernels.attention(q, k, v, mask), Q, K, V),
                values_and_grads(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask), Q, K, V),
                rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("queries", "keys", "causal"), [(300, 300, True), (2048, 2048, True), (200, 600, True),
                                                   (400, 400, False)])
def test_tiled_attention_equals_the_plain_code_on_long_contexts(queries, keys, causal):
    """Above KEY_BLOCK keys the fast kernel is TiledAttention (online softmax over key blocks)."""
    assert keys > kernels.KEY_BLOCK
    Q, K, V = torch.randn(1, 2, queries, 8), torch.randn(1, 2, keys, 8), torch.randn(1, 2, keys, 8)
    mask = causal_mask(queries, keys) if causal else None
    assert_same(values_and_grads(lambda q, k, v: kernels.attention(q, k, v, mask), Q, K, V),
                values_and_grads(lambda q, k, v: scaled_dot_product_attention(q, k, v, mask), Q, K, V),
                rtol=1e-4, atol=1e-5)


def test_tiled_attention_passes_gradcheck(monkeypatch):
    monkeypatch.setattr(kernels, "KEY_BLOCK", 2)  # 7 keys: blocks of 2, 2, 2 and 1
    Q, K, V = (torch.randn(1, 2, 7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    for mask in (causal_mask(7, 7), None):
        assert torch.autograd.gradcheck(lambda q, k, v: kernels.attention(q, k, v, mask), (Q, K, V))


def test_tiled_attention_saves_nothing_of_size_queries_times_keys():
    saved = []
    Q, K, V = (torch.randn(1, 1, 2048, 8, requires_grad=True) for _ in range(3))
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = kernels.attention(Q, K, V, causal_mask(2048, 2048))
    out.sum().backward()  # and the backward recomputes what it needs
    assert saved and max(saved) <= 2048 * 8  # Q, K, V, O and one log-sum-exp per row: O(T·d), not T²


def test_rotation_kernel_equals_rotate_pairs():
    x, angles = torch.randn(2, 3, 5, 8), torch.rand(5, 4) * 6
    assert_same(values_and_grads(lambda t: kernels.rotate(t, angles.cos(), angles.sin()), x),
                values_and_grads(lambda t: rotate_pairs(t, angles.cos(), angles.sin()), x))


@pytest.mark.parametrize("shape", [(2, 5, 16), (2, 4, 5, 8)])  # a block's norm; QK-norm's, over each head
def test_rms_norm_kernel_equals_the_rms_norm_layer(shape):
    x, weight = torch.randn(shape) * 3, torch.randn(shape[-1])
    plain = RMSNorm(shape[-1])
    assert_same(values_and_grads(lambda t, w: kernels.rms_norm(t, w, plain.eps), x, weight),
                values_and_grads(lambda t, w: torch.func.functional_call(plain, {"weight": w}, (t,)), x, weight))
    heads_last = x.transpose(-2, -3)  # QK-norm normalizes a transposed view of the projection
    assert_same(values_and_grads(lambda t, w: kernels.rms_norm(t, w, plain.eps), heads_last, weight),
                values_and_grads(lambda t, w: torch.func.functional_call(plain, {"weight": w}, (t,)), heads_last, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # bf16 in, float32 inside, bf16 out: as the layer
        assert_same(values_and_grads(lambda t, w: kernels.rms_norm(t.bfloat16(), w, plain.eps), x, weight),
                    values_and_grads(lambda t, w: torch.func.functional_call(plain, {"weight": w}, (t.bfloat16(),)), x, weight),
                    rtol=2e-2, atol=2e-2)


def test_fused_projection_equals_three_projections():
    x, w_q, w_k, w_v = torch.randn(2, 5, 16), torch.randn(16, 16), torch.randn(16, 16), torch.randn(16, 16)
    for fused, separate in zip(kernels.project_qkv(x, w_q, w_k, w_v), (x @ w_q.T, x @ w_k.T, x @ w_v.T)):
        torch.testing.assert_close(fused, separate)


@pytest.mark.parametrize("kernel_set", ["fast", "torch"])
@pytest.mark.parametrize("shape", [(11,), (3, 7), (2, 3, 5)])
def test_cross_entropy_kernel_equals_the_plain_formula(shape, kernel_set):
    logits = torch.randn(*shape, 50) * 4
    targets = torch.randint(0, 50, shape)
    assert_same(values_and_grads(lambda o: cross_entropy(o, targets, kernel_set), logits),
                values_and_grads(lambda o: cross_entropy(o, targets, "reference"), logits))
    assert_same(values_and_grads(lambda o: cross_entropy(o.bfloat16(), targets, kernel_set), logits),
                values_and_grads(lambda o: cross_entropy(o.bfloat16(), targets, "reference"), logits))


@pytest.mark.parametrize("kernel_set", ["fast", "torch", "reference"])
def test_ignored_targets_count_for_nothing(kernel_set):
    logits, targets = torch.randn(6, 9, 30), torch.randint(0, 30, (6, 9))
    padded = targets.clone()
    padded[4:] = IGNORE  # two padding rows
    loss, *grads = values_and_grads(lambda o: cross_entropy(o, padded, kernel_set) * 4, logits)
    kept, *kept_grads = values_and_grads(lambda o: cross_entropy(o[:4], targets[:4], kernel_set) * 4, logits)
    torch.testing.assert_close(loss, kept)
    torch.testing.assert_close(grads[0], kept_grads[0])  # no gradient reaches the padding rows
    assert not grads[0][4:].any()


@pytest.mark.parametrize("chunk", [1 << 23, 200])  # one chunk; several, the last one short
def test_fused_linear_cross_entropy_equals_head_then_loss(chunk, monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK_LOGITS", chunk)  # 200 logits: 5 rows of 40 at a time
    x, weight, targets = torch.randn(3, 7, 16), torch.randn(40, 16) * 0.5, torch.randint(0, 40, (3, 7))
    targets[2, 3:] = IGNORE
    assert_same(values_and_grads(lambda a, w: linear_cross_entropy(a, w, targets, "fast"), x, weight),
                values_and_grads(lambda a, w: cross_entropy(a @ w.T, targets, "reference"), x, weight))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # matmuls in bf16 as the unfused head's; the softmax in float32
        assert_same(values_and_grads(lambda a, w: linear_cross_entropy(a, w, targets, "fast"), x, weight),
                    values_and_grads(lambda a, w: cross_entropy(a @ w.T, targets, "reference"), x, weight),
                    rtol=2e-2, atol=2e-2)
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(x, weight, targets), cross_entropy(x @ weight.T, targets))


def test_hand_written_backwards_pass_gradcheck():
    """Every hand-written backward against finite differences, in float64."""
    Q, K, V = (torch.randn(2, 2, 6, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    for queries in (6, 3):
        q = Q[:, :, :queries].detach().requires_grad_()
        mask = causal_mask(queries, 6)
        assert torch.autograd.gradcheck(lambda q, k, v: kernels.attention(q, k, v, mask), (q, K, V))
    angles = torch.rand(6, 2, dtype=torch.float64) * 6
    assert torch.autograd.gradcheck(lambda x: kernels.rotate(x, angles.cos(), angles.sin()), (Q,))
    gain = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, g: kernels.rms_norm(x, g, 1e-5), (Q, gain))
    logits, targets = torch.randn(5, 11, dtype=torch.float64, requires_grad=True), torch.tensor([3, IGNORE, 0, 10, 7])
    assert torch.autograd.gradcheck(lambda o: kernels.CrossEntropy.apply(o, targets), (logits,))
    x, weight = torch.randn(5, 4, dtype=torch.float64, requires_grad=True), torch.randn(11, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: kernels.linear_cross_entropy(a, w, targets)[0], (x, weight))
    assert torch.autograd.gradcheck(lambda a, w: kernels.linear_cross_entropy(a, w, targets, None, 0.1)[0], (x, weight))


@pytest.mark.parametrize("kernel_set", ["fast", "torch"])
@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "default")
def test_a_model_with_fast_kernels_equals_the_reference_model(ablation, kernel_set):
    fast = TransformerLM.from_config(ModelConfig(**{**TINY, **ablation, "kernels": kernel_set}))
    plain = TransformerLM.from_config(ModelConfig(**{**TINY, **ablation, "kernels": "reference"}))
    plain.load_state_dict(fast.state_dict())
    ids = torch.randint(0, 97, (3, 16))

    def loss_and_grads(model: TransformerLM) -> list[torch.Tensor]:
        model.zero_grad()
        loss = model(ids[:, :-1], targets=ids[:, 1:])  # the loss computed by the model, as training does
        loss.backward()
        logits = model(ids).detach()
        torch.testing.assert_close(loss.detach(), cross_entropy(model(ids[:, :-1]), ids[:, 1:], "reference").detach())
        return [loss.detach(), logits, *(p.grad for p in model.parameters())]

    assert_same(loss_and_grads(fast), loss_and_grads(plain), rtol=1e-4, atol=1e-5)


def test_the_kernels_switch_reaches_every_layer():
    model = TransformerLM.from_config(ModelConfig(**TINY, kernels="reference"))
    assert {m.kernels for m in model.modules() if hasattr(m, "kernels")} == {"reference"}
    assert not any(isinstance(m, kernels.FusedRMSNorm) for m in model.modules())
    qk_normed = TransformerLM.from_config(ModelConfig(**TINY, qk_norm=True))  # fast: every norm fused, QK-norm's too
    assert sum(isinstance(m, kernels.FusedRMSNorm) for m in qk_normed.modules()) == 4 * TINY["num_layers"] + 1
    assert ModelConfig(**TINY).same_architecture(model.config)
    assert not ModelConfig(**TINY).same_architecture(ModelConfig(**{**TINY, "d_ff": 64}))


@pytest.mark.parametrize("kernel_set", ["fast", "torch", "reference"])
def test_vocabulary_padding_changes_no_logit_loss_or_gradient(kernel_set):
    """97 ids in tables of 128 rows: the same model as 97 rows, whatever the padding rows hold."""
    plain = TransformerLM.from_config(ModelConfig(**TINY, kernels=kernel_set))
    padded = TransformerLM.from_config(ModelConfig(**TINY, kernels=kernel_set, vocab_multiple=64))
    assert padded.lm_head.weight.shape[0] == padded.config.padded_vocab_size == 128
    state = plain.state_dict()
    for name in ("token_embeddings.weight", "lm_head.weight"):  # the real rows, then random padding rows
        state[name] = torch.cat([state[name], torch.randn(31, TINY["d_model"]) * 5])
    padded.load_state_dict(state)
    ids = torch.randint(0, 97, (3, 16))
    torch.testing.assert_close(padded(ids), plain(ids))
    for model in (plain, padded):
        model(ids[:, :-1], targets=ids[:, 1:]).backward()
    torch.testing.assert_close(padded(ids[:, :-1], targets=ids[:, 1:]), plain(ids[:, :-1], targets=ids[:, 1:]))
    for (name, p), q in zip(padded.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad[: q.shape[0]], q.grad, msg=name)
        assert not p.grad[q.shape[0]:].any()  # the padding rows learn nothing
    assert plain.config.same_architecture(ModelConfig(**TINY, vocab_multiple=1))
    assert padded.config.same_architecture(ModelConfig(**TINY, vocab_multiple=32))  # 97 -> 128 either way
    assert not padded.config.same_architecture(plain.config)


@pytest.mark.parametrize("kernel_set", ["fast", "torch", "reference"])
def test_the_z_loss_term_equals_the_plain_formula(kernel_set, monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK_LOGITS", 200)  # several chunks
    x, weight, targets = torch.randn(3, 7, 16), torch.randn(40, 16) * 0.5, torch.randint(0, 40, (3, 7))
    targets[1, 5:] = IGNORE

    def plain(a, w):
        logits = a @ w.T
        log_z = torch.logsumexp(logits, dim=-1)[targets != IGNORE]
        return cross_entropy(logits, targets, "reference") + 1e-2 * log_z.square().mean()

    assert_same(values_and_grads(lambda a, w: linear_cross_entropy(a, w, targets, kernel_set, z_loss=1e-2), x, weight),
                values_and_grads(plain, x, weight), rtol=1e-5, atol=1e-6)
    total, z_term = loss_and_z_term(x, weight.requires_grad_(), targets, kernel_set, z_loss=1e-2)  # reported apart
    log_z = torch.logsumexp(x @ weight.T, dim=-1)[targets != IGNORE]
    torch.testing.assert_close(z_term, 1e-2 * log_z.square().mean())
    torch.testing.assert_close(total - z_term, cross_entropy(x @ weight.T, targets, "reference"))
    assert total.requires_grad and not z_term.requires_grad


def test_fused_loss_with_softcap_padding_and_z_loss_equals_the_plain_formula(monkeypatch):
    monkeypatch.setattr(kernels, "CHUNK_LOGITS", 200)
    x, weight, targets = torch.randn(3, 7, 16), torch.randn(48, 16), torch.randint(0, 40, (3, 7))  # 40 ids, 48 rows

    def plain(a, w):
        logits = 3.0 * torch.tanh((a @ w.T)[..., :40] / 3.0)
        return cross_entropy(logits, targets, "reference") + 1e-2 * torch.logsumexp(logits, -1).square().mean()

    fused = lambda a, w: linear_cross_entropy(a, w, targets, "fast", vocab=40, z_loss=1e-2, softcap=3.0)  # noqa: E731
    assert_same(values_and_grads(fused, x, weight), values_and_grads(plain, x, weight), rtol=1e-5, atol=1e-6)
    x64, w64 = x.double().requires_grad_(), weight.double().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, w: kernels.linear_cross_entropy(a, w, targets, 40, 1e-2, 3.0)[0], (x64, w64))
