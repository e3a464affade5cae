"""`lmcli export --format gguf`: the file read back by gguf's own reader, and run by llama.cpp where it is installed.

llama-cpp-python is built from source (no wheel for this platform), which takes longer than the
suite, so it is not a test dependency: the llama.cpp test runs where it is installed (it passed
with llama-cpp-python 0.3.36 built on the 2-core development machine) and skips elsewhere; the
reader test always runs.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from lmcli.generate import generate  # noqa: E402
from lmcli.model import ModelConfig  # noqa: E402
from lmcli.tokenizer import Tokenizer  # noqa: E402
from lmcli.training import load_model_from_checkpoint  # noqa: E402
from tests.interop.conftest import SHAPES, lmcli_checkpoint, sample_text  # noqa: E402


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_the_gguf_file_holds_the_llama_hyperparameters_tokenizer_and_weights(cli, tmp_path, tokenizers_by_size, tied):
    cfg = dataclasses.replace(ModelConfig(**SHAPES[0]), tie_embeddings=tied)
    tokenizer_dir = tokenizers_by_size[cfg.vocab_size]
    checkpoint = lmcli_checkpoint(tmp_path / "model.pt", cfg, tokenizer_dir)
    result = cli("export", str(checkpoint), "--format", "gguf", "--out", str(tmp_path / "model.gguf"))
    assert result.exit_code == 0, result.output
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    fields = {name: field.contents() for name, field in reader.fields.items()}
    assert fields["general.architecture"] == "llama" and fields["tokenizer.ggml.pre"] == "gpt-2"
    assert (fields["llama.embedding_length"], fields["llama.block_count"], fields["llama.attention.head_count"],
            fields["llama.attention.head_count_kv"], fields["llama.context_length"]) == (64, 2, 4, 2, 32)
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    assert len(fields["tokenizer.ggml.tokens"]) == cfg.vocab_size and len(fields["tokenizer.ggml.merges"]) == len(tokenizer.merges)
    state = load_model_from_checkpoint(checkpoint)[0].state_dict()
    tensors = {t.name: t for t in reader.tensors}
    assert ("output.weight" in tensors) == (not tied)
    q = tensors["blk.1.attn_q.weight"]  # lmcli's row order: llama.cpp rotates adjacent pairs too
    assert np.array_equal(np.asarray(q.data).reshape(64, 64), state["layers.1.attn.q_proj.weight"].numpy())


def test_llama_cpp_runs_the_file_and_generates_lmclis_greedy_tokens(cli, tmp_path, tokenizers_by_size):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (built from source: pip install llama-cpp-python)")
    cfg = ModelConfig(**SHAPES[0])
    tokenizer_dir = tokenizers_by_size[cfg.vocab_size]
    checkpoint = lmcli_checkpoint(tmp_path / "model.pt", cfg, tokenizer_dir)
    assert cli("export", str(checkpoint), "--format", "gguf", "--out", str(tmp_path / "model.gguf")).exit_code == 0
    llm = llama_cpp.Llama(str(tmp_path / "model.gguf"), n_ctx=cfg.context_length, logits_all=True, verbose=False)
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    text = sample_text(8, 4)
    prompt = tokenizer.encode(text)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == prompt
    model = load_model_from_checkpoint(checkpoint)[0]
    llm.eval(prompt)
    with torch.no_grad():
        ours = model(torch.tensor([prompt]))[0]
    theirs = torch.tensor(np.array(llm.scores[: len(prompt)]))
    # ggml's CPU matmuls round activations to float16 on the way: ~3e-4 relative, where a wrong RoPE order is O(1)
    assert ((ours - theirs).abs().max() / ours.abs().max()).item() < 2e-3
    n = cfg.context_length - len(prompt)
    greedy = []
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        greedy.append(token)
        if len(greedy) == n:
            break
    assert greedy == list(generate(model, prompt, n, temperature=0.0))
