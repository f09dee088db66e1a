"""Surfels from voxel occupancy: an analytic Gaussian per occupied voxel, the prior of a Gaussian decoder that has
seen few meshes (``ATokenGaussianDecoder(surfel_prior=...)``).

The occupied voxels of a 64^3 grid are the cells a surface passes through, so the voxels around one of them trace
the surface: their centroid lies on it (the voxel centre itself may sit half a voxel off) and the direction in which
they spread least is its normal. A flat Gaussian there (wide along the surface, thin across it) renders as a solid
sheet whose silhouette stays as sharp as the voxels allow; a round one of the same width swells every silhouette by
its radius. Measured on gradio's Duck.glb (8 held-out views, 256 px, before any learning): round Gaussians at the
voxel centres 17.9-19.0 dB, flat ones at the centres 19.2, flat ones at the neighbours' centroid 23.4 (its
features straight from the renders; through atoken-small 23.6).
"""

from __future__ import annotations

import torch

from .gaussians import matrix_to_quaternion

RADIUS = 2  # neighbourhood: the voxels whose offset has length <= RADIUS + 0.5 (81 of them, the voxel included)
# Packing renders have a black background (three_d/render_mesh.py), so a voxel on a silhouette gets a patch that is
# partly black: pixels whose brightest channel is below this are left out of the surfel's colour (all of them dark:
# the plain mean). Mean 3D PSNR on the training meshes' other views, by threshold: none 24.59 dB, 0.02 25.51, 0.05
# 25.91, 0.1 26.24, 0.2 26.39; 0.1 keeps dark greys that are surface colours for 0.15 dB less.
BACKGROUND = 0.1


def _neighbour_offsets(radius: int, device: torch.device) -> torch.Tensor:
    r = torch.arange(-radius, radius + 1, device=device)
    offsets = torch.cartesian_prod(r, r, r)
    return offsets[offsets.float().norm(dim=1) <= radius + 0.5]


def surface_frames(coords: torch.Tensor, resolution: int, radius: int = RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """Local surface of every occupied voxel from the occupied voxels within ``radius`` of it (same sample only).

    Args:
        coords: (N, 4) integer (batch, x, y, z) voxel coordinates, each voxel once.
    Returns:
        frames: (N, 3, 3) rotations whose columns are the two tangents (most spread first) and the normal, det +1.
        centroid: (N, 3) offset of the neighbours' centroid from the voxel centre, in voxels.
    """
    coords = coords.long()
    base = resolution + 2 * radius  # padded side, so that neighbours off the grid get keys of their own (never hit)

    def key(batch: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
        xyz = xyz + radius
        return ((batch * base + xyz[..., 0]) * base + xyz[..., 1]) * base + xyz[..., 2]

    keys, _ = key(coords[:, 0], coords[:, 1:]).sort()
    offsets = _neighbour_offsets(radius, coords.device)                       # (K, 3)
    wanted = key(coords[:, None, 0], coords[:, None, 1:] + offsets)           # (N, K)
    found = keys[torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)] == wanted
    weight = found.to(torch.float32)
    d = offsets.to(torch.float32)
    count = weight.sum(1, keepdim=True)                                       # >= 1: the voxel itself
    centroid = weight @ d / count
    second = (weight @ (d[:, :, None] * d[:, None, :]).flatten(1)).view(-1, 3, 3) / count[..., None]
    cov = second - centroid[:, :, None] * centroid[:, None, :]
    _, vectors = torch.linalg.eigh(cov)                                       # ascending: normal first
    frames = vectors.flip(-1)
    frames = frames * torch.linalg.det(frames).sign()[:, None, None]          # a rotation, not a reflection
    return frames, centroid


def surfels(coords: torch.Tensor, feats: torch.Tensor, resolution: int, tangent: float, normal: float,
            smoothing: float) -> dict[str, torch.Tensor]:
    """The analytic Gaussian of every voxel (float32), before any learned correction.

    Args:
        coords: (N, 4) (batch, x, y, z) voxel coordinates.
        feats: (N, C) voxel features in [-1, 1] whose channels are pixels' (r, g, b) triples (AToken: a 16 x 16 RGB
            patch of the view that sees the voxel); the surfel takes the mean colour of those not black
            (``BACKGROUND``).
        tangent, normal: standard deviations along the surface and across it, in voxels.
        smoothing: how far the centre moves from the voxel centre to the neighbours' centroid (0: not, 1: all the way).
    Returns:
        {"centre": (N, 3) in [0, 1]^3 grid units, "frame": (N, 3, 3), "quaternion": (N, 4) w first,
        "scale": (N, 3) grid units, "rgb": (N, 3) in [0, 1]}.
    """
    frames, centroid = surface_frames(coords, resolution)
    centre = (coords[:, 1:].float() + 0.5 + smoothing * centroid) / resolution
    pixels = (feats.float().unflatten(1, (-1, 3)) + 1) / 2                   # (N, P, 3) in [0, 1]
    lit = (pixels.amax(-1, keepdim=True) > BACKGROUND).float()
    count = lit.sum(1)
    rgb = torch.where(count > 0, (pixels * lit).sum(1) / count.clamp_min(1), pixels.mean(1))
    scale = torch.tensor([tangent, tangent, normal], device=feats.device) / resolution
    return {"centre": centre, "frame": frames, "quaternion": matrix_to_quaternion(frames),
            "scale": scale.expand(len(coords), 3), "rgb": rgb}
