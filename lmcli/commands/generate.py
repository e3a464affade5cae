"""``lmcli generate``: load a trained model and its tokenizer, stream a completion, summarize.

The checkpoint defaults to the most recent run of the workspace (``best.pt``, else
``latest.pt``); a run directory or a run name picks that run's. The tokenizer is the one the
checkpoint names (``--tokenizer`` overrides it, the workspace's is the fallback when the
recorded directory has gone); a tokenizer other than the one the model was trained with
gets a warning, one whose size differs from the model's vocabulary is an error.

One sample streams to stdout token by token; several samples are drawn together (one
forward pass per step for all) behind a progress bar and printed one after another.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from lmcli.errors import LmcliError
from lmcli.generation.completion import Completion, collect
from lmcli.generation.decoding import for_inference, generate_batch
from lmcli.generation.sampling import Sampling
from lmcli.generation.text_stream import TextStream
from lmcli.json_output import dumps
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.special_tokens import END_OF_TEXT
from lmcli.training.checkpoint import checkpoint_tokenizer, find_checkpoint, load_model_from_checkpoint
from lmcli.training.device import pick_device
from lmcli.ui.console import console, err_console, print_warning
from lmcli.ui.progress import Bars
from lmcli.workspace import Workspace


def run(
    prompt: str,
    checkpoint: str | None,
    tokenizer_dir: Path | None,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    num_samples: int,
    device: str,
    workspace: Path | None,
    as_json: bool = False,
) -> dict[str, Any]:
    """Generate ``num_samples`` completions of ``prompt`` ("-": read stdin); prints and returns the result."""
    ws = Workspace.resolve(workspace)
    prompt = prompt_text(prompt)
    chosen_device = pick_device(device)
    path = find_checkpoint(checkpoint, ws)
    model, model_config, saved = load_model_from_checkpoint(path, chosen_device)
    model = for_inference(model)
    tokenizer_dir, same = checkpoint_tokenizer(saved, tokenizer_dir, ws)
    if not same:
        print_warning(f"the tokenizer in {tokenizer_dir} is not the one the model was trained with")
    tokenizer = Tokenizer.from_dir(tokenizer_dir)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise LmcliError(
            f"the tokenizer has {tokenizer.vocab_size:,} tokens but the model's vocabulary is {model_config.vocab_size:,}: "
            "they do not belong together (pass the model's tokenizer with --tokenizer DIR)"
        )
    eos_id = tokenizer.special_ids.get(END_OF_TEXT)
    # An empty prompt starts a new document, as after <|endoftext|> in the training data.
    prompt_ids = tokenizer.encode(prompt) or ([eos_id] if eos_id is not None else [])
    generator = None if seed is None else torch.Generator(chosen_device).manual_seed(seed)
    sampling = Sampling(temperature, top_p, generator, num_tokens=tokenizer.max_id + 1)
    steps = generate_batch(model, prompt_ids, max_tokens, sampling, eos_id, num_samples)  # checks every size first
    completions = [Completion(TextStream(tokenizer.vocab)) for _ in range(num_samples)]

    started = time.perf_counter()
    if as_json:
        collect(steps, completions, eos_id)
    elif num_samples == 1:
        stream(steps, completions[0], eos_id, prompt)
    else:
        with Bars() as bars:
            task = bars.task("generating", total=max_tokens)
            done = collect(steps, completions, eos_id, task.advance)
            task.update(total=done)  # every sample may have ended before the limit
    seconds = time.perf_counter() - started

    tokens = sum(len(c.token_ids) + (c.stop_reason == "eos") for c in completions)
    result = {
        "checkpoint": str(path),
        "device": str(chosen_device),
        "dtype": str(model.lm_head.weight.dtype).removeprefix("torch."),
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        **completions[0].as_dict(),
        "samples": [c.as_dict() for c in completions],
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
    }
    print_result(result, as_json)
    return result


def prompt_text(prompt: str) -> str:
    """The prompt as text: the argument, or stdin for "-"; bytes that are not UTF-8 are an error."""
    if prompt == "-":
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode("utf-8", "surrogateescape")
        where = "on stdin"
    else:
        data, where = prompt.encode("utf-8", "surrogateescape"), ""  # Python keeps undecodable argv bytes as surrogates
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise LmcliError(f"the prompt {where + ' ' if where else ''}is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start})") from None
    return text.rstrip("\n") if prompt == "-" else text


def stream(steps, completion: Completion, eos_id: int | None, prompt: str) -> None:
    """Print the prompt, then each piece of text as soon as its token is drawn."""
    out = sys.stdout
    out.write(prompt)
    out.flush()
    for (token_id,) in steps:
        out.write(completion.add(token_id, eos_id))
        out.flush()
    if completion.stop_reason != "eos":
        out.write(completion.finish())
    out.write("\n")
    out.flush()


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(dumps(result, ensure_ascii=False))
        return
    if len(result["samples"]) > 1:
        for n, sample in enumerate(result["samples"], 1):
            console.rule(f"sample {n} ({sample['stop_reason']})", style="dim")
            console.out(result["prompt"] + sample["completion"], highlight=False)
    rate = f"{result['tokens_per_s']:,.1f} tokens/s" if result["tokens_per_s"] else "-"
    stops = sorted({s["stop_reason"] for s in result["samples"]})
    err_console.print(
        f"[dim]{result['tokens']:,} tokens in {result['seconds']:.2f} s ({rate}) on {result['device']}; "
        f"stopped at {' / '.join(stop_text(r) for r in stops)}[/]",
        highlight=False, markup=True,
    )


def stop_text(reason: str) -> str:
    return END_OF_TEXT if reason == "eos" else "the token limit"
