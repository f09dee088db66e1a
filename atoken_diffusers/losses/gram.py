"""Gram-matrix loss (AToken's adversarial-free texture term): squared Frobenius distance between normalised Gram
matrices of a frozen network's features, summed over layers."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .vgg import VGGFeatures


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) or (B, C, N) features -> (B, C, C) Gram matrices normalised by C * N (computed in float32)."""
    f = features.float().flatten(2)
    return f @ f.transpose(1, 2) / (f.shape[1] * f.shape[2])


def gram_distance(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sum over layers of the squared Frobenius distance of the Gram matrices, averaged over the batch."""
    total = 0.0
    for fa, fb in zip(a, b, strict=True):
        total = total + (gram_matrix(fa) - gram_matrix(fb)).pow(2).sum(dim=(1, 2)).mean()
    return total


class GramLoss(nn.Module):
    """Gram loss of reconstructions against targets (images in [-1, 1]) through a frozen feature network
    (VGG19 by default; any module returning a list of feature maps works)."""

    def __init__(self, network: nn.Module | None = None):
        super().__init__()
        self.network = network if network is not None else VGGFeatures("vgg19")

    def forward(self, reconstruction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self.network(target)
        return gram_distance(self.network(reconstruction), target_feats)
