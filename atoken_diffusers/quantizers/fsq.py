"""Finite scalar quantisation (FSQ) of AToken latents into discrete codes.

The latent channels are split into ``num_codebooks`` groups of len(levels) dimensions (AToken So/D: 8 codebooks of
6 dimensions with 4 levels each, 4096 codes per codebook). Each value is bounded with a shifted tanh (1e-3 margin),
rounded half-to-even and divided by level // 2, so 4-level codes are {-1, -0.5, 0, 0.5}. The index of a codebook
entry is sum_d (code_d * (L//2) + L//2) * prod(levels[:d]). No parameters.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

# Levels per codebook size as the FSQ authors suggest (subset used by AToken and common alternatives).
_LEVELS = {
    2**4: [5, 3],
    2**6: [8, 8],
    2**8: [8, 6, 5],
    2**9: [8, 8, 8],
    2**10: [8, 5, 5, 5],
    2**11: [8, 8, 6, 5],
    2**12: [4, 4, 4, 4, 4, 4],
    2**13: [8, 8, 8, 4, 4],
    2**14: [8, 8, 8, 6, 5],
    2**16: [8, 8, 8, 5, 5, 5],
}


def levels_for_codebook_size(codebook_size: int) -> list[int]:
    if codebook_size not in _LEVELS:
        raise ValueError(f"No FSQ levels known for codebook size {codebook_size}; choose one of {sorted(_LEVELS)}.")
    return list(_LEVELS[codebook_size])


class FSQ(nn.Module):
    def __init__(self, levels: Sequence[int], num_codebooks: int, eps: float = 1e-3):
        super().__init__()
        self.num_codebooks = num_codebooks
        self.codebook_dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.eps = eps
        levels_t = torch.tensor(list(levels), dtype=torch.float32)
        self.register_buffer("levels", levels_t, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.cat([torch.ones(1), levels_t[:-1]]), 0), persistent=False)

    @property
    def dim(self) -> int:
        return self.num_codebooks * self.codebook_dim

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        half_l = (self.levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        return (z + shift).tanh() * half_l - offset

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise (..., dim) latents.

        Returns:
            codes: (..., dim) quantised values in [-1, 1] (same dtype as ``z``), with a straight-through gradient.
            indices: (..., num_codebooks) int64 codebook indices in [0, codebook_size).
        """
        zf = z.float().unflatten(-1, (self.num_codebooks, self.codebook_dim))
        bounded = self._bound(zf)
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        half_width = self.levels // 2
        codes = rounded / half_width
        digits = torch.round(codes.detach() * half_width + half_width)
        indices = (digits * self.basis).sum(-1).long()
        return codes.flatten(-2).to(z.dtype), indices

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(..., num_codebooks) integer indices -> (..., dim) float32 codes."""
        digits = (indices.long()[..., None] // self.basis.long()) % self.levels.long()
        half_width = self.levels // 2
        return ((digits.float() - half_width) / half_width).flatten(-2)
