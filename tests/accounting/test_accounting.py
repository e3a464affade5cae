"""Accounting formulas against the real model (parameter numel, FlopCounterMode), the CS336
GPT-2 XL numbers, hand-computed memory and time, config files, and the ``lmcli accounting`` CLI."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lmcli.accounting import (
    activation_elements,
    adamw_flops,
    count_params,
    forward_flops,
    max_batch_size,
    param_counts,
    training_memory,
    training_time,
)
from lmcli.accounting.presets import PRESETS, resolve_model
from lmcli.configs import CONFIGS_DIR
from lmcli.errors import LmcliError
from lmcli.model import ModelConfig, TransformerLM

TINY = ModelConfig(vocab_size=97, context_length=24, d_model=32, num_layers=2, num_heads=4, d_ff=48)
CONFIGS = [
    TINY,
    dataclasses.replace(TINY, num_layers=3, d_model=48, num_heads=6, d_ff=80, vocab_size=200),
    dataclasses.replace(TINY, norm="post"),
    dataclasses.replace(TINY, norm="none"),
    dataclasses.replace(TINY, position="none"),
    dataclasses.replace(TINY, ffn="silu", d_ff=128),
    dataclasses.replace(TINY, tie_embeddings=True),
    dataclasses.replace(TINY, qk_norm=True, logit_softcap=15.0, ffn="relu2", d_ff=128, num_kv_heads=2),
    dataclasses.replace(TINY, vocab_multiple=64),
    dataclasses.replace(TINY, num_kv_heads=1),
]
IDS = ["tiny", "wider", "post-norm", "no-norm", "nope", "silu", "tied", "recipe", "padded", "multi-query"]


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_count_params_equals_the_real_model(cfg):
    model = TransformerLM.from_config(cfg)
    assert count_params(cfg) == sum(p.numel() for p in model.parameters())  # parameters() counts a tied one once


def measured_flops(cfg: ModelConfig, batch: int, seq_len: int) -> dict[str, int]:
    """FlopCounterMode's count of one forward pass, grouped by module."""
    model = TransformerLM.from_config(cfg)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randint(0, cfg.vocab_size, (batch, seq_len)))
    counts = counter.get_flop_counts()

    def in_layers(module: str, op=None) -> int:
        """FLOPs of ``layers.N.<module>`` summed over N (only ``op``'s when given)."""
        pattern = re.compile(r"TransformerLM\.layers\.\d+\." + re.escape(module))
        return sum(ops.get(op, 0) if op else sum(ops.values()) for name, ops in counts.items() if pattern.fullmatch(name))

    attention, attention_bmm = in_layers("attn"), in_layers("attn", torch.ops.aten.bmm)
    return {
        "total": counter.get_total_flops(),
        "lm_head": sum(counts["TransformerLM.lm_head"].values()),
        "feed_forward": in_layers("ffn"),
        "output_projection": in_layers("attn.output_proj"),
        "qkv_projections": attention - in_layers("attn.output_proj") - attention_bmm,
        "attention_scores+values": attention_bmm,
    }


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("seq_len", [1, 7, 24])
def test_forward_flops_equal_flop_counter(cfg, seq_len):
    expected = forward_flops(cfg, seq_len)
    measured = measured_flops(cfg, batch=1, seq_len=seq_len)
    assert expected["total"] == measured["total"]
    for key in ("lm_head", "feed_forward", "output_projection", "qkv_projections"):
        assert expected[key] == measured[key], key
    assert expected["attention_scores"] + expected["attention_values"] == measured["attention_scores+values"]
    assert expected["attention_scores"] == expected["attention_values"]


def test_forward_flops_scale_with_batch():
    assert measured_flops(TINY, batch=3, seq_len=10)["total"] == 3 * forward_flops(TINY, 10)["total"]


def test_gpt2_xl_matches_cs336():
    xl = PRESETS["gpt2-xl"]
    assert count_params(xl) == 2_127_057_600
    assert forward_flops(xl, 1_024)["total"] == 4_513_336_524_800


def test_param_components_and_tying():
    counts = param_counts(TINY)
    assert counts == {
        "token_embeddings": 97 * 32,
        "attention": 2 * 4 * 32 * 32,
        "feed_forward": 2 * 3 * 32 * 48,
        "norms": 5 * 32,
        "lm_head": 97 * 32,
        "total": 97 * 32 * 2 + 8192 + 9216 + 160,
    }
    tied = param_counts(dataclasses.replace(TINY, tie_embeddings=True))
    assert tied["lm_head"] == 0 and tied["total"] == counts["total"] - 97 * 32


def test_activation_model_by_hand():
    # T=10, d=32, h=4, f=48, V=97, 2 layers. Per layer: norms 2·320; attention 3·320 + 2·4·100 + 320 + 320
    # = 2400; SwiGLU w1, w3, SiLU, product 4·480 + w2 320 = 2240. End: final norm 320, logits + softmax 2·970.
    elements = activation_elements(TINY, 10)
    assert elements == {"norms": 2 * 640 + 320, "attention": 4800, "feed_forward": 4480, "lm_head_and_loss": 1940, "total": 12820}
    no_norm = activation_elements(dataclasses.replace(TINY, norm="none"), 10)
    assert no_norm["norms"] == 0 and no_norm["total"] == 12820 - 1600
    silu = activation_elements(dataclasses.replace(TINY, ffn="silu"), 10)
    assert silu["feed_forward"] == 2 * (2 * 480 + 320)


def test_memory_is_linear_in_batch_and_max_batch_fits():
    P = count_params(TINY)
    one, five = training_memory(TINY, 24, 1, "fp32"), training_memory(TINY, 24, 5, "fp32")
    assert one["fixed_bytes"] == 16 * P and one["optimizer_state"] == 8 * P
    assert five["peak"] - one["peak"] == 4 * one["bytes_per_sequence"]
    assert one["bytes_per_sequence"] == 4 * activation_elements(TINY, 24)["total"]
    assert training_memory(TINY, 24, 1, "bf16")["bytes_per_sequence"] * 2 == one["bytes_per_sequence"]
    budget = 10_000_000
    best = max_batch_size(one, budget)
    assert training_memory(TINY, 24, best, "fp32")["peak"] <= budget < training_memory(TINY, 24, best + 1, "fp32")["peak"]
    assert max_batch_size(one, one["fixed_bytes"] - 1) == 0


def test_training_time_gpt2_xl_cs336_setting():
    xl = PRESETS["gpt2-xl"]
    t = training_time(xl, 1024, batch_size=1024, steps=400_000, hardware="a100", dtype="fp32", mfu=0.5)
    # 3 × 4.513e12 FLOPs × 1024 sequences per step (+ 14 FLOPs per parameter for AdamW), 400K steps,
    # at 0.5 × 19.5 TFLOP/s: about 6,584 days.
    assert t["backward_flops_per_step"] == 2 * t["forward_flops_per_step"] == 2 * 4_513_336_524_800 * 1024
    assert t["adamw_flops_per_step"] == adamw_flops(xl) == 14 * 2_127_057_600
    assert t["seconds"] / 86_400 == pytest.approx(6_583.6, rel=1e-4)
    h100 = training_time(xl, 1024, 1024, 400_000, "h100", "bf16", 0.5)
    assert h100["seconds"] == pytest.approx(t["seconds"] * 19.5 / 989)


def test_bad_inputs_to_the_formulas():
    with pytest.raises(LmcliError, match="between 1 and context_length=24"):
        forward_flops(TINY, 25)
    with pytest.raises(LmcliError, match="must divide"):
        count_params(dataclasses.replace(TINY, num_heads=5))
    with pytest.raises(LmcliError, match="must be positive"):
        forward_flops(dataclasses.replace(TINY, d_model=-32), 4)


# ---------------------------------------------------------------- model specs and config files


def test_presets_and_toml_config(tmp_path):
    assert resolve_model("GPT2-Small").num_layers == 12
    assert resolve_model("tinystories") == ModelConfig()
    path = tmp_path / "train.toml"
    path.write_text('[model]\nvocab_size = 500\nd_model = 64\nnum_heads = 4\nrope_theta = 10000\n\n[training]\nlr = 1e-3\n')
    assert resolve_model(str(path)) == ModelConfig(vocab_size=500, d_model=64, num_heads=4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[model\nd_model = 1", "is not valid TOML"),
        ("[training]\nlr = 1e-3\n", "no \\[model\\] table"),
        ("model = 3\n", "no \\[model\\] table"),
        ("[model]\nlayers = 4\n", "unknown key model.layers"),
        ("[model]\nd_model = 100\nnum_heads = 16\n", "must divide"),
        ("[model]\nd_model = '512'\n", "model.d_model must be an integer"),
    ],
)
def test_bad_config_files(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(LmcliError, match=message):
        resolve_model(str(path))


def test_config_extends_is_followed_like_training_does(tmp_path):
    (tmp_path / "base.toml").write_text("[model]\nvocab_size = 500\nd_model = 64\nnum_heads = 4\n")
    (tmp_path / "child.toml").write_text('extends = "base.toml"\n[model]\nnum_layers = 2\n')
    (tmp_path / "no-model.toml").write_text('extends = "base.toml"\n[training]\nbatch_size = 8\n')
    assert resolve_model(str(tmp_path / "child.toml")) == ModelConfig(vocab_size=500, d_model=64, num_heads=4, num_layers=2)
    assert resolve_model(str(tmp_path / "no-model.toml")) == ModelConfig(vocab_size=500, d_model=64, num_heads=4)


def test_bundled_ablation_configs_resolve():
    configs = CONFIGS_DIR
    assert resolve_model(str(configs / "tinystories-cpu.toml")) == resolve_model(str(configs / "tinystories.toml"))
    assert resolve_model(str(configs / "tinystories-nope.toml")).position == "none"


def test_cli_error_keeps_square_brackets(cli, tmp_path):
    path = tmp_path / "no-model.toml"
    path.write_text("[training]\nbatch_size = 8\n")
    result = cli("accounting", "--model", str(path))
    assert result.exit_code == 1 and "no [model] table" in result.stderr


def test_unknown_model_and_missing_file(tmp_path):
    with pytest.raises(LmcliError, match="unknown model 'gpt5'.*gpt2-small"):
        resolve_model("gpt5")
    with pytest.raises(LmcliError, match="config file not found"):
        resolve_model(str(tmp_path / "missing.toml"))


# ---------------------------------------------------------------- CLI


def test_cli_json_gpt2_xl(cli):
    result = cli("accounting", "--model", "gpt2-xl", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert set(report) >= {"params", "forward_flops", "memory", "training"}
    assert report["params"]["total"] == 2_127_057_600
    assert report["forward_flops"]["total"] == 4_513_336_524_800
    assert report["memory"]["max_micro_batch_size"] == max_batch_size(report["memory"], 80 * 2**30)
    assert report["training"]["days"] == pytest.approx(6_583.6, rel=1e-4)


def test_cli_memory_is_per_micro_batch_and_per_fsdp_shard(cli):
    def memory(*args):
        result = cli("accounting", "--model", "gpt2-xl", "--json", *args)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["memory"]

    whole, micro, sharded = memory(), memory("--micro-batch-size", "4"), memory("--micro-batch-size", "4", "--fsdp", "8")
    assert micro["activations"] * 256 == whole["activations"]  # batch 1,024 as micro-batches of 4
    assert micro["fixed_bytes"] == whole["fixed_bytes"] == 16 * 2_127_057_600  # fp32 weights, grads, m, v
    assert sharded["fixed_bytes"] == 16 * 2_127_057_600 // 8 and sharded["shards"] == 8
    assert sharded["max_micro_batch_size"] > micro["max_micro_batch_size"]  # sharding leaves room for activations
    assert whole["max_micro_batch_size"] == 2  # fp32 GPT-2 XL on one 80 GB device: 2 sequences of 1,024


def test_cli_tables_and_bar_chart(cli):
    result = cli("accounting", "--model", "gpt2-small", "--batch-size", "8", "--hardware", "h100", "--dtype", "bf16")
    assert result.exit_code == 0, result.output
    for text in ("Parameters", "Q/K/V projections", "feed-forward", "LM head", "█", "largest micro-batch in 80.00 GiB", "H100"):
        assert text in result.stdout, text
    assert result.stderr == ""


def test_cli_context_length_and_config_file(cli, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[model]\nvocab_size = 500\ncontext_length = 64\nd_model = 64\nnum_layers = 2\nnum_heads = 4\nd_ff = 176\n")
    result = cli("accounting", "--model", path, "--context-length", "32", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    cfg = ModelConfig(vocab_size=500, context_length=32, d_model=64, num_layers=2, num_heads=4, d_ff=176)
    assert report["forward_flops"] == forward_flops(cfg, 32)
    assert report["model"]["context_length"] == 32 and report["training"]["tokens"] == 400_000 * 1024 * 32


def test_cli_compare(cli):
    result = cli("accounting", "--compare", "gpt2-small,gpt2-medium,gpt2-large,gpt2-xl")
    assert result.exit_code == 0, result.output
    for name in ("gpt2-small", "gpt2-medium", "gpt2-large", "gpt2-xl"):
        assert name in result.stdout
    as_json = json.loads(cli("accounting", "--compare", "gpt2-small,tinystories", "--json").stdout)
    assert [r["model"]["name"] for r in as_json["models"]] == ["gpt2-small", "tinystories"]
    assert as_json["models"][1]["params"]["total"] == count_params(ModelConfig())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "gpt5"], "unknown model 'gpt5'"),
        (["--model", "missing.toml"], "config file not found: missing.toml"),
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--context-length", "-5"], "--context-length must be positive"),
        (["--mfu", "1.5"], "--mfu must be in (0, 1]"),
        (["--memory", "0"], "--memory must be positive"),
        (["--hardware", "tpu"], "unknown --hardware 'tpu'"),
        (["--dtype", "fp8"], "unknown --dtype 'fp8'"),
        (["--model", "gpt2-xl", "--compare", "gpt2-small,gpt2-xl"], "either --model or --compare"),
        (["--compare", "gpt2-small"], "at least two models"),
    ],
)
def test_cli_bad_input_is_one_line_error(cli, args, message):
    result = cli("accounting", *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_cli_help(cli):
    result = cli("accounting", "--help")
    assert result.exit_code == 0
    for option in ("--model", "--compare", "--context-length", "--batch-size", "--memory", "--dtype", "--hardware", "--mfu", "--steps", "--json"):
        assert option in result.stdout
