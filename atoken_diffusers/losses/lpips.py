"""LPIPS (Zhang et al. 2018) with the VGG16 backbone: unit-normalised activations at five layers, squared differences
weighted per channel by 1x1 "linear" heads, averaged over space and summed over layers.

The backbone loads a torchvision-format VGG16 file and the heads the LPIPS project's ``vgg.pth`` (keys
``linN.model.1.weight``), both from local paths. Without files, backbone and heads are random (tests only).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .vgg import VGGFeatures, read_weights

_LAYERS = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_CHANNELS = (64, 128, 256, 512, 512)
# LPIPS' input scaling for images in [-1, 1] (its published constants).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class LPIPS(nn.Module):
    def __init__(self, vgg_weights: str | Path | None = None, lin_weights: str | Path | None = None):
        super().__init__()
        self.backbone = VGGFeatures("vgg16", _LAYERS, weights=vgg_weights, imagenet_normalize=False)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)
        heads = torch.rand(len(_CHANNELS), max(_CHANNELS)) / 64  # random non-negative heads: still a distance
        weights = [heads[i, :c] for i, c in enumerate(_CHANNELS)]
        if lin_weights is not None:
            state = read_weights(lin_weights)
            try:
                weights = [state[f"lin{i}.model.1.weight"].flatten() for i in range(len(_CHANNELS))]
            except KeyError as err:
                raise ValueError(f"{lin_weights}: not an LPIPS vgg head file (missing {err}).") from None
        for i, w in enumerate(weights):
            self.register_buffer(f"lin{i}", w.float().view(1, -1, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS distance of reconstructions ``x`` to targets ``y``, (B, 3, H, W) in [-1, 1] (no gradient into y)."""
        fx = self.backbone((x - self.shift) / self.scale)
        with torch.no_grad():  # y is the target
            fy = self.backbone((y - self.shift) / self.scale)
        total = 0.0
        for i, (a, b) in enumerate(zip(fx, fy)):
            a = a / (a.norm(dim=1, keepdim=True) + 1e-10)
            b = b / (b.norm(dim=1, keepdim=True) + 1e-10)
            total = total + ((a - b).pow(2) * getattr(self, f"lin{i}")).sum(1).mean()
        return total
