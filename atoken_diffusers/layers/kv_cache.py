"""Key/value cache for incremental (autoregressive) decoding over dense (B, S, dim) sequences.

Each causal :class:`~atoken_diffusers.layers.attention_layer.Attention` layer that runs with a cache in its
:class:`~atoken_diffusers.layers.attention_layer.AttentionContext` appends the keys/values of its S new positions
and attends to everything cached so far. Buffers are allocated on a layer's first call, ``max_length`` long, in that
layer's dtype and device, so the cache needs no knowledge of the model's shapes.
"""

from __future__ import annotations

import torch
from torch import nn


class _LayerEntry:
    """One layer's preallocated (B, heads, max_length, head_dim) key and value buffers and its filled length."""

    def __init__(self, k: torch.Tensor, max_length: int):
        shape = (k.shape[0], k.shape[1], max_length, k.shape[3])
        self.keys = k.new_zeros(shape)
        self.values = k.new_zeros(shape)
        self.length = 0


class KVCache:
    """Keys and values of every attention layer for up to ``max_length`` positions.

    Args:
        max_length: most positions one sequence may reach (e.g. h * w latent positions).
        batch: number of sequences decoded side by side, checked on every call (None: set by the first call).
    """

    def __init__(self, max_length: int, batch: int | None = None):
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1 position; got {max_length}.")
        self.max_length, self.batch = max_length, batch
        self._layers: dict[nn.Module, _LayerEntry] = {}

    @property
    def length(self) -> int:
        """Positions already cached: the position of the next call's first query (Python int, no host sync)."""
        return max((entry.length for entry in self._layers.values()), default=0)

    def reset(self) -> None:
        """Forget every position (the buffers are kept and overwritten)."""
        for entry in self._layers.values():
            entry.length = 0

    def append(self, layer: nn.Module, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``layer``'s (B, heads, S, head_dim) new keys/values after its cached ones; return all of them,
        (B, heads, cached + S, head_dim)."""
        if self.batch is None:
            self.batch = k.shape[0]
        if k.shape[0] != self.batch:
            raise ValueError(f"this KV cache holds {self.batch} sequences but got keys of {k.shape[0]}; create one "
                             "cache per batch size.")
        entry = self._layers.get(layer)
        if entry is None:
            entry = self._layers[layer] = _LayerEntry(k, self.max_length)
        start, end = entry.length, entry.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions > max_length {self.max_length}; create the cache "
                             "with a larger max_length or reset() it.")
        entry.keys[:, :, start:end] = k
        entry.values[:, :, start:end] = v
        entry.length = end
        return entry.keys[:, :, :end], entry.values[:, :, :end]
