"""Attention pooling head: one learned probe per sample queries all of the sample's encoder tokens.

h = to_out(Attn(to_q(probe), to_kv(tokens))); h = h + MLP(LayerNorm(h)). No RoPE, no norm before the attention; the
residual stream starts at the attention output, not at the probe. The result is the sample's semantic embedding
(L2-normalised by the caller when asked).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import AttentionPlan
from .attention_layer import Attention, AttentionContext
from .mlp import FeedForward
from .norms import LayerNorm32


class AttentionPoolingHead(Attention):
    """The project's cross-attention layer (``to_q``, ``to_kv``, ``to_out``, with biases) plus the ``probe``, the
    ``norm`` and the ``mlp`` of the pooled vector."""

    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__(dim, heads, context_dim=dim)
        self.probe = nn.Parameter(torch.zeros(dim))
        self.norm = LayerNorm32(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_dim)

    def forward(self, tokens: torch.Tensor, tokens_per_sample: torch.Tensor) -> torch.Tensor:
        """Pool (N, dim) tokens stored sample after sample (``tokens_per_sample`` (B,) of them each) into (B, dim)."""
        num_samples = tokens_per_sample.shape[0]
        ctx = AttentionContext(cross_plan=AttentionPlan(torch.ones_like(tokens_per_sample), tokens_per_sample))
        probes = self.probe.to(tokens.dtype).expand(num_samples, -1)  # one query per sample
        h = super().forward(probes, ctx, context=tokens)
        return h + self.mlp(self.norm(h))
