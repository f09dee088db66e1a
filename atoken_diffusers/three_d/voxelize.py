"""Voxel features of a 3D asset, as AToken's official packing script defines them (DESIGN section 6).

* Occupancy: a voxel of the 64^3 grid over [-0.5, 0.5)^3 is occupied when a surface point unprojected from a depth
  map falls inside it.
* Features: every view's 256 x 256 render is cut into 16 x 16 patches of 16 x 16 pixels; a patch's feature is its
  768 values flattened (row, column, channel), in [0, 1]. An occupied voxel takes the patch feature of the view whose
  camera sees the voxel centre at the smallest depth, sampled nearest on the 16 x 16 patch grid (as
  ``grid_sample(mode="nearest", align_corners=True)`` does: index = round(uv * 15)); zeros when out of view.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file

from ..tokens.patchify import patchify
from ..utils.atomic import write_atomically
from .camera import Camera
from .render_mesh import MeshRenders

RESOLUTION = 64
PATCH = 16


def occupied_voxels(points: torch.Tensor, resolution: int = RESOLUTION) -> torch.Tensor:
    """(P, 3) surface points in [-0.5, 0.5]^3 -> (N, 3) int64 occupied voxel indices, sorted by (x, y, z)."""
    idx = torch.floor((points + 0.5) * resolution).long().clamp(0, resolution - 1)
    return torch.unique(idx, dim=0)


def patch_features(rgb: torch.Tensor, patch: int = PATCH) -> torch.Tensor:
    """(V, 3, H, W) renders -> (V, H/patch, W/patch, patch*patch*3) patch vectors ordered (row, column, channel)."""
    return patchify(rgb[:, :, None], (1, patch, patch))[:, 0]


def voxel_features(coords: torch.Tensor, renders: MeshRenders, cameras: list[Camera],
                   resolution: int = RESOLUTION) -> torch.Tensor:
    """(N, 3) voxel indices -> (N, 768) features in [0, 1] from the nearest view's patch."""
    feats = patch_features(renders.rgb)  # (V, gh, gw, 768)
    centers = (coords.float() + 0.5) / resolution - 0.5
    uv, depth = zip(*(cam.project(centers) for cam in cameras))
    uv, depth = torch.stack(uv), torch.stack(depth)  # (V, N, 2), (V, N)
    nearest = depth.argmin(0)
    rows = torch.arange(coords.shape[0])
    size = torch.tensor([cameras[0].width, cameras[0].height], dtype=torch.float32)
    grid = torch.tensor([feats.shape[2], feats.shape[1]])
    cell = torch.round(uv[nearest, rows] / size * (grid - 1)).long()  # (N, 2) = (column, row)
    valid = ((cell >= 0) & (cell < grid)).all(1)
    cell = torch.minimum(cell.clamp(min=0), grid - 1)
    out = feats[nearest, cell[:, 1], cell[:, 0]]  # (N, 768)
    return out * valid[:, None]


def save_voxel_features(path: str | os.PathLike, coords: torch.Tensor, feats: torch.Tensor) -> None:
    """Write (N, 3) voxel indices and (N, 768) features in [0, 1] as a small safetensors file (uint8 both; the
    features come from 8-bit renders), atomically."""
    if coords.ndim != 2 or coords.shape[1] != 3 or feats.shape != (coords.shape[0], 768):
        raise ValueError(f"coords must be (N, 3) and feats (N, 768); got {tuple(coords.shape)} and {tuple(feats.shape)}.")
    tensors = {"coords": coords.to(torch.uint8).contiguous(),
               "feats": (feats.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()}
    write_atomically(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "atoken-voxels",
                                                                        "resolution": str(RESOLUTION)}))


def load_voxel_features(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a file written by :func:`save_voxel_features`: (N, 3) int64 coords, (N, 768) float32 in [0, 1]."""
    data = load_file(path)
    if set(data) != {"coords", "feats"}:
        raise ValueError(f"{path} is not an AToken voxel-feature file (expected tensors 'coords' and 'feats').")
    coords = data["coords"].long()
    if coords.numel() and coords.max() >= RESOLUTION:
        raise ValueError(f"{path}: voxel coordinates must lie in [0, {RESOLUTION}).")
    return coords, data["feats"].float() / 255
