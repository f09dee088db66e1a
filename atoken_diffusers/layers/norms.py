"""Normalisation layers. All of them compute in float32 and return the input dtype, so bf16/fp16 runs stay stable."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm32(nn.LayerNorm):
    """LayerNorm evaluated in float32 (encoder blocks and heads: affine, eps 1e-6)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, w, b, self.eps).to(x.dtype)


class RMSNorm32(nn.Module):
    """RMSNorm x * rsqrt(mean(x^2) + eps) * weight, in float32 (decoder blocks); ``affine=False`` drops the weight."""

    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        out = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (out if self.weight is None else out * self.weight.float()).to(x.dtype)


class QKNorm(nn.Module):
    """Per-head L2 normalisation scaled by a learned gamma and sqrt(head_dim) (the decoder's QK-norm).

    Input (N, heads, head_dim); ``gamma`` has shape (heads, head_dim).
    """

    def __init__(self, heads: int, head_dim: int):
        super().__init__()
        self.scale = math.sqrt(head_dim)
        self.gamma = nn.Parameter(torch.ones(heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma.float() * self.scale).to(x.dtype)


def make_norm(kind: str, dim: int, eps: float = 1e-6, affine: bool = True) -> nn.Module:
    """``"layer"`` -> LayerNorm (weight and bias when ``affine``), ``"rms"`` -> RMSNorm (weight when ``affine``).
    adaLN blocks use ``affine=False``: the modulation supplies scale and shift."""
    if kind == "layer":
        return LayerNorm32(dim, eps=eps, elementwise_affine=affine)
    if kind == "rms":
        return RMSNorm32(dim, eps=eps, affine=affine)
    raise ValueError(f"norm kind must be 'layer' or 'rms'; got {kind!r}.")
