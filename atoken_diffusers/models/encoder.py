"""AToken encoder: patch tokens -> hidden states (dense features) and a pooled semantic embedding."""

from __future__ import annotations

import torch

from ..layers.pooling_head import AttentionPoolingHead
from ..tokens.temporal_tiles import TokenLayout
from .token_transformer import TokenTransformer


class ATokenEncoder(TokenTransformer):
    """LayerNorm blocks with biases (SigLIP2-style), plus the attention-pooling head ``pool``."""

    def __init__(self, in_channels: int, dim: int, depth: int, heads: int, mlp_dim: int, pos_grid: int = 16):
        super().__init__(in_channels, dim, depth, heads, mlp_dim, norm="layer", bias=True, pos_grid=pos_grid)
        self.pool = AttentionPoolingHead(dim, heads, mlp_dim)

    def forward(self, feats: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """(N, in_channels) tokens in group order -> (N, dim) features after the final LayerNorm."""
        return self.hidden_states(feats, layout)

    def embed(self, hidden: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """Pooled (num_samples, dim) embedding of every sample over all of its tiles (not normalised)."""
        return self.pool(hidden, layout.tokens_per_sample)
