"""The project's one multi-head attention layer (self or cross), and the context its calls share.

Flags, set at construction (x-transformers style): cross-attention (``context_dim``), biases, per-head QK-norm,
causal masking, logit soft-capping. Two layouts, chosen by the :class:`AttentionContext`:

* packed: tokens (N, dim) of many sequences stored group after group, attended within the groups of an
  :class:`~atoken_diffusers.layers.attention.AttentionPlan` through
  :func:`~atoken_diffusers.layers.attention.varlen_attention` (the tokenizer, the Gaussian decoder, the flows, the
  pooling head);
* dense: (B, S, dim) batches through ``scaled_dot_product_attention`` (the autoregressive model with its
  :class:`~atoken_diffusers.layers.kv_cache.KVCache`, the DiT).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import AttentionPlan, dense_attention, varlen_attention
from .kv_cache import KVCache
from .norms import QKNorm
from .rope import RotaryTables


@dataclass(eq=False)
class AttentionContext:
    """What every attention layer of one forward pass shares.

    Attributes:
        plan: self-attention groups of packed (N, dim) tokens; ``None`` means dense (B, S, dim) sequences.
        rope_q, rope_k: rotary tables of the queries and of the key entries (``rope_k`` covers ``plan``'s key
            entries; the same tables when keys are the queries' own tokens). ``None``: no RoPE (e.g. the Gaussian
            decoder, which adds absolute positions instead). Dense tables cover the S positions of every sequence.
        order, inverse: optional permutation of packed tokens into ``plan``'s groups for self-attention and back
            (shifted 3D windows); ``None`` when tokens are already in group order.
        cross_plan: packed cross-attention groups: queries (the tokens) against keys (the context rows).
        batch: (N,) sample index of every packed token, to broadcast per-sample vectors (adaLN modulation).
        cache: key/value cache of incremental dense decoding (causal self-attention layers only).
    """

    plan: AttentionPlan | None = None
    rope_q: RotaryTables | None = None
    rope_k: RotaryTables | None = None
    order: torch.Tensor | None = None
    inverse: torch.Tensor | None = None
    cross_plan: AttentionPlan | None = None
    batch: torch.Tensor | None = None
    cache: KVCache | None = None

    def per_token(self, values: torch.Tensor) -> torch.Tensor:
        """(B, C) per-sample values -> broadcastable to the tokens: (N, C) packed, (B, 1, C) dense."""
        if self.plan is None:
            return values[:, None]
        if self.batch is None:
            raise ValueError("per-sample values over packed tokens need AttentionContext.batch (sample of each token).")
        return values[self.batch]


class Attention(nn.Module):
    """Multi-head attention, scale 1/sqrt(head_dim).

    Args:
        dim: width of the queries' tokens (and of the output); heads * head_dim.
        heads: attention heads.
        context_dim: width of the context tokens for cross-attention (fused ``to_kv``); ``None``: self-attention
            (fused ``to_qkv``).
        bias: biases in the projections.
        qk_norm: per-head :class:`~atoken_diffusers.layers.norms.QKNorm` on queries and keys, before RoPE.
        causal: each query sees only keys at its own or earlier positions (dense self-attention only).
        softcap: cap attention logits as softcap * tanh(logits / softcap).
    """

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, bias: bool = True, qk_norm: bool = False,
                 causal: bool = False, softcap: float | None = None):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads}).")
        if causal and context_dim is not None:
            raise ValueError("causal applies to self-attention; pass context_dim=None or causal=False.")
        self.heads, self.head_dim = heads, dim // heads
        self.is_cross = context_dim is not None
        self.causal, self.softcap = causal, softcap
        if self.is_cross:
            self.to_q = nn.Linear(dim, dim, bias=bias)
            self.to_kv = nn.Linear(context_dim, 2 * dim, bias=bias)
        else:
            self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.q_norm = QKNorm(heads, self.head_dim) if qk_norm else None
        self.k_norm = QKNorm(heads, self.head_dim) if qk_norm else None
        self.to_out = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor, ctx: AttentionContext, context: torch.Tensor | None = None) -> torch.Tensor:
        """Attend.

        Args:
            x: queries' tokens, (N, dim) packed when ``ctx.plan`` (or, for cross-attention, ``ctx.cross_plan``) is
                set, else (B, S, dim).
            ctx: the forward pass's :class:`AttentionContext`.
            context: cross-attention only: (Nc, context_dim) packed rows (group after group as ``ctx.cross_plan``
                says) or (B, L, context_dim).
        Returns:
            The same shape as ``x``.
        """
        if self.is_cross:
            if context is None:
                raise ValueError("this cross-attention layer needs context (the tokens to attend to).")
            return self._cross(x, context, ctx)
        if ctx.order is not None:
            x = x[ctx.order]
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, self.head_dim)).unbind(-3)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if ctx.plan is None:
            out = self._dense_self(q, k, v, ctx)
        else:
            if self.causal:
                raise ValueError("causal attention runs on dense (B, S, dim) sequences; build the context without "
                                 "a plan.")
            # Keys/values are gathered before RoPE: a cached key is rotated at its position inside the new tile.
            k, v = ctx.plan.gather_keys(k), ctx.plan.gather_keys(v)
            if ctx.rope_q is not None:
                q, k = ctx.rope_q.rotate(q), ctx.rope_k.rotate(k)
            out = varlen_attention(q, k, v, ctx.plan, softcap=self.softcap)
        out = self.to_out(out.flatten(-2))
        return out if ctx.inverse is None else out[ctx.inverse]

    def _dense_self(self, q, k, v, ctx: AttentionContext) -> torch.Tensor:
        """(B, S, heads, head_dim) queries/keys/values -> (B, S, heads, head_dim)."""
        if ctx.rope_q is not None:
            q, k = ctx.rope_q.rotate(q), ctx.rope_k.rotate(k)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, S, head_dim)
        if ctx.cache is not None:
            k, v = ctx.cache.append(self, k, v)
        return dense_attention(q, k, v, causal=self.causal, softcap=self.softcap).transpose(1, 2)

    def _cross(self, x: torch.Tensor, context: torch.Tensor, ctx: AttentionContext) -> torch.Tensor:
        q = self.to_q(x).unflatten(-1, (self.heads, self.head_dim))
        k, v = self.to_kv(context).unflatten(-1, (2, self.heads, self.head_dim)).unbind(-3)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if ctx.cross_plan is not None:
            out = varlen_attention(q, k, v, ctx.cross_plan, softcap=self.softcap)
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            out = dense_attention(q, k, v, softcap=self.softcap).transpose(1, 2)
        return self.to_out(out.flatten(-2))
