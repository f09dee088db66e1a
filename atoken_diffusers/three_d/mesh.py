"""Meshes in: .glb/.gltf/.obj/.ply/.stl through trimesh, colours kept, normalised into [-0.5, 0.5]^3.

Colour sources, in order: a texture (UV-interpolated, nearest texel, times the material's base colour factor),
per-vertex colours (barycentric), per-face colours, else a neutral grey.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_GREY = 0.7


@dataclass
class ColoredMesh:
    """A triangle mesh with a way to colour any surface point.

    Attributes:
        mesh: the ``trimesh.Trimesh`` (normalised to [-0.5, 0.5]^3: centred on its bounding box, longest side 1).
        uv: (V, 2) texture coordinates or None; texture: (Ht, Wt, 3) float in [0, 1] or None.
        vertex_colors: (V, 3) in [0, 1] or None; face_colors: (F, 3) in [0, 1] or None.
    """

    mesh: object
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    vertex_colors: np.ndarray | None = None
    face_colors: np.ndarray | None = None

    def colors_at(self, faces: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """(K,) hit face indices and (K, 3) barycentric weights -> (K, 3) RGB in [0, 1]."""
        tri = self.mesh.faces[faces]  # (K, 3) vertex indices
        if self.texture is not None:
            uv = np.einsum("kj,kjc->kc", bary, self.uv[tri])
            h, w = self.texture.shape[:2]
            col = np.clip(np.floor((uv[:, 0] % 1.0) * w), 0, w - 1).astype(np.int64)
            row = np.clip(np.floor((1 - uv[:, 1] % 1.0) * h), 0, h - 1).astype(np.int64)  # uv origin: bottom-left
            return self.texture[row, col]
        if self.vertex_colors is not None:
            return np.einsum("kj,kjc->kc", bary, self.vertex_colors[tri])
        if self.face_colors is not None:
            return self.face_colors[faces]
        return np.full((len(faces), 3), DEFAULT_GREY)


def _texture_of(visual) -> tuple[np.ndarray | None, np.ndarray | None]:
    material = getattr(visual, "material", None)
    if material is None or getattr(visual, "uv", None) is None:
        return None, None
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    factor = getattr(material, "baseColorFactor", None)
    if image is None:
        return None, None
    tex = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if factor is not None:
        tex = tex * (np.asarray(factor[:3], dtype=np.float32) / 255.0 if np.max(factor) > 1 else np.asarray(factor[:3]))
    return np.asarray(visual.uv, dtype=np.float64), np.clip(tex, 0, 1)


def load_mesh(path: str | os.PathLike) -> ColoredMesh:
    """Load and normalise a mesh file; raises ``ValueError`` naming the problem for unusable files."""
    import trimesh

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"mesh file {path!r} does not exist.")
    try:
        loaded = trimesh.load(path, process=False)
    except Exception as err:
        raise ValueError(f"mesh file {path!r} could not be read: {err}") from err
    mesh = loaded.to_geometry() if isinstance(loaded, trimesh.Scene) else loaded
    if isinstance(mesh, trimesh.Trimesh) and path.lower().endswith((".glb", ".gltf")):
        # glTF is y-up; turn it z-up the way Blender's importer does (x, y, z) -> (x, -z, y), as the AToken 3D data was.
        mesh.apply_transform(np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], dtype=np.float64))
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.vertices) == 0:
        raise ValueError(f"mesh file {path!r} holds no triangle mesh (empty file, or only points/lines).")
    if len(mesh.faces) == 0:
        raise ValueError(f"mesh file {path!r} has vertices but no faces; a surface is needed.")
    if not np.isfinite(mesh.vertices).all():
        raise ValueError(f"mesh file {path!r} has non-finite vertex coordinates.")
    lo, hi = mesh.bounds
    extent = float((hi - lo).max())
    if extent <= 0:
        raise ValueError(f"mesh file {path!r} is degenerate (zero size).")
    mesh.apply_translation(-(lo + hi) / 2)
    mesh.apply_scale(1.0 / extent)

    out = ColoredMesh(mesh)
    visual = mesh.visual
    if getattr(visual, "kind", None) == "texture":
        out.uv, out.texture = _texture_of(visual)
        if out.texture is None and getattr(getattr(visual, "material", None), "main_color", None) is not None:
            out.face_colors = np.tile(np.asarray(visual.material.main_color[:3], np.float32) / 255.0, (len(mesh.faces), 1))
    elif getattr(visual, "kind", None) == "vertex":
        out.vertex_colors = np.asarray(visual.vertex_colors[:, :3], np.float32) / 255.0
    elif getattr(visual, "kind", None) == "face":
        out.face_colors = np.asarray(visual.face_colors[:, :3], np.float32) / 255.0
    return out


def surface_distance(mesh: ColoredMesh, points: torch.Tensor | np.ndarray) -> np.ndarray:
    """Unsigned distance of (N, 3) points to the mesh surface (for checks)."""
    import trimesh

    pts = points.cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    _, dist, _ = trimesh.proximity.closest_point(mesh.mesh, pts)
    return dist
