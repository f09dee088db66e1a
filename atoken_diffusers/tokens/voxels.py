"""3D assets as tokens: occupied 64^3 voxels with 768-dim features in [0, 1] (DESIGN section 6).

A voxel token is a patch vector whose first 768 values are the voxel's features mapped to [-1, 1] and whose other
2304 values are zero, exactly like an image patch (the first frame of a 4-frame group).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .sparse import SparseTokens

VOXEL_FEATURES = 768
PATCH_DIM = 3072


def voxels_to_tokens(coords_xyz: torch.Tensor, feats: torch.Tensor, batch_index: int = 0) -> SparseTokens:
    """Token set of one 3D asset.

    Args:
        coords_xyz: (N, 3) occupied voxel indices (x, y, z) in [0, 64).
        feats: (N, 768) voxel features in [0, 1].
    """
    if feats.ndim != 2 or feats.shape[1] != VOXEL_FEATURES:
        raise ValueError(f"feats must be (N, {VOXEL_FEATURES}) voxel features; got {tuple(feats.shape)}.")
    if feats.is_floating_point() and (feats.min() < -1e-3 or feats.max() > 1 + 1e-3):
        raise ValueError("feats must lie in [0, 1] (rendered patch colours); rescale them first.")
    patch = F.pad(feats.float() * 2 - 1, (0, PATCH_DIM - VOXEL_FEATURES))
    return SparseTokens.from_voxels(coords_xyz, patch, batch_index=batch_index)


def tokens_to_voxel_features(patches: torch.Tensor) -> torch.Tensor:
    """Decoded (N, 3072) patch vectors -> (N, 768) voxel features in the decoder's [-1, 1] range (the Gaussian
    decoder's input)."""
    return patches[:, :VOXEL_FEATURES]
