"""diffusers autoencoders to compare with, built with their real architectures (random weights: speed only)."""

from __future__ import annotations

from typing import Callable

import diffusers
import torch


def _sd():
    return diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2,
    )


def _flux():
    return diffusers.AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=16, layers_per_block=2,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def _wan22():
    return diffusers.AutoencoderKLWan(
        base_dim=160, decoder_base_dim=256, z_dim=48, is_residual=True, in_channels=12, out_channels=12,
        patch_size=2, scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48,
    )


# name -> (modality, spatial x temporal compression, latent channels, constructor)
PEERS: dict[str, tuple[str, str, int, Callable[[], torch.nn.Module]]] = {
    "AutoencoderKL (SD)": ("image", "8x", 4, _sd),
    "AutoencoderKL (FLUX.1)": ("image", "8x", 16, _flux),
    "AutoencoderDC (f32c32)": ("image", "32x", 32, lambda: diffusers.AutoencoderDC()),
    "AutoencoderKLWan (2.1)": ("video", "8x8x4", 16, lambda: diffusers.AutoencoderKLWan()),
    "AutoencoderKLWan (2.2)": ("video", "16x16x4", 48, _wan22),
    "AutoencoderKLHunyuanVideo": ("video", "8x8x4", 16, lambda: diffusers.AutoencoderKLHunyuanVideo()),
}


def reconstruct(model, x: torch.Tensor) -> torch.Tensor:
    """Encode (posterior mode) + decode, the same work our ``forward`` does."""
    out = model.encode(x)
    z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out.latent  # DC-AE is deterministic
    return model.decode(z).sample
