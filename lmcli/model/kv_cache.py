"""A key/value cache: the attention keys and values of the tokens a model has already seen.

When generating, token t+1 attends over the keys and values of tokens 0..t, which do not
change once computed (causal attention: a token never looks ahead). Caching them means each
new token costs one position of projection and one row of attention instead of re-running
the whole prefix.

The buffers are preallocated to the context length, one (batch, heads, context, d_k) slot per
layer (the key/value heads: grouped-query attention caches num_heads / num_kv_heads times less), and new keys/values are written in place: no per-step concatenation of the whole cache.
Keys are stored after RoPE rotation, so a cached key keeps the position it was computed at;
``length`` is both the number of cached tokens and the position of the next one.

A ``static`` cache is for a compiled decoding step, whose shapes and Python values must not
change from one token to the next: the position of the next token is a tensor (``position``,
updated in place), new keys and values are written at it with ``index_copy_``, and attention
runs over the whole buffer with a mask (``visible``) that hides the positions not yet written.
Masked keys get probability exactly 0, so the result is the dynamic cache's up to the order of
float sums.
"""

from __future__ import annotations

import torch


class LayerCache:
    """One layer's keys and values (batch, heads, max_len, d_k); the shared ``KVCache`` counts the tokens."""

    def __init__(self, cache: KVCache, keys: torch.Tensor, values: torch.Tensor):
        self.cache, self.keys, self.values = cache, keys, values

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (batch, heads, new, d_k) after the cached tokens; return keys/values of all tokens
        (static: the whole buffers, to be read with ``visible``)."""
        if self.cache.static:
            positions = self.cache.positions(k.shape[-2])
            self.keys.index_copy_(2, positions, k)
            self.values.index_copy_(2, positions, v)
            return self.keys, self.values
        start, end = self.cache.length, self.cache.length + k.shape[-2]
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]

    def visible(self, num_queries: int) -> torch.Tensor | None:
        """Static: which buffer positions each new token may attend to (queries × max_len); else None."""
        return self.cache.visible(num_queries)


class KVCache:
    """Keys and values of every layer for up to ``max_len`` tokens of a batch of sequences."""

    def __init__(
        self, num_layers: int, batch_size: int, num_heads: int, max_len: int, head_dim: int,
        device: torch.device | str | None = None, dtype: torch.dtype = torch.float32, static: bool = False,
    ):
        shape = (batch_size, num_heads, max_len, head_dim)
        self.static = static
        self.position = torch.zeros(1, dtype=torch.long, device=device)  # static: where the next token goes
        self.buffer_positions = torch.arange(max_len, device=device)
        self.layers = [
            LayerCache(self, torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))
            for _ in range(num_layers)
        ]
        self.length = 0
        self.device = self.layers[0].keys.device

    @classmethod
    def for_model(cls, model: torch.nn.Module, batch_size: int, static: bool = False) -> KVCache:
        """An empty cache shaped for ``model`` (a TransformerLM), on its device and in its dtype."""
        config, weight = model.config, model.lm_head.weight
        return cls(
            config.num_layers, batch_size, config.kv_heads, config.context_length, config.head_dim,
            weight.device, weight.dtype, static,
        )

    def positions(self, num_new: int) -> torch.Tensor:
        """Positions of the next ``num_new`` tokens: they follow the cached ones."""
        if self.static:
            return self.position if num_new == 1 else self.position + torch.arange(num_new, device=self.device)
        return torch.arange(self.length, self.length + num_new, device=self.device)

    def visible(self, num_queries: int) -> torch.Tensor | None:
        """Static: (queries × max_len), True where a key is written and not after the query; else None."""
        if not self.static:
            return None
        return self.buffer_positions <= self.positions(num_queries).unsqueeze(-1)

    def advance(self, num_new: int) -> None:
        """Count ``num_new`` tokens as cached (after every layer has stored them)."""
        self.length += num_new
        if self.static:
            self.position += num_new

    def reset(self) -> None:
        """Forget every cached token (the buffers are reused)."""
        self.length = 0
        self.position.zero_()
