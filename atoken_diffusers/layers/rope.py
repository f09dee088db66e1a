"""4D rotary position embedding over (t, x, y, z).

With head dimension D there are n = D / 8 frequencies per axis, f_i = 10000^(-i / D) for i < n (AToken divides by D,
not by 2n). A head vector is read as D / 2 pairs (v[2m], v[2m + 1]); pairs 0..n-1 rotate by t * f, the next n by
x * f, then y * f, then z * f. Everything is computed in float32.
"""

from __future__ import annotations

import torch


def rope_frequencies(head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    if head_dim % 8:
        raise ValueError(f"4D RoPE needs a head dimension divisible by 8; got {head_dim}.")
    n = head_dim // 8
    return 1.0 / theta ** (torch.arange(n, device=device, dtype=torch.float32) / head_dim)


class RotaryTables:
    """cos/sin tables for a set of token positions, built once per forward pass and shared by all layers.

    Args:
        positions: (N, 4) positions (t, x, y, z) of the tokens.
        head_dim: attention head dimension D.
    """

    def __init__(self, positions: torch.Tensor, head_dim: int, theta: float = 10000.0):
        freqs = rope_frequencies(head_dim, theta, device=positions.device)
        angles = (positions.float()[:, :, None] * freqs).reshape(positions.shape[0], -1)  # (N, D/2)
        self.cos = angles.cos()[:, None, :]  # broadcast over heads
        self.sin = angles.sin()[:, None, :]

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate (N, heads, D) vectors; returns the input dtype."""
        xf = x.float().unflatten(-1, (-1, 2))
        a, b = xf[..., 0], xf[..., 1]
        out = torch.stack((a * self.cos - b * self.sin, a * self.sin + b * self.cos), dim=-1)
        return out.flatten(-2).to(x.dtype)
