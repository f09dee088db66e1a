"""AToken decoder: latent tokens -> patch vectors (3072 = 4 x 16 x 16 x 3 pixel values in [-1, 1])."""

from __future__ import annotations

import torch
from torch import nn

from ..tokens.temporal_tiles import TokenLayout
from .token_transformer import TokenTransformer


class ATokenDecoder(TokenTransformer):
    """RMSNorm blocks without biases and with QK-norm, then RMSNorm and a linear map to patch vectors."""

    def __init__(self, latent_channels: int, out_channels: int, dim: int, depth: int, heads: int, mlp_dim: int, pos_grid: int = 16):
        super().__init__(latent_channels, dim, depth, heads, mlp_dim, norm="rms", bias=False, qk_norm=True, pos_grid=pos_grid)
        self.proj_out = nn.Linear(dim, out_channels, bias=False)

    def forward(self, latents: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """(N, latent_channels) in group order -> (N, out_channels) patch vectors in group order."""
        return self.proj_out(self.hidden_states(latents, layout))
