"""Multi-view RGB and depth renders of a mesh by ray casting (trimesh + Embree): headless, no GL, same result on
any machine. Colours are the surface albedo (texture / vertex / face colours), unlit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..utils.progress import progress_bar
from .camera import Camera
from .mesh import ColoredMesh


@dataclass
class MeshRenders:
    """Attributes:
    rgb: (V, 3, H, W) colours in [0, 1] (``background`` where no surface is hit).
    depth: (V, H, W) camera-space z of the visible surface, 0 where nothing is hit.
    points: (P, 3) world positions of every visible surface sample (the unprojected depth).
    """

    rgb: torch.Tensor
    depth: torch.Tensor
    points: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        return self.depth > 0


def render_mesh(mesh: ColoredMesh, cameras: list[Camera], background: float = 0.0,
                progress: bool | None = False) -> MeshRenders:
    """Ray-cast every pixel centre of every camera, one Embree call per view: measured 2x faster than one call for
    all views (a view's rays stay cache-local), and it lets ``progress`` count views (see
    :func:`~atoken_diffusers.utils.progress.progress_bar`; off by default)."""
    import trimesh

    if not cameras:
        raise ValueError("cameras is empty; pass at least one view (see sphere_cameras).")
    h, w = cameras[0].height, cameras[0].width
    n = h * w
    hits = []
    for v, cam in enumerate(progress_bar(cameras, desc="render views", unit="view", enabled=progress)):
        origins, directions = cam.rays()
        loc, ray, tri = mesh.mesh.ray.intersects_location(origins.numpy(), directions.numpy(), multiple_hits=False)
        hits.append((loc.reshape(-1, 3), ray + v * n, tri))  # ray numbers of all views in one index space
    locations, ray_index, tri_index = (np.concatenate(parts) for parts in zip(*hits))

    rgb = np.full((len(cameras) * n, 3), background, dtype=np.float32)
    depth = np.zeros(len(cameras) * n, dtype=np.float32)
    if len(ray_index):
        bary = trimesh.triangles.points_to_barycentric(mesh.mesh.triangles[tri_index], locations)
        rgb[ray_index] = mesh.colors_at(tri_index, np.clip(bary, 0, 1))
        view = ray_index // n
        rot = np.stack([c.rotation.numpy() for c in cameras])[view]  # (K, 3, 3)
        trans = np.stack([c.translation.numpy() for c in cameras])[view]
        depth[ray_index] = np.einsum("kj,kj->k", rot[:, 2], locations) + trans[:, 2]
    rgb_t = torch.from_numpy(rgb).view(len(cameras), h, w, 3).permute(0, 3, 1, 2).contiguous()
    return MeshRenders(rgb_t, torch.from_numpy(depth).view(len(cameras), h, w), torch.from_numpy(locations).float())
