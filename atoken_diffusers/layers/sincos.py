"""Absolute sin/cos position embedding of integer positions (the Gaussian decoder's and the image-to-3D flows')."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sincos_position_embedding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N, A) integer positions on A axes -> (N, dim) float32 embedding.

    Per axis a the values [sin(p_a * w_0..w_{f-1}), cos(p_a * w_0..w_{f-1})] with f = dim // A // 2 and
    w_k = 10000^(-k/f), axis after axis, zero-padded to ``dim``. Built in float32 on every call rather than stored:
    a bf16 table would blur positions up to 63.
    """
    axes = positions.shape[-1]
    freq_dim = dim // axes // 2
    if freq_dim == 0:
        raise ValueError(f"dim ({dim}) must be at least {2 * axes} for a {axes}-axis sin/cos embedding.")
    freqs = 1.0 / 10000 ** (torch.arange(freq_dim, device=positions.device, dtype=torch.float32) / freq_dim)
    angles = positions.float()[..., None] * freqs  # (N, A, f)
    embedding = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
    return F.pad(embedding, (0, dim - embedding.shape[-1]))
