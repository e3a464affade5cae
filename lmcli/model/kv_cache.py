"""A key/value cache: the attention keys and values of the tokens a model has already seen.

When generating, token t+1 attends over the keys and values of tokens 0..t, which do not
change once computed (causal attention: a token never looks ahead). Caching them means each
new token costs one position of projection and one row of attention instead of re-running
the whole prefix.

The buffers are preallocated to the context length, one (batch, heads, context, d_k) slot per
layer, and new keys/values are written in place: no per-step concatenation of the whole cache.
Keys are stored after RoPE rotation, so a cached key keeps the position it was computed at;
``length`` is both the number of cached tokens and the position of the next one.
"""

from __future__ import annotations

import torch


class LayerCache:
    """One layer's keys and values (batch, heads, max_len, d_k); the shared ``KVCache`` counts the tokens."""

    def __init__(self, cache: KVCache, keys: torch.Tensor, values: torch.Tensor):
        self.cache, self.keys, self.values = cache, keys, values

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, heads, new, d_k) after the cached tokens; return keys/values of all tokens."""
        start, end = self.cache.length, self.cache.length + k.shape[-2]
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]


class KVCache:
    """Keys and values of every layer for up to ``max_len`` tokens of a batch of sequences."""

    def __init__(
        self, num_layers: int, batch_size: int, num_heads: int, max_len: int, head_dim: int,
        device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
    ):
        shape = (batch_size, num_heads, max_len, head_dim)
        self.layers = [
            LayerCache(self, torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
            for _ in range(num_layers)
        ]
        self.length = 0
        self.device = self.layers[0].keys.device

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int) -> KVCache:
        """An empty cache shaped for ``model`` (a TransformerLM), on its device and in its dtype."""
        config, weight = model.config, model.lm_head.weight
        return cls(
            config.num_layers, batch_size, config.num_heads, config.context_length, config.head_dim,
            weight.device, weight.dtype,
        )

    def positions(self, num_new: int) -> torch.Tensor:
        """Positions of the next ``num_new`` tokens: they follow the cached ones."""
        return torch.arange(self.length, self.length + num_new, device=self.device)

    def advance(self, num_new: int) -> None:
        """Count ``num_new`` tokens as cached (after every layer has stored them)."""
        self.length += num_new

    def reset(self) -> None:
        """Forget every cached token (the buffers are reused)."""
        self.length = 0
