"""Meshes -> multi-view renders -> 64^3 voxel features, on real meshes bundled with gradio."""

import importlib.util
import math
import os

import numpy as np
import pytest
import torch

from atoken_diffusers.three_d.camera import sphere_cameras
from atoken_diffusers.three_d.mesh import load_mesh, surface_distance
from atoken_diffusers.three_d.render_mesh import render_mesh
from atoken_diffusers.three_d.voxelize import (
    load_voxel_features,
    occupied_voxels,
    patch_features,
    save_voxel_features,
    voxel_features,
)

pytest.importorskip("trimesh")


def media_mesh(name: str) -> str:
    """A mesh bundled with gradio (``Duck.glb``) or with pyvista (``pyvista:airplane.ply``), read from disk."""
    if name.startswith("pyvista:"):
        spec = importlib.util.find_spec("pyvista")
        if spec is None:
            pytest.skip("pyvista is not installed")
        return os.path.join(spec.submodule_search_locations[0], "examples", name.split(":", 1)[1])
    gradio = pytest.importorskip("gradio")
    return os.path.join(os.path.dirname(gradio.__file__), "media_assets", "models3d", name)


@pytest.fixture(scope="module")
def duck():
    mesh = load_mesh(media_mesh("Duck.glb"))
    cams = sphere_cameras(24)
    renders = render_mesh(mesh, cams)
    coords = occupied_voxels(renders.points)
    return mesh, cams, renders, coords, voxel_features(coords, renders, cams)


def test_mesh_is_normalised(duck):
    mesh = duck[0].mesh
    lo, hi = mesh.bounds
    assert np.isclose((hi - lo).max(), 1.0) and np.allclose((lo + hi) / 2, 0, atol=1e-9)


@pytest.mark.parametrize("name", ["Duck.glb", "Bunny.obj", "face.obj", "pyvista:airplane.ply"])
def test_occupied_voxels_lie_on_the_surface(name):
    mesh = load_mesh(media_mesh(name))
    renders = render_mesh(mesh, sphere_cameras(12, size=128))
    coords = occupied_voxels(renders.points)
    assert coords.shape[0] > 500 and coords.min() >= 0 and coords.max() < 64
    centres = (coords.float() + 0.5) / 64 - 0.5
    # a voxel holding a surface point has its centre within half a voxel diagonal of the surface
    assert surface_distance(mesh, centres).max() <= math.sqrt(3) / 2 / 64 + 1e-6


def test_features_are_the_nearest_views_patches(duck):
    mesh, cams, renders, coords, feats = duck
    assert feats.shape == (coords.shape[0], 768) and 0 <= feats.min() and feats.max() <= 1
    # independent reference for a few voxels: nearest camera by depth, patch containing round(uv * 15)
    for i in torch.linspace(0, coords.shape[0] - 1, 7).long().tolist():
        centre = (coords[i].float() + 0.5) / 64 - 0.5
        depths = [float(c.world_to_camera(centre[None])[0, 2]) for c in cams]
        v = int(np.argmin(depths))
        u, w = cams[v].project(centre[None])[0][0] / 256
        col, row = int(torch.round(u * 15)), int(torch.round(w * 15))
        patch = renders.rgb[v, :, row * 16:(row + 1) * 16, col * 16:(col + 1) * 16]  # (3, 16, 16)
        torch.testing.assert_close(feats[i], patch.permute(1, 2, 0).reshape(-1))


def test_feature_colours_match_the_mesh(duck):
    feats = duck[4].view(-1, 256, 3)
    surface = feats[feats.sum(-1) > 0.05]  # drop black background pixels inside patches
    yellow = (surface[:, 0] > 0.8) & (surface[:, 1] > 0.6) & (surface[:, 2] < 0.3)
    orange = (surface[:, 0] > 0.8) & (surface[:, 1] < 0.6)
    assert (yellow | orange).float().mean() > 0.8  # the duck is yellow with an orange beak
    grey = load_mesh(media_mesh("Bunny.obj"))  # no colours: neutral grey
    r = render_mesh(grey, sphere_cameras(6, size=128))
    values = torch.unique(patch_features(r.rgb))
    assert torch.isclose(values[:, None], torch.tensor([0.0, 0.7])).any(1).all()


def test_voxel_file_roundtrip(duck, tmp_path):
    _, _, _, coords, feats = duck
    path = tmp_path / "duck.safetensors"
    save_voxel_features(path, coords, feats)
    c2, f2 = load_voxel_features(path)
    assert torch.equal(c2, coords) and (f2 - feats).abs().max() <= 0.5 / 255 + 1e-6
    assert path.stat().st_size < coords.shape[0] * 800  # uint8: ~771 bytes per voxel


def test_bad_meshes(tmp_path):
    (tmp_path / "garbage.glb").write_bytes(b"not a mesh at all")
    with pytest.raises(ValueError, match="could not be read|holds no triangle mesh"):
        load_mesh(tmp_path / "garbage.glb")
    (tmp_path / "empty.obj").write_text("")
    with pytest.raises(ValueError, match="holds no triangle mesh"):
        load_mesh(tmp_path / "empty.obj")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(ValueError, match="no triangle mesh|no faces"):
        load_mesh(tmp_path / "points.obj")
    (tmp_path / "nan.obj").write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(ValueError, match="non-finite"):
        load_mesh(tmp_path / "nan.obj")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mesh(tmp_path / "missing.obj")
    bad = tmp_path / "bad.safetensors"
    save_voxel_features(bad, torch.tensor([[0, 0, 70]]), torch.zeros(1, 768))
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        load_voxel_features(bad)
