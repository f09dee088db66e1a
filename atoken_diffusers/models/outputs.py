"""Typed outputs of the AToken models' sparse entry points (the dense ones return diffusers' own outputs)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.utils import BaseOutput


@dataclass
class SparseEncoderOutput(BaseOutput):
    """Result of :meth:`AutoencoderAToken.encode_tokens`, every per-token tensor in the input row order.

    Attributes:
        latent_dist: Gaussian posterior over (N, latent_channels) token latents.
        features: (N, encoder_dim) encoder features after the final LayerNorm (what an MLLM consumes).
        embedding: (B, encoder_dim) L2-normalised pooled embedding per sample.
    """

    latent_dist: DiagonalGaussianDistribution
    features: torch.Tensor
    embedding: torch.Tensor
