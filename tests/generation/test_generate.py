"""Tests for generation: sampling rules, the KV cache, the context window, batching, text streaming, the CLI."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lmcli.errors import LmcliError
from lmcli.generate import Sampling, generate, generate_batch, nucleus, sample_next
from lmcli.generation.text_stream import TextStream
from lmcli.model import ModelConfig, TransformerLM
from lmcli.model.kv_cache import KVCache
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.files import save_tokenizer, tokenizer_fingerprint
from lmcli.training.checkpoint import save_checkpoint
from lmcli.training.optim import AdamW

EOS = "<|endoftext|>"
# 256 bytes + 4 merges + <|endoftext|> = 261 tokens
MERGES = [(b"o", b"n"), (b"c", b"e"), (b" ", b"on"), (b"\xc3", b"\xa9")]
TINY = dict(context_length=12, d_model=32, num_layers=2, num_heads=4, d_ff=64)


def tiny_tokenizer() -> Tokenizer:
    vocab = {i: bytes([i]) for i in range(256)}
    for a, b in MERGES:
        vocab[len(vocab)] = a + b
    return Tokenizer(vocab, MERGES, [EOS])


def tiny_model(seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return TransformerLM.from_config(ModelConfig(**{"vocab_size": 261, **TINY, **overrides})).eval()


def greedy_reference(model, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding by full forward passes over the documented window: when the tokens outgrow
    the context, keep the last context - context // 4 and go on from position 0."""
    context = model.context_length
    tokens, start = list(prompt), 0
    with torch.no_grad():
        for _ in range(n):
            if len(tokens) - start > context:
                start = len(tokens) - (context - context // 4)
            tokens.append(int(model(torch.tensor(tokens[start:]))[-1].argmax()))
    return tokens[len(prompt):]


# -- sampling rules ---------------------------------------------------------------------------


def test_temperature_zero_is_argmax():
    logits = torch.randn(5, 50)
    assert torch.equal(sample_next(logits, 0.0), logits.argmax(-1))


def test_top_p_one_keeps_every_token():
    probs = torch.softmax(torch.randn(3, 40), -1)
    assert torch.equal(nucleus(probs, 1.0), probs)


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    assert torch.allclose(nucleus(probs, 0.6), torch.tensor([[0.0, 1.0, 0.0]]))  # 0.6 reaches 0.6
    assert torch.allclose(nucleus(probs, 0.7), torch.tensor([[0.0, 2 / 3, 1 / 3]]))
    assert torch.allclose(nucleus(probs, 0.95), torch.tensor([[0.1, 0.6, 0.3]]))


def test_top_p_ties_break_by_token_id():
    probs = torch.full((1, 4), 0.25)
    assert torch.equal(nucleus(probs, 0.3), torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
    assert torch.equal(nucleus(probs, 1e-6), torch.tensor([[1.0, 0.0, 0.0, 0.0]]))


def test_tiny_top_p_is_greedy():
    logits = torch.randn(64, 100)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, 1.0, top_p=1e-9, generator=gen), logits.argmax(-1))


def test_top_p_samples_only_from_the_nucleus():
    logits = torch.tensor([[3.0, 2.9, 0.0, -1.0, -2.0]]).repeat(500, 1)
    drawn = sample_next(logits, 1.0, top_p=0.8, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 1}


def test_temperature_sharpens_and_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]]).repeat(4000, 1)
    gen = torch.Generator().manual_seed(0)
    share = {t: (sample_next(logits, t, generator=gen) == 0).float().mean().item() for t in (0.25, 1.0, 4.0)}
    assert share[0.25] > 0.95 > share[1.0] > share[4.0] > 0.33


# -- generation: cache, window, seed, eos, batch ------------------------------------------------


def test_greedy_with_cache_equals_without_and_reference():
    model = tiny_model()
    prompt = [5, 9, 200, 17]
    cached = list(generate(model, prompt, 6, temperature=0))
    assert cached == list(generate(model, prompt, 6, temperature=0, use_cache=False))
    assert cached == greedy_reference(model, prompt, 6)


@pytest.mark.parametrize("norm,position,ffn", [("post", "rope", "silu"), ("none", "none", "swiglu")])
def test_cache_matches_for_ablations(norm, position, ffn):
    model = tiny_model(1, norm=norm, position=position, ffn=ffn)
    assert list(generate(model, [3, 4], 8, temperature=0)) == greedy_reference(model, [3, 4], 8)


@pytest.mark.parametrize("kv_heads", [0, 2, 1], ids=["multi-head", "grouped-query", "multi-query"])
def test_cached_logits_equal_full_forward(kv_heads):
    model = tiny_model(num_kv_heads=kv_heads)
    ids = torch.randint(0, 261, (2, 10))
    cache = KVCache.for_model(model, 2)
    group = model.config.num_heads // (kv_heads or model.config.num_heads)
    assert cache.layers[0].keys.numel() * group == 2 * model.config.context_length * model.config.d_model  # the smaller cache
    with torch.no_grad():
        steps = [model(ids[:, :4], kv_cache=cache)] + [model(ids[:, i : i + 1], kv_cache=cache) for i in range(4, 10)]
        assert torch.allclose(torch.cat(steps, dim=1), model(ids), atol=1e-5)
        with pytest.raises(LmcliError, match="context_length"):
            model(ids[:, :3], kv_cache=cache)  # 10 cached + 3 > 12


def test_generation_continues_past_the_context():
    model = tiny_model()
    prompt = list(range(100, 110))  # 10 of 12 positions
    out = list(generate(model, prompt, 40, temperature=0))
    assert len(out) == 40
    assert out == greedy_reference(model, prompt, 40)
    assert out == list(generate(model, prompt, 40, temperature=0, use_cache=False))


def test_prompt_filling_the_context_works():
    model = tiny_model()
    prompt = list(range(12))
    assert list(generate(model, prompt, 5, temperature=0)) == greedy_reference(model, prompt, 5)


def test_seed_makes_sampling_reproducible():
    model = tiny_model()

    def draw(seed):
        return list(generate(model, [1, 2], 20, temperature=1.0, generator=torch.Generator().manual_seed(seed)))

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_stops_at_eos_and_yields_it_last():
    model = tiny_model()
    free = list(generate(model, [1, 2], 10, temperature=0))
    eos = free[3]
    stop = free.index(eos)
    assert list(generate(model, [1, 2], 10, temperature=0, eos_id=eos)) == free[: stop + 1]


def test_caller_keeps_autograd_between_steps():
    steps = generate(tiny_model(), [1, 2], 3, temperature=0)
    next(steps)
    assert not torch.is_inference_mode_enabled() and torch.is_grad_enabled()
    assert list(steps)


def test_num_tokens_restricts_the_vocabulary():
    model = tiny_model()
    sampling = Sampling(temperature=2.0, num_tokens=5, generator=torch.Generator().manual_seed(0))
    drawn = [ids[0] for ids in generate_batch(model, [1], 60, sampling)]
    assert set(drawn) <= set(range(5))


def test_batch_is_one_forward_per_step():
    model = tiny_model()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    steps = list(generate_batch(model, [1, 2, 3], 5, Sampling(temperature=0), num_samples=4))
    assert len(calls) == 5
    single = greedy_reference(model, [1, 2, 3], 5)
    assert [list(s) for s in zip(*steps)] == [single] * 4


def test_batch_samples_differ_and_end_separately():
    model = tiny_model()

    def run(eos_id=None):
        sampling = Sampling(temperature=1.5, generator=torch.Generator().manual_seed(3))
        return list(generate_batch(model, [7], 12, sampling, eos_id=eos_id, num_samples=3))

    free = run()
    samples = [list(s) for s in zip(*free)]
    assert len({tuple(s) for s in samples}) == 3
    eos = samples[0][1]
    stopped = [list(s) for s in zip(*run(eos))]
    for sample, original in zip(stopped, samples):
        if eos in original:
            end = original.index(eos) + 1
            assert sample[:end] == original[:end] and all(t is None for t in sample[end:])
        else:
            assert sample == original


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(top_p=0.0), "top-p"),
        (dict(top_p=1.5), "top-p"),
        (dict(prompt_ids=list(range(13))), "context"),
        (dict(prompt_ids=[]), "empty"),
        (dict(prompt_ids=[261]), "vocabulary"),
    ],
)
def test_bad_settings(kwargs, message):
    args = dict(prompt_ids=[1, 2], max_new_tokens=3) | kwargs
    with pytest.raises(LmcliError, match=message):
        list(generate(tiny_model(), **args))


# -- text streaming ---------------------------------------------------------------------------


def test_text_stream_holds_back_partial_utf8():
    tok = tiny_tokenizer()
    stream = TextStream(tok.vocab)
    e_acute = "é".encode()
    assert stream.push(ord("n")) == "n"
    assert stream.push(e_acute[0]) == ""  # half a character: nothing yet
    assert stream.push(e_acute[1]) == "é"
    assert stream.push(0xFF) + stream.flush() == "\ufffd"


# -- the CLI ----------------------------------------------------------------------------------


def save_run(workspace, model, tokenizer, name="tiny", filename="best.pt"):
    tokenizer_dir = workspace / "tokenizer"
    save_tokenizer(tokenizer_dir, tokenizer.vocab, MERGES, [EOS])
    path = workspace / "runs" / name / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, AdamW(model.parameters()), 1, path, extra={
        "model_config": dataclasses.asdict(model.config),
        "tokenizer": {"dir": str(tokenizer_dir), "fingerprint": tokenizer_fingerprint(tokenizer_dir)},
    })
    return path


@pytest.fixture
def run_dir(tmp_path):
    """A workspace run holding a tiny random model and its tokenizer (the cli fixture's workspace)."""
    return save_run(tmp_path / "workspace", tiny_model(), tiny_tokenizer()).parent


def test_cli_streams_completion_and_summary(cli, run_dir):
    result = cli("generate", "--prompt", "once", "--max-tokens", "5", "--seed", "1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("once")
    assert "5 tokens" in result.stderr and "tokens/s" in result.stderr


def test_cli_json_matches_api(cli, run_dir):
    result = cli("generate", "--prompt", "once", "--max-tokens", "6", "--temperature", "0", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    tok = tiny_tokenizer()
    assert out["prompt"] == "once" and out["prompt_ids"] == tok.encode("once")
    expected = greedy_reference(tiny_model(), out["prompt_ids"], 6)
    eos = tok.special_ids[EOS]
    end = expected.index(eos) if eos in expected else 6
    assert out["token_ids"] == expected[:end]
    assert out["completion"] == tok.decode(expected[:end])
    assert out["stop_reason"] == ("eos" if eos in expected else "max_tokens")
    assert out["samples"][0]["token_ids"] == out["token_ids"] and out["tokens_per_s"] > 0


def test_cli_seed_reproducible_and_samples(cli, run_dir):
    args = ("generate", "-p", "ce", "-n", "8", "--seed", "4", "--num-samples", "3", "--json")
    first, second = (json.loads(cli(*args).stdout) for _ in range(2))
    assert first["samples"] == second["samples"] and len(first["samples"]) == 3


def test_cli_stops_at_endoftext(cli, tmp_path):
    model, tok = tiny_model(), tiny_tokenizer()
    with torch.no_grad():  # a model whose last layer always favours <|endoftext|>
        model.lm_head.weight.zero_()
        model.lm_head.weight[tok.special_ids[EOS]] = 1.0
        model.ln_final.weight.zero_()
        model.ln_final.weight[0] = 1.0
        model.token_embeddings.weight[:, 0] = 100.0
    save_run(tmp_path / "workspace", model, tok)
    result = cli("generate", "-p", "on", "-t", "0", "--json")
    out = json.loads(result.stdout)
    assert (out["stop_reason"], out["token_ids"], out["completion"], out["tokens"]) == ("eos", [], "", 1)


def test_cli_prompt_from_stdin_and_run_name(cli, run_dir):
    result = cli("generate", "--prompt", "-", "--checkpoint", "tiny", "-n", "2", "--json", input="once upon\n")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["prompt"] == "once upon"


def test_cli_empty_prompt_starts_a_document(cli, run_dir):
    out = json.loads(cli("generate", "-p", "", "-n", "2", "--json").stdout)
    assert out["prompt_ids"] == [tiny_tokenizer().special_ids[EOS]]


def test_cli_default_checkpoint_is_newest_run(cli, tmp_path):
    import os

    old = save_run(tmp_path / "workspace", tiny_model(0), tiny_tokenizer(), "old", "latest.pt")
    new = save_run(tmp_path / "workspace", tiny_model(1), tiny_tokenizer(), "new", "latest.pt")
    os.utime(old, (1, 1))
    assert json.loads(cli("generate", "-p", "a", "-n", "1", "--json").stdout)["checkpoint"] == str(new)


def assert_one_line_error(result, fragment):
    assert result.exit_code == 1
    assert result.stderr.startswith("error:") and fragment in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1


def test_cli_missing_checkpoint(cli, tmp_path):
    assert_one_line_error(cli("generate", "-p", "a", "--checkpoint", str(tmp_path / "nope.pt")), "does not exist")
    assert_one_line_error(cli("generate", "-p", "a"), "no checkpoint given")


def test_cli_run_without_checkpoint(cli, tmp_path):
    (tmp_path / "workspace" / "runs" / "empty").mkdir(parents=True)
    assert_one_line_error(cli("generate", "-p", "a", "--checkpoint", "empty"), "holds no checkpoint")


def test_cli_bad_settings_fail_before_any_output(cli, run_dir):
    result = cli("generate", "-p", "hello", "--max-tokens", "-1")
    assert_one_line_error(result, "new tokens must be >= 0")
    assert result.stdout == ""


def test_cli_not_an_lmcli_checkpoint(cli, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    assert_one_line_error(cli("generate", "-p", "a", "--checkpoint", str(junk)), "not an lmcli checkpoint")


@pytest.mark.parametrize("model_vocab", [200, 300])
def test_cli_tokenizer_size_differs_from_model(cli, tmp_path, model_vocab):
    save_run(tmp_path / "workspace", tiny_model(vocab_size=model_vocab), tiny_tokenizer())
    assert_one_line_error(cli("generate", "-p", "a"), f"261 tokens but the model's vocabulary is {model_vocab}")


@pytest.mark.parametrize(
    "args,fragment",
    [
        (("--temperature", "-1"), "temperature must be >= 0"),
        (("--top-p", "0"), "top-p must be in (0, 1]"),
        (("--top-p", "1.01"), "top-p must be in (0, 1]"),
        (("--prompt", "x" * 13), "more than the model's context of 12"),
    ],
)
def test_cli_bad_settings(cli, run_dir, args, fragment):
    assert_one_line_error(cli("generate", "-p", "a", *args), fragment)


@pytest.mark.parametrize("temperature", ["0", "1"])
def test_a_model_with_nan_logits_is_one_error_not_a_sample(cli, tmp_path, temperature):
    model = tiny_model()
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    save_run(tmp_path / "workspace", model, tiny_tokenizer())
    result = cli("generate", "--prompt", "once", "--max-tokens", "3", "--temperature", temperature)
    assert_one_line_error(result, "the model's logits are NaN or infinite")


def test_for_inference_keeps_a_cpu_model_in_float32():
    """bf16 is for GPUs only: on the CPU, generation runs the float32 model (identical greedy output)."""
    from lmcli.generation.decoding import for_inference

    model = TransformerLM.from_config(ModelConfig(vocab_size=50, context_length=8, d_model=16, num_layers=1, num_heads=2, d_ff=32))
    model.train()
    prepared = for_inference(model)
    assert not prepared.training and {p.dtype for p in prepared.parameters()} == {torch.float32}


def test_the_compiled_static_cache_step_gives_the_same_tokens_and_compiles_once(monkeypatch):
    """What GPUs run (a static cache, the one-token step compiled), here with the aot_eager backend:
    the same greedy tokens as the plain cache, past the context length too, from one graph."""
    from torch._dynamo.utils import counters

    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **options: compile_(fn, **{**options, "backend": "aot_eager"}))
    torch.manual_seed(0)
    model = TransformerLM.from_config(ModelConfig(vocab_size=50, context_length=16, d_model=32, num_layers=2, num_heads=4,
                                                  d_ff=64)).eval()
    torch._dynamo.reset()
    counters.clear()
    greedy = Sampling(temperature=0)
    plain = list(generate_batch(model, [1, 2, 3], 40, greedy, num_samples=3, compiled=False))
    static = list(generate_batch(model, [1, 2, 3], 40, greedy, num_samples=3, compiled=True))
    assert static == plain and len(plain) == 40  # 40 tokens through a 16-token context: windows moved on twice
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_a_static_cache_gives_the_logits_of_the_dynamic_one():
    torch.manual_seed(0)
    model = TransformerLM.from_config(ModelConfig(vocab_size=50, context_length=16, d_model=32, num_layers=2, num_heads=4,
                                                  d_ff=64)).eval()
    ids = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        for static in (False, True):
            cache = KVCache.for_model(model, 2, static=static)
            prefill = model(ids[:, :6], kv_cache=cache)
            steps = [model(ids[:, i : i + 1], kv_cache=cache) for i in range(6, 10)]
            if not static:
                expected = (prefill, steps)
        torch.testing.assert_close(prefill, expected[0])
        for got, want in zip(steps, expected[1]):
            torch.testing.assert_close(got, want)
        torch.testing.assert_close(torch.cat([prefill, *steps], dim=1), model(ids))
