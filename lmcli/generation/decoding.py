"""Autoregressive text generation: sample one token, append it, repeat.

At each step the model gives logits for the next token, and ``lmcli.generation.sampling``
turns them into a token (temperature, top-p). A KV cache (``lmcli.model.kv_cache``) makes each
step cost one token of computation: the prompt is run once (prefill), then only the newest
token goes through the model.

Past the context length the model keeps going on a window of the latest tokens. When the
window would exceed ``context_length``, it is moved forward to keep the last
``context_length - context_length // 4`` tokens, which are re-run at positions 0.. (RoPE needs
positions below the context length; re-prefilling gives every cached key its new position).
Moving by a quarter of the context at once means one re-prefill per ``context_length // 4``
tokens instead of one per token; every token still sees at least 3/4 of a context. The path
without a cache applies the same window, so both produce identical greedy output.

``generate`` is the CS336 interface (one prompt, yields token ids); ``generate_batch`` draws
several samples of one prompt together, one forward pass per step for all of them.
``for_inference`` puts a model in the dtype generation runs it in: bf16 on GPUs (half the
bytes each token reads; the KV cache follows the weights' dtype), float32 elsewhere, so CPU
output stays exactly the float32 model's.

On GPUs the one-token step is compiled (``compiled``: by default on CUDA only): a static KV
cache (``KVCache(static=True)``: fixed shapes, the position a tensor) lets one compiled graph
serve every token, and ``mode="reduce-overhead"`` replays it as a CUDA graph, one launch per
token instead of one per kernel. The prompt (and each re-prefill) runs uncompiled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from lmcli.accounting.memory import inference_memory, kv_cache_memory
from lmcli.errors import LmcliError
from lmcli.generation.sampling import Sampling
from lmcli.memory_budget import available_bytes, require_memory
from lmcli.model.kv_cache import KVCache


def for_inference(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode, in bf16 on a GPU that supports it (unchanged elsewhere)."""
    device = model.lm_head.weight.device
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        model = model.to(torch.bfloat16)
    return model.eval()


def generate(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    compiled: bool | None = None,
) -> Iterator[int]:
    """Yield up to ``max_new_tokens`` token ids continuing ``prompt_ids``; ``eos_id`` is yielded last when drawn.

    ``generator`` (a torch.Generator on the model's device) makes sampling reproducible."""
    sampling = Sampling(temperature, top_p, generator)
    return (step[0] for step in generate_batch(model, prompt_ids, max_new_tokens, sampling, eos_id, 1, use_cache, compiled))


def generate_batch(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    sampling: Sampling = Sampling(),
    eos_id: int | None = None,
    num_samples: int = 1,
    use_cache: bool = True,
    compiled: bool | None = None,
) -> Iterator[list[int | None]]:
    """Draw ``num_samples`` continuations of one prompt at once; each step yields one new id per
    sample, or None for a sample that already ended with ``eos_id``. Bad settings raise LmcliError here,
    before the first step."""
    prompt_ids = [int(i) for i in prompt_ids]
    sampling.check()
    check_request(model, prompt_ids, num_samples, max_new_tokens)
    if compiled is None:
        compiled = model.lm_head.weight.device.type == "cuda"
    return decode_steps(model, prompt_ids, max_new_tokens, sampling, eos_id, num_samples, use_cache, compiled and use_cache)


@torch.inference_mode()  # on a generator function, torch enters and leaves it around every step
def decode_steps(
    model: torch.nn.Module, prompt_ids: list[int], max_new_tokens: int, sampling: Sampling, eos_id: int | None,
    num_samples: int, use_cache: bool, compiled: bool = False,
) -> Iterator[list[int | None]]:
    """The decoding loop of ``generate_batch`` (settings already checked).

    Only the window the model sees is kept (``context_length + 1`` tokens per sample), so memory
    does not grow with ``max_new_tokens``: the ids are yielded, not stored."""
    context = model.context_length
    keep = context - context // 4
    device = model.lm_head.weight.device
    window = torch.empty(num_samples, context + 1, dtype=torch.long, device=device)
    window[:, : len(prompt_ids)] = torch.tensor(prompt_ids, dtype=torch.long, device=device)
    cache = KVCache.for_model(model, num_samples, static=compiled) if use_cache else None
    one_token = compiled_step(model) if compiled else None
    done = [False] * num_samples
    length = len(prompt_ids)  # the model sees window[:, :length]
    for _ in range(max_new_tokens):
        if length > context:  # move the window on: keep the latest tokens, at positions 0..
            window[:, :keep] = window[:, length - keep : length].clone()
            length = keep
            if cache is not None:
                cache.reset()
        if cache is None:
            logits = model(window[:, :length])[:, -1]
        elif one_token is not None and length - cache.length == 1:
            logits = one_token(window[:, cache.length : length], cache)[:, -1]
            cache.advance(1)
        else:
            logits = model(window[:, cache.length : length], kv_cache=cache)[:, -1]
        next_ids = sampling.next_ids(logits)
        window[:, length] = next_ids
        length += 1
        ids = next_ids.tolist()
        yield [None if finished else i for i, finished in zip(ids, done)]
        done = [finished or i == eos_id for i, finished in zip(ids, done)]
        if all(done):
            return


def compiled_step(model: torch.nn.Module):
    """``model.cached_logits`` compiled for one token per sequence and a static cache (CUDA graphs on GPUs)."""
    on_cuda = model.lm_head.weight.device.type == "cuda"
    return torch.compile(model.cached_logits, dynamic=False, **({"mode": "reduce-overhead"} if on_cuda else {}))


def check_request(model: torch.nn.Module, prompt_ids: list[int], num_samples: int, max_new_tokens: int) -> None:
    """Raise LmcliError for a prompt or sizes no generation can run with, or samples that do not fit in memory."""
    if max_new_tokens < 0:
        raise LmcliError(f"the number of new tokens must be >= 0, got {max_new_tokens}")
    if num_samples < 1:
        raise LmcliError(f"the number of samples must be >= 1, got {num_samples}")
    if not prompt_ids:
        raise LmcliError("the prompt is empty: generation needs at least one token to start from")
    if len(prompt_ids) > model.context_length:
        raise LmcliError(f"the prompt has {len(prompt_ids):,} tokens, more than the model's context of {model.context_length:,}")
    vocab_size = model.config.vocab_size
    if not all(0 <= i < vocab_size for i in prompt_ids):
        raise LmcliError(f"the prompt has token ids outside the model's vocabulary 0..{vocab_size - 1}")
    per_sample = generation_memory(model.config, 1) - generation_memory(model.config, 0)
    fits = max(0, available_bytes(model.lm_head.weight.device) - generation_memory(model.config, 0)) // per_sample
    require_memory(generation_memory(model.config, num_samples), model.lm_head.weight.device,
                   f"{num_samples:,} samples at once", f"at most {fits:,} fit")


def generation_memory(config, num_samples: int) -> int:
    """Bytes to generate ``num_samples`` at once: the model's forward pass (a prefill of the whole context
    at most) and the KV cache."""
    return inference_memory(config, config.context_length, num_samples) + kv_cache_memory(config, num_samples)
