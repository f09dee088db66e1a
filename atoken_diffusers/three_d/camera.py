"""Pinhole cameras and views on a sphere, shared by the mesh renderer and the Gaussian rasteriser.

Convention (OpenCV): a camera maps world points p to camera coordinates q = R p + t; the camera looks along +z, x
points right and y down in the image; pixel (u, v) = (fx * qx / qz + cx, fy * qy / qz + cy), with pixel centres
at integer + 0.5. Objects live in [-0.5, 0.5]^3 around the origin; world up is +z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class Camera:
    """Attributes:
    rotation: (3, 3) world-to-camera rotation R.
    translation: (3,) world-to-camera translation t.
    fx, fy, cx, cy: intrinsics in pixels.
    width, height: image size.
    """

    rotation: torch.Tensor
    translation: torch.Tensor
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def center(self) -> torch.Tensor:
        """Camera position in world coordinates."""
        return -self.rotation.t() @ self.translation

    def world_to_camera(self, points: torch.Tensor) -> torch.Tensor:
        """(N, 3) world points -> (N, 3) camera coordinates."""
        return points @ self.rotation.t().to(points) + self.translation.to(points)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3) world points -> (N, 2) pixel coordinates (u, v) and (N,) depths (camera z)."""
        q = self.world_to_camera(points)
        z = q[:, 2]
        uv = torch.stack([self.fx * q[:, 0] / z + self.cx, self.fy * q[:, 1] / z + self.cy], dim=1)
        return uv, z

    def rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Ray origins (H*W, 3) and unit directions (H*W, 3) in world space through the pixel centres, row-major."""
        v, u = torch.meshgrid(torch.arange(self.height) + 0.5, torch.arange(self.width) + 0.5, indexing="ij")
        d_cam = torch.stack([(u - self.cx) / self.fx, (v - self.cy) / self.fy, torch.ones_like(u)], dim=-1).reshape(-1, 3)
        d_world = d_cam @ self.rotation.float()  # R^T applied to row vectors
        d_world = d_world / d_world.norm(dim=-1, keepdim=True)
        return self.center.float().expand_as(d_world), d_world


def look_at(eye: torch.Tensor, target: torch.Tensor | None = None, up: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """World-to-camera (R, t) for a camera at ``eye`` looking at ``target`` (origin) with world ``up`` (+z)."""
    eye = eye.double()
    target = torch.zeros(3, dtype=torch.float64) if target is None else target.double()
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if up is None else up.double()
    forward = target - eye
    forward = forward / forward.norm()
    if torch.cross(forward, up, dim=0).norm() < 1e-6:  # looking straight up/down: pick another up
        up = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    right = torch.cross(forward, up, dim=0)
    right = right / right.norm()
    down = torch.cross(forward, right, dim=0)
    rotation = torch.stack([right, down, forward])  # rows: camera x, y, z axes in world coordinates
    translation = -rotation @ eye
    return rotation.float(), translation.float()


def sphere_cameras(num_views: int = 24, radius: float = 2.0, fov_degrees: float = 40.0, size: int = 256,
                   offset: float = 0.0) -> list[Camera]:
    """``num_views`` cameras on a Fibonacci sphere of ``radius`` looking at the origin (``offset`` in [0, 1) shifts
    the spiral, giving held-out views between the training ones)."""
    focal = 0.5 * size / math.tan(math.radians(fov_degrees) / 2)
    golden = math.pi * (3 - math.sqrt(5))
    cams = []
    for i in range(num_views):
        zc = 1 - 2 * (i + 0.5 + offset) / num_views
        zc = max(min(zc, 1.0), -1.0)
        r = math.sqrt(max(0.0, 1 - zc * zc))
        phi = golden * (i + offset)
        eye = torch.tensor([r * math.cos(phi), r * math.sin(phi), zc]) * radius
        rotation, translation = look_at(eye)
        cams.append(Camera(rotation, translation, focal, focal, size / 2, size / 2, size, size))
    return cams
