"""Attention pooling head: one learned probe per sample queries all of the sample's encoder tokens.

h = to_out(Attn(to_q(probe), to_kv(tokens))); h = h + MLP(LayerNorm(h)). No RoPE, no norm before the attention; the
residual stream starts at the attention output, not at the probe. The result is the sample's semantic embedding
(L2-normalised by the caller when asked).
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import AttentionPlan, varlen_attention
from .mlp import FeedForward
from .norms import LayerNorm32


class AttentionPoolingHead(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.probe = nn.Parameter(torch.zeros(dim))
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 2 * dim)
        self.to_out = nn.Linear(dim, dim)
        self.norm = LayerNorm32(dim, eps=1e-6)
        self.mlp = FeedForward(dim, mlp_dim)

    def forward(self, tokens: torch.Tensor, tokens_per_sample: torch.Tensor) -> torch.Tensor:
        """Pool (N, dim) tokens stored sample after sample into (num_samples, dim)."""
        num_samples = tokens_per_sample.shape[0]
        plan = AttentionPlan(torch.ones_like(tokens_per_sample), tokens_per_sample)
        q = self.to_q(self.probe.to(tokens.dtype)).view(1, self.heads, self.head_dim).expand(num_samples, -1, -1)
        k, v = self.to_kv(tokens).unflatten(-1, (2, self.heads, self.head_dim)).unbind(1)
        h = self.to_out(varlen_attention(q.contiguous(), k, v, plan).flatten(1))
        return h + self.mlp(self.norm(h))
