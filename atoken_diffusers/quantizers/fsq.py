"""Finite scalar quantisation (FSQ) of AToken latents into discrete codes.

The latent channels are split into ``num_codebooks`` groups of len(levels) dimensions (AToken So/D: 8 codebooks of
6 dimensions with 4 levels each, 4^6 = 4096 codes per codebook). Each value is bounded with a shifted tanh (1e-3
margin), rounded half-to-even and divided by level // 2, so 4-level codes are {-1, -0.5, 0, 0.5}. The index of a
codebook entry is sum_d (code_d * (L//2) + L//2) * prod(levels[:d]). No parameters.

A codebook has exactly prod(levels) entries. The FSQ paper's suggested levels for a nominal size are not always
exact (1024 -> [8, 5, 5, 5] = 1000 codes), so configs carry the levels and the true size (:func:`resolve_levels`).

Quantising is not idempotent on codes for even levels: the bound compresses the code -1 of a 4-level dimension to
-0.5 when fed back in. Go from codes back to indices with :meth:`FSQ.codes_to_indices`, not by re-quantising.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

# Levels the FSQ paper (arXiv 2309.15505, table 1) suggests for a nominal codebook size; the official AToken code
# builds its quantizer from this table. Some products differ from the key (2**8 -> 240, 2**10 -> 1000).
SUGGESTED_LEVELS = {
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
DEFAULT_LEVELS = SUGGESTED_LEVELS[2**12]  # AToken So/D


def suggested_levels(nominal_size: int, name: str = "codebook_size") -> list[int]:
    """The FSQ paper's levels for a nominal codebook size (their product may differ from it; see the table)."""
    if nominal_size not in SUGGESTED_LEVELS:
        raise ValueError(f"{name}={nominal_size}: no FSQ levels known; choose one of {sorted(SUGGESTED_LEVELS)}, or "
                         "give the levels themselves (fsq_levels).")
    return list(SUGGESTED_LEVELS[nominal_size])


def resolve_levels(codebook_size: int | None, levels: Sequence[int] | None) -> list[int]:
    """FSQ levels from a config's ``fsq_codebook_size`` and/or ``fsq_levels``; the size must equal prod(levels).

    Either may be None (both None: AToken's [4] * 6). A size alone must be exactly representable by the suggested
    levels (4096 = 4^6 is; 1024 is not: [8, 5, 5, 5] gives 1000), so a config never claims a size it does not have.
    """
    if levels is None:
        if codebook_size is None:
            return list(DEFAULT_LEVELS)
        levels = suggested_levels(codebook_size, "fsq_codebook_size")
        if math.prod(levels) != codebook_size:
            raise ValueError(
                f"fsq_codebook_size={codebook_size} is not exactly representable: the FSQ levels {levels} give "
                f"{math.prod(levels)} codes; pass fsq_levels={levels} (and fsq_codebook_size={math.prod(levels)})."
            )
        return levels
    levels = list(levels)
    if not levels or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 2 for n in levels):
        raise ValueError(f"fsq_levels must be a non-empty list of integers >= 2 (e.g. [4, 4, 4, 4, 4, 4]); got "
                         f"{levels}.")
    if codebook_size is not None and codebook_size != math.prod(levels):
        raise ValueError(f"fsq_codebook_size={codebook_size} contradicts fsq_levels={levels}, which give "
                         f"{math.prod(levels)} codes; set fsq_codebook_size={math.prod(levels)} or leave it out.")
    return levels


class FSQ(nn.Module):
    """FSQ over ``num_codebooks`` groups of ``len(levels)`` channels; ``codebook_size`` = prod(levels) exactly."""

    def __init__(self, levels: Sequence[int], num_codebooks: int, eps: float = 1e-3):
        super().__init__()
        self.num_codebooks = num_codebooks
        self.codebook_dim = len(levels)
        self.codebook_size = math.prod(levels)
        self.level_list = [int(n) for n in levels]  # levels per dimension of one codebook, as a config stores them
        self.eps = eps
        levels_t = torch.tensor(list(levels), dtype=torch.float32)
        self.register_buffer("levels", levels_t, persistent=False)
        self.register_buffer("basis", torch.cumprod(torch.cat([torch.ones(1), levels_t[:-1]]), 0), persistent=False)

    @classmethod
    def for_latents(cls, latent_channels: int, num_codebooks: int, codebook_size: int | None = None,
                    levels: Sequence[int] | None = None) -> "FSQ":
        """The FSQ of a model config (see :func:`resolve_levels`); num_codebooks x len(levels) must equal
        ``latent_channels``."""
        levels = resolve_levels(codebook_size, levels)
        if len(levels) * num_codebooks != latent_channels:
            raise ValueError(f"FSQ with {num_codebooks} codebooks of {len(levels)} dims needs latent_channels = "
                             f"{len(levels) * num_codebooks}; got {latent_channels}.")
        return cls(levels, num_codebooks)

    @property
    def dim(self) -> int:
        return self.num_codebooks * self.codebook_dim

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        half_l = (self.levels - 1) * (1 + self.eps) / 2
        offset = torch.where(self.levels % 2 == 0, 0.5, 0.0)
        shift = (offset / half_l).atanh()
        return (z + shift).tanh() * half_l - offset

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """(..., dim) codes on the grid -> (..., num_codebooks) int64 indices in [0, codebook_size)."""
        half_width = self.levels // 2
        digits = torch.round(codes.detach().float().unflatten(-1, (self.num_codebooks, self.codebook_dim)) * half_width
                             + half_width)
        return (digits * self.basis).sum(-1).long()

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantise (..., dim) latents (channels last).

        Returns:
            codes: (..., dim) quantised values in [-1, 1] (same dtype as ``z``), with a straight-through gradient.
            indices: (..., num_codebooks) int64 codebook indices in [0, codebook_size).
        """
        bounded = self._bound(z.float().unflatten(-1, (self.num_codebooks, self.codebook_dim)))
        rounded = bounded + (torch.round(bounded) - bounded).detach()
        codes = (rounded / (self.levels // 2)).flatten(-2)
        return codes.to(z.dtype), self.codes_to_indices(codes)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """(..., num_codebooks) integer indices -> (..., dim) float32 codes."""
        digits = (indices.long()[..., None] // self.basis.long()) % self.levels.long()
        half_width = self.levels // 2
        return ((digits.float() - half_width) / half_width).flatten(-2)

    def quantize_channels_first(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`quantize` for channel-first latents: (B, dim, ...) -> codes (B, dim, ...), indices
        (B, num_codebooks, ...)."""
        codes, indices = self.quantize(z.movedim(1, -1))
        return codes.movedim(-1, 1), indices.movedim(-1, 1)

    def indices_to_codes_channels_first(self, indices: torch.Tensor) -> torch.Tensor:
        """:meth:`indices_to_codes` for channel-first indices: (B, num_codebooks, ...) -> (B, dim, ...) float32."""
        return self.indices_to_codes(indices.movedim(1, -1)).movedim(-1, 1)
