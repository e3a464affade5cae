"""Generation speed on CPU: lmcli with and without its KV cache, against Hugging Face transformers.

The model is the CS336 TinyStories shape (ModelConfig defaults: vocab 10,000, context 256,
d_model 512, 4 layers, 16 heads, d_ff 1,344), randomly initialized; transformers gets the same
weights as a LlamaConfig model (the same architecture: pre-norm RMSNorm, RoPE, SwiGLU, no bias).

RoPE layouts differ: lmcli rotates interleaved pairs (x0, x1), (x2, x3), ...; Llama rotates the
two halves of each head (x_i, x_{i + d/2}). Reordering the rows of q_proj and k_proj within each
head (even rows first, then odd ones) makes Llama compute exactly lmcli's attention scores; the
logits are compared before any timing.

All three decode greedily from the same prompt for the same number of new tokens (no early
stop). Usage: python benchmarks/bench_generate.py [--new-tokens 200] [--prompt-tokens 16] [--threads N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from lmcli.generate import generate
from lmcli.model import ModelConfig, TransformerLM


def llama_from_lmcli(model: TransformerLM):
    """A transformers LlamaForCausalLM computing the same function as ``model``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    hf = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_ff, num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads, num_key_value_heads=c.num_heads, max_position_embeddings=c.context_length,
        rms_norm_eps=1e-5, rope_theta=c.rope_theta, tie_word_embeddings=False, attention_bias=False, mlp_bias=False,
    )).eval()
    # Per head: interleaved pair k = rows (2k, 2k+1) -> rows (k, k + d/2) of rotate_half.
    d_k = c.head_dim
    per_head = torch.cat((torch.arange(0, d_k, 2), torch.arange(1, d_k, 2)))
    rows = (torch.arange(c.num_heads)[:, None] * d_k + per_head).flatten()
    state = {"model.embed_tokens.weight": model.token_embeddings.weight, "model.norm.weight": model.ln_final.weight,
             "lm_head.weight": model.lm_head.weight}
    for i, block in enumerate(model.layers):
        p = f"model.layers.{i}."
        state |= {
            p + "input_layernorm.weight": block.ln1.weight,
            p + "post_attention_layernorm.weight": block.ln2.weight,
            p + "self_attn.q_proj.weight": block.attn.q_proj.weight[rows],
            p + "self_attn.k_proj.weight": block.attn.k_proj.weight[rows],
            p + "self_attn.v_proj.weight": block.attn.v_proj.weight,
            p + "self_attn.o_proj.weight": block.attn.output_proj.weight,
            p + "mlp.gate_proj.weight": block.ffn.w1.weight,
            p + "mlp.up_proj.weight": block.ffn.w3.weight,
            p + "mlp.down_proj.weight": block.ffn.w2.weight,
        }
    hf.load_state_dict({k: v.detach().clone() for k, v in state.items()}, strict=True)
    return hf


def max_logit_difference(model: TransformerLM, hf, prompt: torch.Tensor) -> float:
    with torch.inference_mode():
        return (model(prompt) - hf(prompt).logits).abs().max().item()


def time_interleaved(runs: dict, repeats: int) -> dict[str, tuple[float, list[int]]]:
    """Best wall time of each run over ``repeats`` rounds (after a warm-up), and its output. The runs
    take turns within each round, so a change in machine load affects them alike."""
    outputs = {name: fn() for name, fn in runs.items()}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: (best[name], outputs[name]) for name in runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds of the cached implementations (best time)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's choice]")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = TransformerLM.from_config(ModelConfig()).eval()
    hf = llama_from_lmcli(model)
    prompt = torch.randint(0, model.config.vocab_size, (1, args.prompt_tokens))
    diff = max_logit_difference(model, hf, prompt)
    if diff > 1e-4:
        print(f"logits differ from transformers by {diff:.2e} (> 1e-4): the weight mapping is wrong", file=sys.stderr)
        return 1

    n = args.new_tokens
    ids = prompt[0].tolist()

    def lmcli_run(use_cache: bool):
        return lambda: list(generate(model, ids, n, temperature=0.0, use_cache=use_cache))

    def hf_run():
        with torch.inference_mode():
            out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, eos_token_id=None, pad_token_id=0)
        return out[0, prompt.shape[1]:].tolist()

    timed = time_interleaved({"lmcli": lmcli_run(True), "transformers": hf_run}, args.repeats)
    (cached_s, cached), (hf_s, hf_ids) = timed["lmcli"], timed["transformers"]
    start = time.perf_counter()  # slow: one timed run, no warm-up needed (each step is a full forward)
    uncached = lmcli_run(False)()
    uncached_s = time.perf_counter() - start

    rates = {"lmcli (KV cache)": n / cached_s, "lmcli (no cache)": n / uncached_s, "transformers generate": n / hf_s}
    result = {
        "model": "ModelConfig() defaults, random init", "device": "cpu", "threads": torch.get_num_threads(),
        "prompt_tokens": args.prompt_tokens, "new_tokens": n, "max_logit_diff_vs_transformers": diff,
        "same_greedy_tokens": {"cache_vs_no_cache": cached == uncached, "lmcli_vs_transformers": cached == hf_ids},
        "tokens_per_s": rates,
        "ratio_cache_vs_transformers": rates["lmcli (KV cache)"] / rates["transformers generate"],
        "ratio_cache_vs_no_cache": rates["lmcli (KV cache)"] / rates["lmcli (no cache)"],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"greedy generation, {args.prompt_tokens}-token prompt + {n} new tokens, CPU ({torch.get_num_threads()} threads); "
          f"max |logit diff| vs transformers {diff:.1e}")
    print(f"{'implementation':<24}{'tokens/s':>10}{'vs transformers':>18}")
    for name, rate in rates.items():
        print(f"{name:<24}{rate:>10.1f}{rate / rates['transformers generate']:>17.2f}x")
    print(f"same greedy tokens: cache vs no cache {cached == uncached}, lmcli vs transformers {cached == hf_ids}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
