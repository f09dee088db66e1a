"""Mesh -> voxel features -> AToken tokens -> decoded voxels -> Gaussian splat, and the 3D PSNR of the result.

    coords, feats = pack_mesh("Duck.glb")                       # 64^3 voxels, 768 features each
    result = reconstruct_mesh("Duck.glb", atoken, gs_decoder)   # Gaussians + PSNR/SSIM at held-out views
    result.gaussians.save_ply("duck.ply")
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..tokens.voxels import tokens_to_voxel_features, voxels_to_tokens
from ..utils.metrics import psnr, ssim
from .camera import Camera, sphere_cameras
from .gaussians import Gaussians
from .mesh import ColoredMesh, load_mesh
from .rasterizer import render_gaussians
from .render_mesh import render_mesh
from .voxelize import occupied_voxels, voxel_features

NUM_VIEWS = 24  # views on a Fibonacci sphere, radius 2, 40 degree field of view, 256 x 256
IMAGE_SIZE = 256


@dataclass
class MeshReconstruction:
    gaussians: Gaussians
    coords: torch.Tensor  # (N, 3) occupied voxels
    psnr: float  # Gaussian renders vs mesh renders at held-out views, [0, 1] scale
    ssim: float
    renders: torch.Tensor  # (V, 3, H, W) Gaussian renders at the held-out views
    targets: torch.Tensor  # (V, 3, H, W) mesh renders at the same views


def pack_mesh(mesh: str | os.PathLike | ColoredMesh, num_views: int = NUM_VIEWS, size: int = IMAGE_SIZE,
              progress: bool | None = False):
    """(N, 3) occupied voxel indices and (N, 768) features in [0, 1] of a mesh file (or loaded mesh). ``progress``
    counts the rendered views (None: a bar when stderr is a terminal; False, the default: none)."""
    mesh = mesh if isinstance(mesh, ColoredMesh) else load_mesh(mesh)
    cameras = sphere_cameras(num_views, size=size)
    renders = render_mesh(mesh, cameras, progress=progress)
    if renders.points.shape[0] == 0:
        raise ValueError("no view of the mesh hit its surface; is it empty or degenerate?")
    coords = occupied_voxels(renders.points)
    return coords, voxel_features(coords, renders, cameras)


def gaussians_from_voxels(atoken, gs_decoder, coords: torch.Tensor, feats: torch.Tensor) -> Gaussians:
    """Encode voxel features with AToken, decode the mean latent, and turn the decoded voxels into Gaussians."""
    device = atoken.device
    tokens = voxels_to_tokens(coords.to(device), feats.to(device))
    latents = atoken.encode_tokens(tokens).latent_dist.mean
    decoded = tokens_to_voxel_features(atoken.decode_tokens(tokens.replace(latents)).feats)
    gs_coords = torch.cat([torch.zeros_like(coords[:, :1]), coords], dim=1).to(device)
    out = gs_decoder(decoded.to(gs_decoder.dtype), gs_coords)
    return Gaussians(out.xyz.float(), out.features_dc.reshape(-1, 3).float(), out.scaling.float(),
                     out.rotation.float(), out.opacity.float())


def render_views(gaussians: Gaussians, cameras: list[Camera], background: float = 0.0) -> torch.Tensor:
    bg = (background,) * 3
    return torch.stack([render_gaussians(gaussians, cam, background=bg).rgb for cam in cameras])


@torch.no_grad()
def reconstruct_mesh(mesh: str | os.PathLike, atoken, gs_decoder, num_views: int = NUM_VIEWS,
                     eval_views: int = 8, size: int = IMAGE_SIZE, progress: bool | None = False) -> MeshReconstruction:
    """Full path from a mesh file to Gaussians, scored at ``eval_views`` held-out cameras (between the packing
    views on the sphere) against the mesh's own renders, on a black background. ``progress`` as in
    :func:`pack_mesh` (it counts the packing views)."""
    colored = load_mesh(mesh)
    coords, feats = pack_mesh(colored, num_views, size, progress=progress)
    gaussians = gaussians_from_voxels(atoken, gs_decoder, coords, feats)
    cameras = sphere_cameras(eval_views, size=size, offset=0.5)
    targets = render_mesh(colored, cameras).rgb
    renders = render_views(gaussians, cameras).clamp(0, 1)
    to_pm1 = lambda x: x * 2 - 1  # noqa: E731  (metrics take [-1, 1])
    return MeshReconstruction(gaussians, coords, psnr(to_pm1(renders), to_pm1(targets)),
                              ssim(to_pm1(renders), to_pm1(targets)), renders, targets)
