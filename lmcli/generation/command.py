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

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmcli.console import console, count_progress, err_console
from lmcli.errors import LmcliError
from lmcli.generate import generate_batch
from lmcli.generation.text_stream import TextStream
from lmcli.tokenizer import Tokenizer
from lmcli.tokenizer.files import tokenizer_fingerprint
from lmcli.training.checkpoint import find_checkpoint, load_model_from_checkpoint
from lmcli.training.device import pick_device
from lmcli.workspace import Workspace

EOS_TOKEN = "<|endoftext|>"


@dataclass
class Sample:
    """One completion as it grows: its token ids (without <|endoftext|>), its text and why it ended."""

    text: TextStream
    token_ids: list[int] = field(default_factory=list)
    completion: str = ""
    stop_reason: str = "max_tokens"  # or "eos"

    def add(self, token_id: int, eos_id: int | None) -> str:
        """Record one generated id; return the text it completes ("" for the end-of-text token)."""
        if token_id == eos_id:
            self.stop_reason = "eos"
            return self.finish()
        self.token_ids.append(token_id)
        piece = self.text.push(token_id)
        self.completion += piece
        return piece

    def finish(self) -> str:
        piece = self.text.flush()
        self.completion += piece
        return piece


def generate_command(
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
    workspace = Workspace.resolve(workspace)
    if prompt == "-":
        prompt = sys.stdin.read().rstrip("\n")
    chosen_device = pick_device(device)
    path = find_checkpoint(checkpoint, workspace)
    model, model_config, saved = load_model_from_checkpoint(path, chosen_device)
    tokenizer = load_tokenizer(tokenizer_dir, saved, workspace)
    if tokenizer.vocab_size != model_config.vocab_size:
        raise LmcliError(
            f"the tokenizer has {tokenizer.vocab_size:,} tokens but the model's vocabulary is {model_config.vocab_size:,}: "
            "they do not belong together (pass the model's tokenizer with --tokenizer DIR)"
        )
    eos_id = tokenizer.special_ids.get(EOS_TOKEN)
    # An empty prompt starts a new document, as after <|endoftext|> in the training data.
    prompt_ids = tokenizer.encode(prompt) or ([eos_id] if eos_id is not None else [])
    generator = None if seed is None else torch.Generator(chosen_device).manual_seed(seed)
    samples = [Sample(TextStream(tokenizer.vocab)) for _ in range(num_samples)]
    steps = generate_batch(
        model, prompt_ids, num_samples, max_tokens, temperature, top_p, eos_id, generator,
        num_tokens=tokenizer.max_id + 1,
    )

    started = time.perf_counter()
    if as_json:
        collect(steps, samples, eos_id)
    elif num_samples == 1:
        stream(steps, samples[0], eos_id, prompt)
    else:
        with count_progress() as progress:
            task = progress.add_task("generating", total=max_tokens)
            done = collect(steps, samples, eos_id, lambda: progress.advance(task))
            progress.update(task, total=done)  # every sample may have ended before the limit
    seconds = time.perf_counter() - started

    tokens = sum(len(s.token_ids) + (s.stop_reason == "eos") for s in samples)
    result = {
        "checkpoint": str(path),
        "device": str(chosen_device),
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "completion": samples[0].completion,
        "token_ids": samples[0].token_ids,
        "stop_reason": samples[0].stop_reason,
        "samples": [{"completion": s.completion, "token_ids": s.token_ids, "stop_reason": s.stop_reason} for s in samples],
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
    }
    print_result(result, as_json)
    return result


def collect(steps, samples: list[Sample], eos_id: int | None, on_step=lambda: None) -> int:
    """Run the generation to the end, recording every sample's ids and text; returns the steps taken."""
    taken = 0
    for step in steps:
        for sample, token_id in zip(samples, step):
            if token_id is not None:
                sample.add(token_id, eos_id)
        taken += 1
        on_step()
    for sample in samples:
        if sample.stop_reason != "eos":
            sample.finish()
    return taken


def stream(steps, sample: Sample, eos_id: int | None, prompt: str) -> None:
    """Print the prompt, then each piece of text as soon as its token is drawn."""
    out = sys.stdout
    out.write(prompt)
    out.flush()
    for (token_id,) in steps:
        out.write(sample.add(token_id, eos_id))
        out.flush()
    if sample.stop_reason != "eos":
        out.write(sample.finish())
    out.write("\n")
    out.flush()


def print_result(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    if len(result["samples"]) > 1:
        for n, sample in enumerate(result["samples"], 1):
            console.rule(f"sample {n} ({sample['stop_reason']})", style="dim")
            console.out(result["prompt"] + sample["completion"], highlight=False)
    rate = f"{result['tokens_per_s']:,.1f} tokens/s" if result["tokens_per_s"] else "-"
    stops = sorted({s["stop_reason"] for s in result["samples"]})
    err_console.print(
        f"[dim]{result['tokens']:,} tokens in {result['seconds']:.2f} s ({rate}) on {result['device']}; "
        f"stopped at {' / '.join('<|endoftext|>' if r == 'eos' else 'the token limit' for r in stops)}[/]",
        highlight=False, markup=True,
    )



def load_tokenizer(tokenizer_dir: Path | None, checkpoint: dict[str, Any], workspace: Workspace) -> Tokenizer:
    """The tokenizer to decode with: ``--tokenizer``, else the checkpoint's, else the workspace's."""
    recorded = checkpoint.get("tokenizer") or {}
    if tokenizer_dir is None:
        candidates = [Path(recorded["dir"])] if recorded.get("dir") else []
        tokenizer_dir = next((d for d in candidates if d.is_dir()), workspace.tokenizer_dir)
    fingerprint = tokenizer_fingerprint(tokenizer_dir)
    if recorded.get("fingerprint") not in (None, fingerprint):
        err_console.print(
            f"[yellow]warning:[/] the tokenizer in {tokenizer_dir} is not the one the model was trained with",
            highlight=False,
        )
    return Tokenizer.from_dir(tokenizer_dir)
