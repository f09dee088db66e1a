"""Pre-norm transformer block over packed tokens (the encoder and decoder of AToken share it).

Encoder flavour: LayerNorm, biases, no QK-norm. Decoder flavour: RMSNorm, no biases, QK-norm. Both apply 4D RoPE to
queries and keys (after QK-norm) and attend within the groups of an :class:`AttentionPlan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import AttentionPlan, varlen_attention
from .mlp import FeedForward
from .norms import QKNorm, make_norm
from .rope import RotaryTables


@dataclass(eq=False)
class AttentionContext:
    """What every self-attention layer of one forward pass shares: the groups, the rotary tables, the logit cap.

    ``rope_k`` covers the key entries of ``plan`` (``rope_q`` when keys are the queries' own tokens); ``None``
    tables mean no RoPE (e.g. the Gaussian decoder, which adds absolute positions instead). ``softcap`` caps
    attention logits as cap * tanh(logits / cap).
    """

    plan: AttentionPlan
    rope_q: RotaryTables | None = None
    rope_k: RotaryTables | None = None
    softcap: float | None = None


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, bias: bool = True, qk_norm: bool = False):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads}).")
        self.heads, self.head_dim = heads, dim // heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.q_norm = QKNorm(heads, self.head_dim) if qk_norm else None
        self.k_norm = QKNorm(heads, self.head_dim) if qk_norm else None
        self.to_out = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).unbind(1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        # Keys/values are gathered before RoPE: a cached key is rotated at its position inside the new tile.
        k, v = ctx.plan.gather_keys(k), ctx.plan.gather_keys(v)
        if ctx.rope_q is not None:
            q, k = ctx.rope_q.rotate(q), ctx.rope_k.rotate(k)
        out = varlen_attention(q, k, v, ctx.plan, softcap=ctx.softcap)
        return self.to_out(out.flatten(1))


class TransformerBlock(nn.Module):
    """x + Attn(norm1(x)), then x + MLP(norm2(x))."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, norm: str = "layer", bias: bool = True, qk_norm: bool = False):
        super().__init__()
        self.norm1 = make_norm(norm, dim)
        self.attn = SelfAttention(dim, heads, bias=bias, qk_norm=qk_norm)
        self.norm2 = make_norm(norm, dim)
        self.mlp = FeedForward(dim, mlp_dim, bias=bias)

    def forward(self, x: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), ctx)
        return x + self.mlp(self.norm2(x))
