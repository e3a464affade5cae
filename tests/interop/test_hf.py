"""Export to and import from Hugging Face's Llama format, checked against transformers and tokenizers themselves.

Models are built locally with random weights (no hub): lmcli checkpoints exported and loaded by
``AutoModelForCausalLM`` / ``AutoTokenizer``, and ``LlamaForCausalLM`` directories saved by
transformers imported into lmcli.
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from lmcli.generate import generate  # noqa: E402
from lmcli.interop.export import export_checkpoint  # noqa: E402
from lmcli.interop.hf_tokenizer import read_hf_tokenizer  # noqa: E402
from lmcli.model import ModelConfig  # noqa: E402
from lmcli.tokenizer import Tokenizer  # noqa: E402
from lmcli.tokenizer.files import save_tokenizer, token_to_str  # noqa: E402
from lmcli.tokenizer.reference import train_bpe  # noqa: E402
from lmcli.training import load_model_from_checkpoint  # noqa: E402
from lmcli.workspace import Workspace  # noqa: E402
from tests.interop.conftest import SHAPES, SPECIAL, lmcli_checkpoint, sample_text  # noqa: E402


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / a.abs().max()).item()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"d{s['d_model']}-h{s['num_heads']}-kv{s.get('num_kv_heads') or s['num_heads']}-l{s['num_layers']}"
                         + ("-tied" if s.get("tie_embeddings") else ""))
def test_exported_model_gives_lmcli_logits_and_greedy_tokens_in_transformers(cli, tmp_path, tokenizers_by_size, shape):
    cfg = ModelConfig(**shape)
    checkpoint = lmcli_checkpoint(tmp_path / "model.pt", cfg, tokenizers_by_size[cfg.vocab_size])
    result = cli("export", str(checkpoint), "--out", str(tmp_path / "hf"), "--json")
    assert result.exit_code == 0, result.output
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "LlamaForCausalLM"
    ours = load_model_from_checkpoint(checkpoint)[0]
    ids = torch.randint(cfg.vocab_size, (3, cfg.context_length), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert relative_error(ours(ids), hf(ids).logits) < 1e-5
        assert relative_error(ours(ids[:, :5]), hf(ids[:, :5]).logits) < 1e-5
    prompt = ids[0, :4].tolist()
    n = min(50, cfg.context_length - len(prompt))  # transformers stops at max_position_embeddings
    greedy = hf.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                         pad_token_id=0)[0, len(prompt):].tolist()
    assert list(generate(ours, prompt, n, temperature=0.0)) == greedy


def test_bfloat16_export_and_refused_ablations(cli, tmp_path, tokenizers_by_size):
    cfg = ModelConfig(**SHAPES[0])
    checkpoint = lmcli_checkpoint(tmp_path / "model.pt", cfg, tokenizers_by_size[cfg.vocab_size])
    assert cli("export", str(checkpoint), "--out", str(tmp_path / "bf16"), "--dtype", "bfloat16").exit_code == 0
    assert transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bf16").dtype == torch.bfloat16
    for setting, value in (("norm", "post"), ("norm", "none"), ("position", "none"), ("ffn", "silu"), ("ffn", "relu2"),
                           ("qk_norm", True), ("logit_softcap", 30.0)):
        ablated = lmcli_checkpoint(tmp_path / f"{value}.pt", dataclasses.replace(cfg, **{setting: value}), tokenizers_by_size[300])
        result = cli("export", str(ablated), "--out", str(tmp_path / str(value)))
        assert result.exit_code == 1
        assert result.stderr.startswith(f"error: model.{setting} = {value!r} has no Llama equivalent") and result.stderr.count("\n") == 1
        assert not (tmp_path / str(value)).exists() and not list(tmp_path.glob(f".{value}.*"))


def test_an_existing_directory_needs_force(cli, tmp_path, tokenizers_by_size):
    cfg = ModelConfig(**SHAPES[0])
    checkpoint = lmcli_checkpoint(tmp_path / "model.pt", cfg, tokenizers_by_size[cfg.vocab_size])
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "keep.txt").write_text("mine")
    result = cli("export", str(checkpoint), "--out", str(tmp_path / "hf"))
    assert result.exit_code == 1 and result.stderr == f"error: {tmp_path / 'hf'} already exists (add --force to replace it)\n"
    result = cli("export", str(checkpoint), "--out", str(tmp_path / "hf"), "--force")  # not an export: not replaced
    assert result.exit_code == 1 and "is not an earlier export" in result.stderr and (tmp_path / "hf" / "keep.txt").exists()
    (tmp_path / "hf" / "keep.txt").unlink()
    assert cli("export", str(checkpoint), "--out", str(tmp_path / "hf"), "--force").exit_code == 0  # an empty directory
    (tmp_path / "hf" / "extra.txt").write_text("")
    assert cli("export", str(checkpoint), "--out", str(tmp_path / "hf"), "--force").exit_code == 0  # an earlier export
    assert not (tmp_path / "hf" / "extra.txt").exists() and (tmp_path / "hf" / "model.safetensors").is_file()


# ---------------------------------------------------------------- the tokenizer


def random_unicode(rng: random.Random, n: int) -> str:
    pools = [range(0x20, 0x7F), range(0xA0, 0x250), range(0x370, 0x400), range(0x4E00, 0x4E80), range(0x1F600, 0x1F650)]
    chars = [chr(rng.choice(rng.choice(pools))) if rng.random() < 0.8 else rng.choice(" \n\t'") for _ in range(n)]
    return "".join(chars) + (SPECIAL if rng.random() < 0.5 else "")


def exported_tokenizer(tmp_path: Path, tokenizer_dir: Path, vocab_size: int):
    cfg = ModelConfig(**{**SHAPES[0], "vocab_size": vocab_size})
    checkpoint = lmcli_checkpoint(tmp_path / "model.pt", cfg, tokenizer_dir)
    export_checkpoint(str(checkpoint), tmp_path / "hf", Workspace(tmp_path / "ws"))
    return transformers.AutoTokenizer.from_pretrained(tmp_path / "hf"), Tokenizer.from_dir(tokenizer_dir)


def assert_same_tokenizer(theirs, ours, text: str) -> None:
    ids = ours.encode(text)
    assert theirs(text, add_special_tokens=False)["input_ids"] == ids, text[:80]
    assert theirs.decode(ids) == ours.decode(ids)


def test_autotokenizer_encodes_and_decodes_as_lmcli_on_random_unicode(tmp_path, tokenizers_by_size):
    theirs, ours = exported_tokenizer(tmp_path, tokenizers_by_size[300], 300)
    rng = random.Random(0)
    for _ in range(200):
        assert_same_tokenizer(theirs, ours, random_unicode(rng, rng.randint(0, 200)))
    assert_same_tokenizer(theirs, ours, sample_text(200, 3))
    broken = ours.encode("日本")[:1]  # part of a character: both decode it as U+FFFD
    assert theirs.decode(broken) == ours.decode(broken)


def test_autotokenizer_matches_lmcli_with_gpt2s_vocabulary_on_the_fixtures(tmp_path, fixtures):
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "vocab.json").write_bytes((fixtures / "gpt2_vocab.json").read_bytes())
    (gpt2 / "merges.txt").write_bytes((fixtures / "gpt2_merges.txt").read_bytes())
    theirs, ours = exported_tokenizer(tmp_path, gpt2, 50_257)
    for name in ("tinystories_sample.txt", "german.txt", "address.txt", "special_token_trailing_newlines.txt",
                 "special_token_double_newlines_non_whitespace.txt"):
        assert_same_tokenizer(theirs, ours, (fixtures / name).read_text(encoding="utf-8"))
    assert theirs("a<|endoftext|>b")["input_ids"] == [64, 50256, 65]  # the special token is one id, as GPT-2's


# ---------------------------------------------------------------- import


def transformers_llama(out: Path, tied: bool = False, **overrides) -> Path:
    """A random LlamaForCausalLM saved by transformers, with a byte-level BPE tokenizer saved by tokenizers."""
    vocab, merges = train_bpe(sample_text(), 300, [SPECIAL])
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=32, rms_norm_eps=1e-5,
                                      tie_word_embeddings=tied, **{"num_key_value_heads": 4, **overrides})
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(out)
    bpe = tokenizers.models.BPE(vocab={(SPECIAL if t == SPECIAL.encode() else token_to_str(t)): i for i, t in vocab.items()},
                                merges=[(token_to_str(a), token_to_str(b)) for a, b in merges])
    tokenizer = tokenizers.Tokenizer(bpe)
    tokenizer.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = tokenizers.decoders.ByteLevel()
    tokenizer.add_special_tokens([tokenizers.AddedToken(SPECIAL, special=True, normalized=False)])
    assert tokenizer.token_to_id(SPECIAL) == next(i for i, t in vocab.items() if t == SPECIAL.encode())
    tokenizer.save(str(out / "tokenizer.json"))
    return out


@pytest.mark.parametrize(("tied", "kv_heads"), [(False, 4), (True, 4), (False, 2), (True, 1)],
                         ids=["untied", "tied", "gqa", "tied-mqa"])
def test_import_of_a_transformers_llama_gives_its_logits(cli, tmp_path, monkeypatch, tied, kv_heads):
    monkeypatch.setenv("LMCLI_WORKSPACE", str(tmp_path / "ws"))
    src = transformers_llama(tmp_path / "llama", tied, num_key_value_heads=kv_heads)
    result = cli("import", str(src), "--name", "llama", "--json")
    assert result.exit_code == 0, result.output
    ours, cfg, saved = load_model_from_checkpoint(tmp_path / "ws" / "runs" / "llama" / "latest.pt")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    ids = torch.randint(300, (2, 32), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert relative_error(theirs(ids).logits, ours(ids)) < 1e-5
    text = sample_text(50, 5)
    lmcli_ids = Tokenizer.from_dir(saved["tokenizer"]["dir"]).encode(text)
    assert lmcli_ids == tokenizers.Tokenizer.from_file(str(src / "tokenizer.json")).encode(text).ids

    result = cli("generate", "--checkpoint", "llama", "--prompt", "the cat", "--max-tokens", "5", "--temperature", "0", "--json")
    assert result.exit_code == 0, result.output


def test_import_reads_sharded_weights_and_gpt2_tokenizer_files(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LMCLI_WORKSPACE", str(tmp_path / "ws"))
    src = transformers_llama(tmp_path / "llama")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(src).eval()
    sharded = tmp_path / "sharded"
    theirs.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(list(sharded.glob("*.safetensors"))) > 1
    imported = Tokenizer(*read_hf_tokenizer(src))
    save_tokenizer(sharded, imported.vocab, imported.merges, imported.special_tokens)  # vocab.json + merges.txt only
    result = cli("import", str(sharded), "--name", "sharded")
    assert result.exit_code == 0, result.output
    ours = load_model_from_checkpoint(tmp_path / "ws" / "runs" / "sharded" / "latest.pt")[0]
    ids = torch.randint(300, (2, 32), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert relative_error(theirs(ids).logits, ours(ids)) < 1e-5
    assert Tokenizer.from_dir(tmp_path / "ws" / "runs" / "sharded" / "tokenizer").encode(sample_text(30)) == imported.encode(sample_text(30))


def test_export_import_export_keeps_the_weights_byte_for_byte(cli, tmp_path, monkeypatch, tokenizers_by_size):
    monkeypatch.setenv("LMCLI_WORKSPACE", str(tmp_path / "ws"))
    cfg = ModelConfig(**SHAPES[0])
    checkpoint = lmcli_checkpoint(tmp_path / "model.pt", cfg, tokenizers_by_size[cfg.vocab_size])
    assert cli("export", str(checkpoint), "--out", str(tmp_path / "first")).exit_code == 0
    assert cli("import", str(tmp_path / "first"), "--name", "back").exit_code == 0
    assert cli("export", "back", "--out", str(tmp_path / "second")).exit_code == 0
    assert (tmp_path / "first" / "model.safetensors").read_bytes() == (tmp_path / "second" / "model.safetensors").read_bytes()
    assert (tmp_path / "first" / "tokenizer.json").read_bytes() == (tmp_path / "second" / "tokenizer.json").read_bytes()


def test_train_init_from_an_imported_model_starts_from_its_weights(cli, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    assert cli("import", str(transformers_llama(tmp_path / "llama")), "--name", "base").exit_code == 0
    runs = json.loads(cli("runs", "--json").stdout)
    assert [r["status"] for r in runs["runs"]] == ["imported"]
    resumed = cli("train", "--resume", "base")
    assert resumed.exit_code == 1 and "holds an imported model, not a run to resume" in resumed.stderr
    tokenizer = Tokenizer.from_dir(ws / "runs" / "base" / "tokenizer")
    (ws / "data").mkdir(parents=True)
    for split, seed in (("train", 0), ("valid", 1)):
        np.save(ws / "data" / f"{split}.npy", np.array(tokenizer.encode(sample_text(2000, seed)), dtype=np.uint16))
    config = tmp_path / "finetune.toml"
    config.write_text('[data]\ntokenizer = "runs/base/tokenizer"\n[optimizer]\nlr = 1e-9\nmin_lr = 1e-9\nwarmup_steps = 0\n'
                      "[training]\nbatch_size = 2\nmax_steps = 2\neval_interval = 2\neval_batches = 1\n[system]\ndevice = \"cpu\"\n")
    result = cli("train", "--config", str(config), "--init-from", "base", "--name", "tuned", "--quiet", "--json")
    assert result.exit_code == 0, result.output
    base = torch.load(ws / "runs" / "base" / "latest.pt", weights_only=True)["model"]
    tuned = torch.load(ws / "runs" / "tuned" / "latest.pt", weights_only=True)
    assert tuned["model_config"]["d_model"] == 64  # the imported model, not the config's default [model]
    assert all(torch.allclose(base[k], tuned["model"][k], atol=1e-6) for k in base)  # lr 1e-9: barely moved
    assert tuned["optimizer"]["state"][0]["step"] == 2  # a fresh optimizer, 2 steps


# ---------------------------------------------------------------- bad input


def bad_import(cli, src: Path, fragment: str, ws: Path) -> None:
    result = cli("import", str(src), "--name", "bad")
    assert result.exit_code == 1, result.output
    assert result.stderr.startswith("error:") and fragment in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not (ws / "runs" / "bad").exists()


def test_bad_hugging_face_directories_are_one_line_and_write_nothing(cli, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    src = transformers_llama(tmp_path / "llama")
    weights, config = (src / "model.safetensors").read_bytes(), json.loads((src / "config.json").read_text())

    (src / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    bad_import(cli, src, "is not a complete safetensors file", ws)
    (src / "model.safetensors").unlink()
    bad_import(cli, src, "has no weights", ws)
    (src / "model.safetensors").write_bytes(weights)

    for changes, fragment in (({"model_type": "gpt2"}, "not a Llama"), ({"num_key_value_heads": 3}, "num_key_value_heads (3) must divide num_attention_heads (4)"),
                              ({"attention_bias": True}, "attention biases"), ({"hidden_size": 32, "head_dim": 8}, "config.json implies shape"),
                              ({"vocab_size": 310}, "config.json implies shape (310, "),
                              ({"max_position_embeddings": 10**12}, "needs about"), ({"hidden_size": 64.5}, "hidden_size must be an integer"),
                              ({"rope_theta": float("nan"), "rope_parameters": None}, "rope_theta must be a finite number"),
                              ({"rms_norm_eps": 1e-6}, "rms_norm_eps 1e-06"), ({"vocab_size": 10**12}, "needs about")):
        (src / "config.json").write_text(json.dumps({**config, **changes}))
        bad_import(cli, src, fragment, ws)
    (src / "config.json").write_text(json.dumps(config))

    tokenizer_json = json.loads((src / "tokenizer.json").read_text())
    smaller = {**tokenizer_json, "model": {**tokenizer_json["model"], "vocab": dict(list(tokenizer_json["model"]["vocab"].items())[:-5]),
                                           "merges": tokenizer_json["model"]["merges"][:-5]}}
    (src / "tokenizer.json").write_text(json.dumps(smaller))
    bad_import(cli, src, "the tokenizer has 295 tokens but the model's vocab_size is 300", ws)
    (src / "tokenizer.json").write_text(json.dumps({**tokenizer_json, "model": {**tokenizer_json["model"], "type": "WordPiece"}}))
    bad_import(cli, src, "holds a WordPiece model, not byte-level BPE", ws)

    bad_import(cli, Path("meta-llama/Llama-3.2-1B"), "download it first", ws)


def test_imported_tensors_are_checked_before_anything_is_built(cli, tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    ws = tmp_path / "ws"
    monkeypatch.setenv("LMCLI_WORKSPACE", str(ws))
    src = transformers_llama(tmp_path / "llama")
    weights = load_file(str(src / "model.safetensors"))
    q = "model.layers.0.self_attn.q_proj.weight"
    for change, fragment in ((weights[q][:-3], f"tensor {q} is shape"), (torch.tensor(1.0), f"tensor {q} is a scalar"),
                             (weights[q] > 0, f"tensor {q} holds bool values"), (weights[q].to(torch.int32), "holds int32 values"),
                             (weights[q].clone().fill_(float("nan")), f"tensor {q} holds NaN or infinite values")):
        save_file({**weights, q: change}, str(src / "model.safetensors"))
        bad_import(cli, src, f"{src / 'model.safetensors'}: {fragment}" if "tensor" in fragment else fragment, ws)
    save_file(weights, str(src / "model.safetensors"))

    tokenizer_json = json.loads((src / "tokenizer.json").read_text())
    model = tokenizer_json["model"]
    last = max(model["vocab"], key=model["vocab"].get)
    beyond = {**model, "vocab": {**model["vocab"], last: 10**6}}
    for content, fragment in (({**tokenizer_json, "model": beyond}, "id 1000000"),
                              ({**tokenizer_json, "pre_tokenizer": ["ByteLevel"]}, "pre_tokenizer"),
                              ({**tokenizer_json, "pre_tokenizer": {"type": "Sequence", "pretokenizers": "ByteLevel"}}, "pre_tokenizer"),
                              ({**tokenizer_json, "added_tokens": {"id": 1}}, "added_tokens")):
        (src / "tokenizer.json").write_text(json.dumps(content))
        bad_import(cli, src, fragment, ws)
