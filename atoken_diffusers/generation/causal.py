"""Causal self-attention blocks with a key/value cache, for autoregressive models.

Sequences are dense (B, S, dim). In training the whole sequence runs at once with a causal mask; in decoding each
call appends S new positions to a :class:`KVCache` (preallocated to the maximum length) and attends to everything
cached so far. Attention runs through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.mlp import FeedForward
from ..layers.norms import QKNorm, make_norm
from ..layers.rope import RotaryTables


class KVCache:
    """Keys and values of every layer for up to ``max_length`` positions.

    Args:
        num_layers, batch, heads, head_dim, max_length: buffer sizes; buffers are (batch, heads, max_length, head_dim).
    """

    def __init__(self, num_layers: int, batch: int, heads: int, head_dim: int, max_length: int,
                 device=None, dtype=torch.float32):
        shape = (batch, heads, max_length, head_dim)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.max_length = max_length
        self.length = 0  # positions already cached (the start of the next call)

    def reset(self) -> None:
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, heads, S, head_dim) keys/values at [length, length + S); return all cached up to there."""
        end = self.length + k.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache overflow: {end} positions > max_length {self.max_length}.")
        self.keys[layer][:, :, self.length:end] = k
        self.values[layer][:, :, self.length:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads}).")
        self.heads, self.head_dim = heads, dim // heads
        self.to_qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = QKNorm(heads, self.head_dim) if qk_norm else None
        self.k_norm = QKNorm(heads, self.head_dim) if qk_norm else None
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: RotaryTables | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        """x (B, S, dim); ``rope`` tables cover the S new positions; with ``cache`` the S positions follow the
        ``cache.length`` cached ones."""
        b, s, _ = x.shape
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).unbind(2)  # (B, S, heads, d)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope.rotate(q), rope.rotate(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, S, d)
        start = 0
        if cache is not None:
            start = cache.length
            k, v = cache.append(layer, k, v)
        if s == 1:
            out = F.scaled_dot_product_attention(q, k, v)
        elif start == 0:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # several new positions after a cached prefix
            mask = torch.ones(s, start + s, dtype=torch.bool, device=x.device).tril(start)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.to_out(out.transpose(1, 2).reshape(b, s, -1))


class CausalBlock(nn.Module):
    """Pre-norm causal transformer block: x + Attn(norm1(x)), then x + MLP(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, qk_norm: bool = True):
        super().__init__()
        self.norm1 = make_norm("rms", dim)
        self.attn = CausalSelfAttention(dim, heads, qk_norm)
        self.norm2 = make_norm("rms", dim)
        self.mlp = FeedForward(dim, mlp_dim)

    def forward(self, x, rope=None, cache=None, layer=0):
        x = x + self.attn(self.norm1(x), rope, cache, layer)
        return x + self.mlp(self.norm2(x))


def run_blocks(blocks: nn.ModuleList, x: torch.Tensor, rope: RotaryTables | None = None,
               cache: KVCache | None = None, checkpoint_fn=None) -> torch.Tensor:
    """Run ``blocks`` over x (B, S, dim); advances ``cache`` by S positions."""
    for i, block in enumerate(blocks):
        if checkpoint_fn is not None and cache is None:
            x = checkpoint_fn(block, x, rope)
        else:
            x = block(x, rope, cache, i)
    if cache is not None:
        cache.length += x.shape[1]
    return x
