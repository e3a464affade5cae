"""Choosing the next token from the model's logits: temperature and top-p (nucleus) sampling.

- temperature T: softmax(logits / T). T < 1 sharpens the distribution, T > 1 flattens it,
  T = 0 is greedy decoding (argmax, no randomness);
- top-p: keep the smallest set of most likely tokens whose probability reaches p, renormalize,
  sample. Ties are broken deterministically (stable sort: equal probabilities keep ascending
  token-id order), so p -> 0 is exactly the argmax.

The options travel together as one ``Sampling``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmcli.errors import LmcliError
from lmcli.model.layers import softmax


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # in (0, 1]; 1 = the whole distribution
    generator: torch.Generator | None = None  # on the model's device; makes sampling reproducible
    num_tokens: int | None = None  # sample only ids below this (a model vocabulary larger than the tokenizer's)

    def check(self) -> None:
        if not self.temperature >= 0:
            raise LmcliError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LmcliError(f"top-p must be in (0, 1], got {self.top_p}")

    def next_ids(self, logits: torch.Tensor) -> torch.Tensor:
        """One token id per row of ``logits`` (batch, vocab); an LmcliError when they are not numbers."""
        if not bool(torch.isfinite(logits[:, : self.num_tokens]).all()):  # the caller reads the ids anyway: no extra wait
            raise LmcliError("the model's logits are NaN or infinite (damaged or diverged weights): nothing can be sampled")
        if self.num_tokens is not None:
            logits[:, self.num_tokens :] = float("-inf")
        return sample_next(logits, self.temperature, self.top_p, self.generator)


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token id per row of ``logits`` (batch, vocab): argmax at temperature 0, else a nucleus sample."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Shifted before dividing and in float64 (any positive temperature is one), so a tiny temperature
    # sends the other tokens to -inf and leaves the best at 0: never inf - inf or 0 / 0.
    logits = logits.double()
    scaled = (logits - logits.amax(dim=-1, keepdim=True)) / temperature
    probs = nucleus(softmax(scaled, dim=-1), top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """``probs`` (..., vocab) restricted to each row's top-p nucleus and renormalized; p = 1 keeps all."""
    if top_p >= 1:
        return probs
    sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the more likely tokens
    sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)  # the most likely token always stays
    kept = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return kept / kept.sum(dim=-1, keepdim=True)
