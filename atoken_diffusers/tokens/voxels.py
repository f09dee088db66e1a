"""3D assets as tokens: occupied 64^3 voxels with features in [0, 1] (DESIGN section 6).

A voxel token is a patch vector whose first ph x pw x C values (768 for AToken's 16 x 16 RGB patches) are the
voxel's features mapped to [-1, 1] and whose other values (the 3 further frames of the 4-frame group, 2304) are zero,
exactly like an image patch. The sizes follow the model's ``patch_size`` (``model.patch_size``, default AToken's
(4, 16, 16)) and ``in_channels``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from .patchify import PATCH_SIZE
from .sparse import SparseTokens


def voxel_feature_dim(patch_size: Sequence[int] = PATCH_SIZE, channels: int = 3) -> int:
    """Features per voxel: one frame of a patch (16 x 16 x 3 = 768 for AToken)."""
    return patch_size[1] * patch_size[2] * channels


VOXEL_FEATURES = voxel_feature_dim()  # AToken's 768, for callers without a model at hand


def voxels_to_tokens(coords_xyz: torch.Tensor, feats: torch.Tensor, batch_index: int = 0,
                     patch_size: Sequence[int] = PATCH_SIZE, channels: int = 3) -> SparseTokens:
    """Token set of one 3D asset.

    Args:
        coords_xyz: (N, 3) occupied voxel indices (x, y, z) in [0, 64).
        feats: (N, F) voxel features in [0, 1], F = ph * pw * channels (768).
        patch_size, channels: the model's ``patch_size`` and ``in_channels`` (AToken's (4, 16, 16) and 3).
    Returns:
        tokens with (N, prod(patch_size) * channels) patch vectors (3072).
    """
    width = voxel_feature_dim(patch_size, channels)
    if feats.ndim != 2 or feats.shape[1] != width:
        raise ValueError(f"feats must be (N, {width}) voxel features; got {tuple(feats.shape)}.")
    if feats.is_floating_point() and (feats.min() < -1e-3 or feats.max() > 1 + 1e-3):
        raise ValueError("feats must lie in [0, 1] (rendered patch colours); rescale them first.")
    patch = F.pad(feats.float() * 2 - 1, (0, math.prod(patch_size) * channels - width))
    return SparseTokens.from_voxels(coords_xyz, patch, batch_index=batch_index)


def tokens_to_voxel_features(patches: torch.Tensor, patch_size: Sequence[int] = PATCH_SIZE,
                             channels: int = 3) -> torch.Tensor:
    """Decoded (N, 3072) patch vectors -> (N, 768) voxel features in the decoder's [-1, 1] range (the Gaussian
    decoder's input); ``patch_size``/``channels`` as in :func:`voxels_to_tokens`."""
    return patches[:, : voxel_feature_dim(patch_size, channels)]
