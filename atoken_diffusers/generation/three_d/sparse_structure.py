"""The sparse-structure VAE of image-to-3D: 64^3 voxel occupancy <-> a small dense latent (16^3 x 8 by default).

Stage 1 of :class:`ATokenImageTo3DPipeline` generates this latent; the decoder turns it into occupancy logits, and
the voxels with a positive logit are where stage 2 places AToken latents. The grid is the one AToken's 3D packing
uses: (x, y, z) voxel indices in [0, 64) over [-0.5, 0.5)^3.

Encoder: a space-to-depth fold of ``downsample``^3 voxels into channels, a 1x1x1 convolution, residual 3x3x3
blocks, and a 3x3x3 convolution to the Gaussian posterior (mean, log-variance). Decoder: the mirror image, ending
in a depth-to-space unfold to per-voxel logits. Train with :func:`occupancy_loss` (binary cross-entropy + soft Dice,
the occupied voxels being a few percent of the grid) plus a small KL term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...layers.transformer_block import checkpoint_function
from ...tokens.patchify import grid_to_tokens, tokens_to_grid

RESOLUTION = 64

# hidden channels and residual blocks; "tiny" is for tests and CPU smoke runs.
STRUCTURE_VAE_PRESETS = {
    "tiny": dict(hidden_channels=32, num_blocks=0),
    "S": dict(hidden_channels=64, num_blocks=1),
    "B": dict(hidden_channels=128, num_blocks=2),
}


def coords_to_grid(coords: torch.Tensor, batch_size: int | None = None, resolution: int = RESOLUTION) -> torch.Tensor:
    """(N, 4) (batch, x, y, z) or (N, 3) voxel indices -> (B, 1, R, R, R) float occupancy (1 occupied, 0 empty)."""
    if coords.ndim != 2 or coords.shape[1] not in (3, 4):
        raise ValueError(f"coords must be (N, 3) or (N, 4) voxel indices; got {tuple(coords.shape)}.")
    coords = coords.long()
    if coords.shape[1] == 3:
        coords = F.pad(coords, (1, 0))
    b = batch_size if batch_size is not None else (int(coords[:, 0].max()) + 1 if coords.numel() else 1)
    grid = torch.zeros(b, 1, resolution, resolution, resolution, device=coords.device)
    grid[coords[:, 0], 0, coords[:, 1], coords[:, 2], coords[:, 3]] = 1
    return grid


def grid_to_coords(occupancy: torch.Tensor) -> torch.Tensor:
    """(B, 1, R, R, R) boolean occupancy -> (N, 4) int64 (batch, x, y, z), sorted."""
    return occupancy[:, 0].nonzero()


def occupancy_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy + (1 - soft Dice), both over the whole grid of each sample, averaged over the batch."""
    bce = F.binary_cross_entropy_with_logits(logits.float(), target.float())
    prob = torch.sigmoid(logits.float()).flatten(1)
    t = target.float().flatten(1)
    dice = (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)
    return bce + (1 - dice).mean()


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean occupancies of the same shape."""
    a, b = a.bool(), b.bool()
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 1.0


class ResBlock3d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        groups = 8 if channels % 8 == 0 else 1
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv1 = nn.Conv3d(channels, channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv3d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


def space_to_depth(x: torch.Tensor, f: int) -> torch.Tensor:
    """(B, C, R, R, R) -> (B, C f^3, R/f, R/f, R/f): every f^3 cube becomes one cell (the project's patchify)."""
    b, _, d, h, w = x.shape
    feats = grid_to_tokens(x, (f, f, f)).feats
    return feats.view(b, d // f, h // f, w // f, -1).permute(0, 4, 1, 2, 3)


def depth_to_space(x: torch.Tensor, f: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`."""
    b, cf, d, h, w = x.shape
    feats = x.permute(0, 2, 3, 4, 1).reshape(b * d * h * w, cf)
    return tokens_to_grid(feats, (b, d, h, w), (f, f, f), channels=cf // f**3)


class SparseStructureVAE(ModelMixin, ConfigMixin):
    r"""Occupancy VAE: (B, 1, 64, 64, 64) -> (B, latent_channels, 16, 16, 16) and back to occupancy logits.

    Args:
        resolution: voxel grid side (64, AToken's 3D grid).
        downsample: voxels per latent cell along each axis (4 -> a 16^3 latent).
        latent_channels: channels of the latent (8).
        hidden_channels, num_blocks: width and residual 3x3x3 blocks of encoder and decoder.
        occupancy_prior: initial occupied fraction (sets the output bias, so training starts calibrated).
        latents_mean, latents_std: per-channel statistics of the posterior means of the training set (written at the
            end of training); the structure generator works in ``(z - mean) / std``.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, resolution: int = RESOLUTION, downsample: int = 4, latent_channels: int = 8,
                 hidden_channels: int = 64, num_blocks: int = 1, occupancy_prior: float = 0.03,
                 latents_mean: list | None = None, latents_std: list | None = None):
        super().__init__()
        if resolution % downsample:
            raise ValueError(f"resolution ({resolution}) must be divisible by downsample ({downsample}).")
        fold = downsample**3
        self.enc_in = nn.Conv3d(fold, hidden_channels, 1)
        self.enc_blocks = nn.Sequential(*(ResBlock3d(hidden_channels) for _ in range(num_blocks)))
        self.enc_out = nn.Conv3d(hidden_channels, 2 * latent_channels, 3, padding=1)
        self.dec_in = nn.Conv3d(latent_channels, hidden_channels, 3, padding=1)
        self.dec_blocks = nn.Sequential(*(ResBlock3d(hidden_channels) for _ in range(num_blocks)))
        self.dec_out = nn.Conv3d(hidden_channels, fold, 1)
        nn.init.constant_(self.dec_out.bias, float(torch.logit(torch.tensor(occupancy_prior))))
        self.gradient_checkpointing = False

    def _run_blocks(self, blocks: nn.Sequential, h: torch.Tensor) -> torch.Tensor:
        """Residual blocks in turn, each recomputed in the backward pass when gradient checkpointing is on."""
        checkpoint = checkpoint_function(self)
        for block in blocks:
            h = block(h) if checkpoint is None else checkpoint(block, h)
        return h

    @property
    def latent_resolution(self) -> int:
        return self.config.resolution // self.config.downsample

    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        mean, std = self.config.latents_mean, self.config.latents_std
        if mean is None or std is None:
            return None
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)

    def encode(self, occupancy: torch.Tensor) -> DiagonalGaussianDistribution:
        """(B, 1, R, R, R) occupancy in {0, 1} -> posterior over (B, latent_channels, R/d, R/d, R/d)."""
        r = self.config.resolution
        if occupancy.ndim != 5 or occupancy.shape[1:] != (1, r, r, r):
            raise ValueError(f"occupancy must be (B, 1, {r}, {r}, {r}); got {tuple(occupancy.shape)}.")
        x = space_to_depth(occupancy.to(self.dtype) * 2 - 1, self.config.downsample)
        h = self.enc_out(F.silu(self._run_blocks(self.enc_blocks, self.enc_in(x))))
        return DiagonalGaussianDistribution(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_channels, r, r, r) latents -> (B, 1, R, R, R) occupancy logits (occupied where > 0)."""
        c, r = self.config.latent_channels, self.latent_resolution
        if z.ndim != 5 or z.shape[1:] != (c, r, r, r):
            raise ValueError(f"z must be (B, {c}, {r}, {r}, {r}); got {tuple(z.shape)}.")
        h = self.dec_out(F.silu(self._run_blocks(self.dec_blocks, self.dec_in(z.to(self.dtype)))))
        return depth_to_space(h, self.config.downsample)

    def forward(self, occupancy: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, DiagonalGaussianDistribution]:
        """(logits, posterior) of a reconstruction; samples the posterior unless ``sample_posterior`` is False."""
        posterior = self.encode(occupancy)
        if sample_posterior:
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator).to(
                posterior.mean)
        else:
            z = posterior.mean
        return self.decode(z), posterior
