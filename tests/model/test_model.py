"""The from-scratch Transformer against independent computations: torch's own functional ops,
a float64 attention loop, RoPE as explicit rotation matrices and as complex multiplication, and a
whole-model reference forward written with torch.nn.functional from a hand-built state dict."""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn.functional as F

from lmcli.errors import LmcliError
from lmcli.model import (
    Embedding,
    Linear,
    ModelConfig,
    MultiHeadSelfAttention,
    RMSNorm,
    RotaryPositionalEmbedding,
    SiLUFeedForward,
    SwiGLU,
    TransformerBlock,
    TransformerLM,
    scaled_dot_product_attention,
    silu,
    softmax,
)
from lmcli.training.device import TORCH_DIR

TINY = dict(vocab_size=97, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=48)
ABLATIONS = [
    {},
    {"norm": "post"},
    {"norm": "none"},
    {"position": "none"},
    {"ffn": "silu", "d_ff": 128},
    {"tie_embeddings": True},
]


def tiny(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------- layers


def test_linear_matches_torch_and_init_scale():
    layer = Linear(300, 200)
    assert layer.weight.shape == (200, 300)
    x = torch.randn(4, 5, 300)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight))
    std = math.sqrt(2 / (300 + 200))
    assert layer.weight.abs().max() <= 3 * std
    # a normal truncated at ±3σ has standard deviation 0.986σ
    assert abs(layer.weight.std().item() / std - 0.986) < 0.02


def test_embedding_matches_torch_and_init():
    emb = Embedding(1000, 64)
    ids = torch.randint(0, 1000, (3, 7))
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight))
    assert emb.weight.abs().max() <= 3.0
    assert abs(emb.weight.std().item() - 0.986) < 0.02


def test_rmsnorm_matches_torch_and_keeps_dtype():
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(64))
    x = torch.randn(2, 5, 64) * 3
    torch.testing.assert_close(norm(x), F.rms_norm(x, (64,), norm.weight, eps=1e-5))
    x16 = x.bfloat16()
    out = norm(x16)
    assert out.dtype == torch.bfloat16
    # computed in float32: the result is the float32 answer rounded once to bf16
    torch.testing.assert_close(out, norm(x16.float()).bfloat16(), rtol=0, atol=0)


def test_silu_and_softmax_match_torch():
    x = torch.randn(6, 11) * 5
    torch.testing.assert_close(silu(x), F.silu(x))
    for dim in (0, 1, -1):
        torch.testing.assert_close(softmax(x, dim), torch.softmax(x, dim))


def test_softmax_is_stable_for_large_inputs_and_bf16():
    x = torch.randn(4, 50) * 10 + 1000.0  # exp(1000) overflows without max subtraction
    torch.testing.assert_close(softmax(x, -1), torch.softmax(x - 1000.0, -1))
    out = softmax(x.bfloat16(), -1)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float().sum(-1), torch.ones(4), atol=1e-2, rtol=0)


def test_feed_forwards_match_functional_formulas():
    x = torch.randn(3, 4, 32)
    ffn = SwiGLU(32, 48)
    expected = F.linear(F.silu(F.linear(x, ffn.w1.weight)) * F.linear(x, ffn.w3.weight), ffn.w2.weight)
    torch.testing.assert_close(ffn(x), expected)
    plain = SiLUFeedForward(32, 128)
    assert not hasattr(plain, "w3")
    torch.testing.assert_close(plain(x), F.linear(F.silu(F.linear(x, plain.w1.weight)), plain.w2.weight))


# ---------------------------------------------------------------- RoPE


def rotation_matrix(theta: float, d_k: int, position: int) -> torch.Tensor:
    """Block-diagonal d_k×d_k matrix rotating each pair (2k, 2k+1) by position·θ^(-2k/d_k)."""
    R = torch.zeros(d_k, d_k, dtype=torch.float64)
    for k in range(d_k // 2):
        angle = position * theta ** (-2 * k / d_k)
        c, s = math.cos(angle), math.sin(angle)
        R[2 * k : 2 * k + 2, 2 * k : 2 * k + 2] = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    return R


def rope_by_matrices(x: torch.Tensor, positions: list[int], theta: float) -> torch.Tensor:
    d_k = x.shape[-1]
    out = torch.stack([x[..., i, :].double() @ rotation_matrix(theta, d_k, p).T for i, p in enumerate(positions)], -2)
    return out.float()


def test_rope_equals_explicit_rotation_matrices():
    rope = RotaryPositionalEmbedding(10_000.0, 16, max_seq_len=64)
    x = torch.randn(2, 9, 16)
    positions = [3, 0, 7, 8, 20, 63, 5, 5, 1]
    out = rope(x, torch.tensor(positions))
    torch.testing.assert_close(out, rope_by_matrices(x, positions, 10_000.0))
    # without positions the tokens sit at 0..seq-1
    torch.testing.assert_close(rope(x), rope_by_matrices(x, list(range(9)), 10_000.0))


def test_rope_dot_products_depend_only_on_offset_and_buffers_not_saved():
    rope = RotaryPositionalEmbedding(500.0, 8, max_seq_len=32)
    q, k = torch.randn(1, 8), torch.randn(1, 8)
    dot = lambda i, j: (rope(q, torch.tensor([i])) * rope(k, torch.tensor([j]))).sum()  # noqa: E731
    torch.testing.assert_close(dot(5, 2), dot(13, 10))
    torch.testing.assert_close(dot(0, 0), (q * k).sum())
    assert len(rope.state_dict()) == 0


# ---------------------------------------------------------------- attention


def attention_loop(Q, K, V, mask):
    """softmax(QKᵀ/√d)V one query at a time in float64."""
    Q, K, V = Q.double(), K.double(), V.double()
    out = torch.zeros(*Q.shape[:-1], V.shape[-1], dtype=torch.float64)
    for i in range(Q.shape[-2]):
        scores = (K * Q[..., i : i + 1, :]).sum(-1) / math.sqrt(Q.shape[-1])
        scores = scores.masked_fill(~mask[i], -math.inf)
        weights = scores.exp() / scores.exp().sum(-1, keepdim=True)
        out[..., i, :] = (weights.unsqueeze(-1) * V).sum(-2)
    return out


def test_scaled_dot_product_attention_matches_float64_loop():
    Q, K, V = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)  # any leading dims
    mask = torch.rand(5, 7) > 0.4
    mask[:, 0] = True  # every query sees at least one key
    torch.testing.assert_close(scaled_dot_product_attention(Q, K, V, mask), attention_loop(Q, K, V, mask).float())
    everything = torch.ones(5, 7, dtype=torch.bool)
    torch.testing.assert_close(scaled_dot_product_attention(Q, K, V), attention_loop(Q, K, V, everything).float())


def reference_attention(x, attn, positions, theta):
    """Causal MHSA with torch's own sdpa, heads split by hand, RoPE by rotation matrices."""
    h = attn.num_heads
    q, k, v = (F.linear(x, p.weight).unflatten(-1, (h, -1)).transpose(-3, -2) for p in (attn.q_proj, attn.k_proj, attn.v_proj))
    if theta is not None:
        q, k = rope_by_matrices(q, positions, theta), rope_by_matrices(k, positions, theta)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return F.linear(out.transpose(-3, -2).flatten(-2), attn.output_proj.weight)


@pytest.mark.parametrize("theta", [None, 10_000.0])
def test_multihead_self_attention_matches_reference(theta):
    attn = MultiHeadSelfAttention(32, 4, max_seq_len=16, theta=theta)
    x = torch.randn(2, 10, 32)
    torch.testing.assert_close(attn(x), reference_attention(x, attn, list(range(10)), theta))
    if theta is not None:  # explicit positions, shaped (seq,) or (batch, seq)
        positions = [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
        expected = reference_attention(x, attn, positions, theta)
        torch.testing.assert_close(attn(x, torch.tensor(positions)), expected)
        torch.testing.assert_close(attn(x, torch.tensor([positions, positions])), expected)


# ---------------------------------------------------------------- the whole model


def state_dict_by_hand(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The CS336 checkpoint layout written out from the config, not read from the model."""
    d, f, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    sd = {"token_embeddings.weight": torch.randn(V, d)}
    for i in range(cfg.num_layers):
        for name in ("q_proj", "k_proj", "v_proj", "output_proj"):
            sd[f"layers.{i}.attn.{name}.weight"] = torch.randn(d, d) / math.sqrt(d)
        sd[f"layers.{i}.ffn.w1.weight"] = torch.randn(f, d) / math.sqrt(d)
        sd[f"layers.{i}.ffn.w2.weight"] = torch.randn(d, f) / math.sqrt(f)
        if cfg.ffn == "swiglu":
            sd[f"layers.{i}.ffn.w3.weight"] = torch.randn(f, d) / math.sqrt(d)
        if cfg.norm != "none":
            sd[f"layers.{i}.ln1.weight"] = 1 + 0.1 * torch.randn(d)
            sd[f"layers.{i}.ln2.weight"] = 1 + 0.1 * torch.randn(d)
    if cfg.norm != "none":
        sd["ln_final.weight"] = 1 + 0.1 * torch.randn(d)
    # tied: the one shared matrix appears under both names
    sd["lm_head.weight"] = sd["token_embeddings.weight"] if cfg.tie_embeddings else torch.randn(V, d) / math.sqrt(d)
    return sd


def rope_complex(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE as multiplication of consecutive pairs, read as complex numbers, by e^{i·pos·freq}."""
    d_k, seq = x.shape[-1], x.shape[-2]
    freqs = theta ** (-torch.arange(0, d_k, 2, dtype=torch.float64) / d_k)
    rotation = torch.polar(torch.ones(seq, d_k // 2, dtype=torch.float64), torch.arange(seq)[:, None] * freqs)
    z = torch.view_as_complex(x.double().unflatten(-1, (-1, 2)).contiguous())
    return torch.view_as_real(z * rotation).flatten(-2).float()


def reference_forward(sd: dict, cfg: ModelConfig, ids: torch.Tensor) -> torch.Tensor:
    """The whole LM with torch.nn.functional, straight from the state dict."""
    x = F.embedding(ids, sd["token_embeddings.weight"])

    def norm(name, t):
        return F.rms_norm(t, (cfg.d_model,), sd[name], eps=1e-5)

    def attn(i, t):
        p = f"layers.{i}.attn."
        q, k, v = (F.linear(t, sd[p + n + ".weight"]).unflatten(-1, (cfg.num_heads, -1)).transpose(1, 2) for n in ("q_proj", "k_proj", "v_proj"))
        if cfg.position == "rope":
            q, k = rope_complex(q, cfg.rope_theta), rope_complex(k, cfg.rope_theta)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.linear(out.transpose(1, 2).flatten(-2), sd[p + "output_proj.weight"])

    def ffn(i, t):
        p = f"layers.{i}.ffn."
        hidden = F.silu(F.linear(t, sd[p + "w1.weight"]))
        if cfg.ffn == "swiglu":
            hidden = hidden * F.linear(t, sd[p + "w3.weight"])
        return F.linear(hidden, sd[p + "w2.weight"])

    for i in range(cfg.num_layers):
        ln1, ln2 = f"layers.{i}.ln1.weight", f"layers.{i}.ln2.weight"
        if cfg.norm == "pre":
            x = x + attn(i, norm(ln1, x))
            x = x + ffn(i, norm(ln2, x))
        elif cfg.norm == "post":
            x = norm(ln1, x + attn(i, x))
            x = norm(ln2, x + ffn(i, x))
        else:
            x = x + attn(i, x)
            x = x + ffn(i, x)
    if cfg.norm != "none":
        x = norm("ln_final.weight", x)
    return F.linear(x, sd["lm_head.weight"])


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "default")
def test_hand_built_state_dict_loads_strictly_and_model_matches_reference(ablation):
    cfg = tiny(**ablation)
    model = TransformerLM.from_config(cfg)
    sd = state_dict_by_hand(cfg)
    model.load_state_dict(sd, strict=True)
    ids = torch.randint(0, cfg.vocab_size, (2, 11))  # shorter than context_length
    torch.testing.assert_close(model(ids), reference_forward(sd, cfg, ids), rtol=1e-4, atol=1e-4)
    if cfg.tie_embeddings:
        assert model.lm_head.weight is model.token_embeddings.weight
        assert set(model.state_dict()) == set(sd)


def test_state_dict_keys_and_shapes_are_the_cs336_ones():
    cfg = tiny()
    expected = {k: v.shape for k, v in state_dict_by_hand(cfg).items()}
    assert {k: v.shape for k, v in TransformerLM.from_config(cfg).state_dict().items()} == expected


def test_transformer_block_is_the_pre_norm_block():
    block = TransformerBlock(32, 4, 48, max_seq_len=16, theta=10_000.0)
    assert {n for n, _ in block.named_children()} == {"ln1", "attn", "ln2", "ffn"}
    x = torch.randn(2, 6, 32)
    h = x + block.attn(block.ln1(x))
    torch.testing.assert_close(block(x), h + block.ffn(block.ln2(h)))


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()) or "default")
def test_causal_and_gradients_finite(ablation):
    model = TransformerLM.from_config(tiny(**ablation))
    ids = torch.randint(0, 97, (2, 16))
    logits = model(ids)
    changed = ids.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 97
    after = model(changed)
    torch.testing.assert_close(after[:, :9], logits[:, :9], rtol=0, atol=0)
    assert not torch.allclose(after[:, 9:], logits[:, 9:])
    F.cross_entropy(logits.flatten(0, 1), ids.roll(-1, 1).flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_activation_checkpointing_recomputes_the_same_gradients():
    torch.manual_seed(0)
    model = TransformerLM.from_config(tiny())
    ids = torch.randint(0, 97, (2, 16))

    def gradients() -> dict[str, torch.Tensor]:
        model.zero_grad()
        F.cross_entropy(model(ids).flatten(0, 1), ids.roll(-1, 1).flatten()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing = True
    recomputed = gradients()
    for name in plain:
        torch.testing.assert_close(recomputed[name], plain[name], rtol=0, atol=0, msg=name)
    with torch.no_grad():  # no backward: nothing to recompute, the plain forward
        torch.testing.assert_close(model(ids), TransformerLM.forward(model, ids))


def test_unbatched_and_extra_leading_dims():
    model = TransformerLM.from_config(tiny())
    ids = torch.randint(0, 97, (2, 3, 8))
    out = model(ids)
    assert out.shape == (2, 3, 8, 97)
    torch.testing.assert_close(model(ids[1, 2]), out[1, 2])


def test_too_long_input_is_a_clear_error():
    model = TransformerLM.from_config(tiny())
    with pytest.raises(LmcliError, match="17 tokens but the model's context_length is 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_bf16_autocast_and_bf16_weights():
    model = TransformerLM.from_config(tiny())
    ids = torch.randint(0, 97, (2, 16))
    ref = model(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(ids)
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), ref, rtol=0.1, atol=0.1)
    logits.float().logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model_bf16 = TransformerLM.from_config(tiny(), dtype=torch.bfloat16)
    assert torch.isfinite(model_bf16(ids).float()).all()


def test_torch_compile_forward_backward():
    model = TransformerLM.from_config(tiny(num_layers=1))
    ids = torch.randint(0, 97, (2, 16))
    # fullgraph: no graph breaks anywhere. Inductor's C++ build does not quote torch's own paths, so under
    # a checkout path with spaces the graph is checked with aot_eager (lmcli refuses to compile there).
    backend = "aot_eager" if " " in TORCH_DIR else "inductor"
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    start = time.perf_counter()
    logits = compiled(ids)
    logits.sum().backward()
    print(f"torch.compile forward+backward of a 1-layer model: {time.perf_counter() - start:.1f} s")
    torch.testing.assert_close(logits, model(ids), rtol=1e-4, atol=1e-4)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


# ---------------------------------------------------------------- config


def test_config_builds_the_model_it_describes():
    cfg = tiny(norm="post", ffn="silu", d_ff=128)
    model = TransformerLM.from_config(cfg)
    assert isinstance(model, TransformerLM) and model.config == cfg
    direct = TransformerLM(97, 16, 32, 2, 4, 128, 10_000.0, norm="post", ffn="silu")
    assert direct.config == cfg


def test_config_from_dict_accepts_a_toml_table():
    cfg = ModelConfig.from_dict({"vocab_size": 500, "d_model": 64, "num_heads": 4, "rope_theta": 10000, "tie_embeddings": True})
    assert cfg.rope_theta == 10_000.0 and isinstance(cfg.rope_theta, float)
    assert cfg.vocab_size == 500 and cfg.tie_embeddings and cfg.context_length == 256


@pytest.mark.parametrize(
    "table, message",
    [
        ({"d_modle": 64}, "unknown key model.d_modle"),
        ({"d_model": "512"}, "model.d_model must be an integer, got str"),
        ({"d_model": True}, "model.d_model must be an integer, got bool"),
        ({"rope_theta": "big"}, "model.rope_theta must be a number"),
        ({"tie_embeddings": 1}, "model.tie_embeddings must be true or false"),
        ({"num_heads": 7}, r"num_heads \(7\) must divide model.d_model \(512\)"),
        ({"num_layers": -1}, "model.num_layers must be positive"),
        ({"d_ff": 0}, "model.d_ff must be positive"),
        ({"norm": "middle"}, "model.norm must be one of pre, post, none"),
        ({"position": "alibi"}, "model.position must be one of rope, none"),
        ({"ffn": "gelu"}, "model.ffn must be one of swiglu, silu"),
        ({"kernels": "cuda"}, "model.kernels must be one of fast, reference"),
        ({"d_model": 48, "num_heads": 16}, "head dimension d_model/num_heads = 3 must be even"),
        ({"rope_theta": 0}, "rope_theta must be positive"),
    ],
)
def test_bad_config_is_a_clear_error(table, message):
    with pytest.raises(LmcliError, match=message):
        ModelConfig.from_dict(table)


def test_odd_head_dim_is_fine_without_rope():
    model = TransformerLM.from_config(ModelConfig.from_dict({**TINY, "d_model": 12, "num_heads": 4, "position": "none"}))
    assert model(torch.randint(0, 97, (1, 5))).shape == (1, 5, 97)


def test_direct_construction_validates():
    with pytest.raises(LmcliError, match="must divide"):
        TransformerLM(97, 16, 30, 1, 4, 48, 10_000.0)
