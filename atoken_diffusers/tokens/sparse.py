"""The one token-set format every modality shares: features plus integer (b, t, x, y, z) coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class SparseTokens:
    """A packed set of tokens from one or more samples.

    Attributes:
        feats: (N, C) token features (patch vectors, latents or decoded patches).
        coords: (N, 5) integer coordinates ``(b, t, x, y, z)``: ``b`` the sample index in the packed batch,
            ``t`` the latent frame, ``x`` the latent row (height direction), ``y`` the latent column (width
            direction), ``z`` the depth (0 for images and videos, voxel depth for 3D assets).

    Rows may come in any order and samples may have different sizes: every model entry point keeps the
    input row order in its output.
    """

    feats: torch.Tensor
    coords: torch.Tensor

    def __post_init__(self):
        if self.feats.ndim != 2:
            raise ValueError(f"SparseTokens.feats must be (N, C); got shape {tuple(self.feats.shape)}.")
        if self.coords.ndim != 2 or self.coords.shape[1] != 5:
            raise ValueError(
                f"SparseTokens.coords must be (N, 5) with columns (b, t, x, y, z); got shape {tuple(self.coords.shape)}."
            )
        if self.coords.shape[0] != self.feats.shape[0]:
            raise ValueError(
                f"SparseTokens.feats has {self.feats.shape[0]} rows but coords has {self.coords.shape[0]}; they must match."
            )
        if self.coords.dtype.is_floating_point or self.coords.dtype == torch.bool:
            raise ValueError(f"SparseTokens.coords must be an integer tensor; got {self.coords.dtype}.")
        self.coords = self.coords.long()

    @property
    def num_tokens(self) -> int:
        return self.feats.shape[0]

    @property
    def batch_size(self) -> int:
        return int(self.coords[:, 0].max().item()) + 1 if self.num_tokens else 0

    def replace(self, feats: torch.Tensor) -> "SparseTokens":
        """The same coordinates with new features (one row per token)."""
        return SparseTokens(feats, self.coords)

    def shifted(self, offset: tuple[int, int]) -> "SparseTokens":
        """The tokens moved by (rows, cols) in x and y (e.g. a spatial tile's place in its whole image)."""
        if tuple(offset) == (0, 0):
            return self
        coords = self.coords.clone()
        coords[:, 2] += offset[0]
        coords[:, 3] += offset[1]
        return SparseTokens(self.feats, coords)

    def to(self, *args, **kwargs) -> "SparseTokens":
        """Move/cast the features; coordinates only follow the device."""
        feats = self.feats.to(*args, **kwargs)
        return SparseTokens(feats, self.coords.to(feats.device))

    def select(self, mask_or_index: torch.Tensor) -> "SparseTokens":
        return SparseTokens(self.feats[mask_or_index], self.coords[mask_or_index])

    @staticmethod
    def cat(parts: list["SparseTokens"]) -> "SparseTokens":
        """Pack token sets into one batch; sample indices are renumbered so the parts stay separate."""
        feats, coords, offset = [], [], 0
        for part in parts:
            c = part.coords.clone()
            c[:, 0] += offset
            offset += part.batch_size
            feats.append(part.feats)
            coords.append(c)
        return SparseTokens(torch.cat(feats), torch.cat(coords))

    @staticmethod
    def from_voxels(coords_xyz: torch.Tensor, feats: torch.Tensor, batch_index: int = 0, t: int = 0) -> "SparseTokens":
        """Tokens of one 3D asset: ``coords_xyz`` (N, 3) voxel indices in [0, 64), ``feats`` (N, C)."""
        if coords_xyz.ndim != 2 or coords_xyz.shape[1] != 3:
            raise ValueError(f"coords_xyz must be (N, 3) voxel indices (x, y, z); got {tuple(coords_xyz.shape)}.")
        n = coords_xyz.shape[0]
        lead = torch.tensor([batch_index, t], device=coords_xyz.device).expand(n, 2)
        return SparseTokens(feats, torch.cat([lead, coords_xyz.long()], dim=1))
