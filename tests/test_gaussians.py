"""3D Gaussians: the data type, .ply / .splat files, and the rasterisers (PyTorch always, gsplat when on CUDA)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from atoken_diffusers.three_d.camera import Camera, look_at, sphere_cameras
from atoken_diffusers.three_d.gaussians import SH_C0, Gaussians, quaternion_to_matrix, rgb_to_sh
from atoken_diffusers.three_d.rasterizer import gsplat_available, render_gaussians
from tests.conftest import assert_same_run

PLY_NAMES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
             "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
FIELDS = ("xyz", "features_dc", "scaling", "rotation", "opacity")


def random_gaussians(n: int, seed: int = 0, extent: float = 1.0, dtype: torch.dtype = torch.float32) -> Gaussians:
    gen = torch.Generator().manual_seed(seed)
    return Gaussians(
        xyz=(torch.rand(n, 3, generator=gen) - 0.5) * extent,
        features_dc=rgb_to_sh(torch.rand(n, 3, generator=gen)),
        scaling=torch.exp(torch.empty(n, 3).uniform_(math.log(0.005), math.log(0.08), generator=gen)),
        rotation=torch.nn.functional.normalize(torch.randn(n, 4, generator=gen), dim=1),
        opacity=torch.rand(n, 1, generator=gen) * 0.98 + 0.01,
    ).to(dtype=dtype)


def blobs(xyz: list[list[float]], rgb: list[list[float]], scale: float = 0.05, opacity: float = 0.999) -> Gaussians:
    """Isotropic, nearly opaque Gaussians of the given colours."""
    n = len(xyz)
    return Gaussians(torch.tensor(xyz), rgb_to_sh(torch.tensor(rgb)), torch.full((n, 3), scale),
                     torch.tensor([[1.0, 0.0, 0.0, 0.0]] * n), torch.full((n, 1), opacity))


def pixel(camera: Camera, point: torch.Tensor) -> tuple[int, int]:
    """(row, column) of the pixel containing the projection of a world point."""
    uv, _ = camera.project(point[None])
    return int(uv[0, 1]), int(uv[0, 0])


# ----------------------------------------------------------------------------------------------------- the type

def test_validation_errors_name_the_field():
    g = random_gaussians(4)
    nan_xyz = g.xyz.clone()
    nan_xyz[1, 2] = math.nan
    bad = {"scaling": -g.scaling, "xyz": nan_xyz, "opacity": g.opacity + 1.5, "rotation": g.rotation[:, :3],
           "features_dc": g.features_dc[:3]}
    for field, value in bad.items():
        with pytest.raises(ValueError, match=rf"Gaussians\.{field}"):
            Gaussians(**{**{f: getattr(g, f) for f in FIELDS}, field: value})
    with pytest.raises(TypeError, match=r"Gaussians\.opacity"):
        Gaussians(g.xyz, g.features_dc, g.scaling, g.rotation, (g.opacity * 100).long())


def test_rgb_select_cat_to():
    g = random_gaussians(10)
    assert torch.allclose(g.rgb, (0.5 + SH_C0 * g.features_dc).clamp(0, 1))
    both = Gaussians.cat([g.select(slice(0, 4)), g.select(torch.arange(10) >= 4)])
    assert all(torch.equal(getattr(both, f), getattr(g, f)) for f in FIELDS)
    assert g.to(dtype=torch.float64).xyz.dtype == torch.float64 and len(g) == 10
    cov = g.covariance()
    rot = quaternion_to_matrix(g.rotation)
    assert torch.allclose(rot @ rot.transpose(1, 2), torch.eye(3).expand(10, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.eigvalsh(cov).sort(dim=1).values, g.scaling.square().sort(dim=1).values,
                          rtol=1e-3, atol=1e-8)


# ----------------------------------------------------------------------------------------------------- files

def test_ply_round_trip(tmp_path):
    g = random_gaussians(257)
    path = g.save_ply(tmp_path / "scene.ply")
    raw = path.read_bytes()
    header = raw[:raw.index(b"end_header\n") + len(b"end_header\n")].decode("ascii").splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 257"]
    assert header[3:-1] == [f"property float {name}" for name in PLY_NAMES]
    assert len(raw) == sum(len(line) + 1 for line in header) + 257 * 17 * 4
    assert [p.name for p in tmp_path.iterdir()] == ["scene.ply"]  # no temp file left behind

    stored = np.frombuffer(raw[-257 * 68:], dtype=[(name, "<f4") for name in PLY_NAMES])
    assert np.allclose(stored["opacity"], torch.logit(g.opacity[:, 0].double()).numpy(), atol=1e-5)
    assert np.allclose(stored["scale_1"], g.scaling[:, 1].log().numpy(), atol=1e-6)
    back = Gaussians.load_ply(path)
    for field in FIELDS:
        assert torch.allclose(getattr(back, field), getattr(g, field), rtol=0, atol=1e-6), field


def test_ply_reader_layouts(tmp_path):
    # As written by 3DGS training: a comment, higher-order SH after f_dc, raw unnormalised quaternions.
    names = PLY_NAMES[:9] + ["f_rest_0", "f_rest_1"] + PLY_NAMES[9:]
    record = np.zeros(2, dtype=[(name, "<f4") for name in names])
    record["rot_0"], record["rot_1"], record["scale_0"], record["opacity"] = [2.0, 0.0], [0.0, 3.0], [0.0, -1.0], 0.0
    trained = tmp_path / "trained.ply"
    trained.write_bytes(("ply\nformat binary_little_endian 1.0\ncomment from training\nelement vertex 2\n"
                         + "".join(f"property float {name}\n" for name in names) + "end_header\n").encode()
                        + record.tobytes())
    g = Gaussians.load_ply(trained)
    assert torch.equal(g.rotation, torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    assert torch.allclose(g.scaling[:, 0], torch.tensor([1.0, math.exp(-1.0)])) and torch.all(g.opacity == 0.5)

    # Other layouts are refused with the reason.
    ascii_ply = tmp_path / "ascii.ply"
    ascii_ply.write_text("ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n0\n")
    with pytest.raises(ValueError, match="binary_little_endian"):
        Gaussians.load_ply(ascii_ply)
    points = tmp_path / "points.ply"
    points.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n"
                       b"property float y\nproperty float z\nend_header\n" + np.zeros(3, "<f4").tobytes())
    with pytest.raises(ValueError, match="missing vertex properties"):
        Gaussians.load_ply(points)


def test_splat_round_trip(tmp_path):
    g = random_gaussians(100, seed=3)
    path = g.save_splat(tmp_path / "scene.splat")
    assert path.stat().st_size == 32 * 100
    back = Gaussians.load_splat(path)
    # Viewers expect the most important splats first: descending volume * opacity.
    order = torch.argsort(-(g.scaling.prod(dim=1) * g.opacity[:, 0]), stable=True)
    expected = g.select(order)
    assert torch.equal(back.xyz, expected.xyz) and torch.equal(back.scaling, expected.scaling)
    assert (back.rgb - expected.rgb).abs().max() <= 0.5 / 255 + 1e-6
    assert (back.opacity - expected.opacity).abs().max() <= 0.5 / 255 + 1e-6
    assert (back.rotation - expected.rotation).abs().max() < 2.5 / 128  # 1/128 steps, then renormalised


# ----------------------------------------------------------------------------------------------------- rendering

def test_single_red_gaussian_renders_red_on_background():
    camera = sphere_cameras(6, size=64)[2]
    point = torch.tensor([0.1, -0.05, 0.08])
    out = render_gaussians(blobs([point.tolist()], [[1.0, 0.0, 0.0]]), camera, background=(0.2, 0.4, 0.6))
    assert out.rgb.shape == (3, 64, 64) and out.alpha.shape == out.depth.shape == (1, 64, 64)
    row, col = pixel(camera, point)
    assert out.rgb[0, row, col] > 0.9 and out.rgb[1:, row, col].max() < 0.1
    assert out.alpha[0, row, col] > 0.9
    depth = camera.world_to_camera(point[None])[0, 2]
    assert torch.isclose(out.depth[0, row, col], depth, atol=1e-4)
    far = (row + 32) % 64, (col + 32) % 64
    assert torch.allclose(out.rgb[:, far[0], far[1]], torch.tensor([0.2, 0.4, 0.6]))
    assert out.alpha[0, far[0], far[1]] == 0


@pytest.mark.parametrize("near_first", [True, False])
def test_nearer_gaussian_wins(near_first):
    camera = sphere_cameras(6, size=64)[1]
    towards_camera = camera.center / camera.center.norm()
    near, far = 0.3 * towards_camera, -0.3 * towards_camera
    points, colors = [near.tolist(), far.tolist()], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    if not near_first:
        points, colors = points[::-1], colors[::-1]
    out = render_gaussians(blobs(points, colors, scale=0.04), camera)
    row, col = pixel(camera, near)
    assert pixel(camera, far) == (row, col)
    assert out.rgb[0, row, col] > 0.9 and out.rgb[1, row, col] < 0.1
    # Expected depth: the far Gaussian shows through the near one's alpha < 1 a little.
    depths = camera.world_to_camera(torch.stack([near, far]))[:, 2]
    assert depths[0] <= out.depth[0, row, col] < depths[0] + 0.1 * (depths[1] - depths[0])


def test_culled_gaussians_change_nothing():
    camera = sphere_cameras(6, size=48)[4]
    scene = random_gaussians(200, seed=5, extent=0.6)
    behind = camera.center * 1.5  # on the optical axis behind the camera: would project to the image centre
    side = camera.center + 2.0 * camera.rotation[2] + 5.0 * camera.rotation[0]  # in front, far off to the right
    extra = blobs([behind.tolist(), side.tolist()], [[0.0, 0.0, 1.0]] * 2, scale=0.2)
    base = render_gaussians(scene, camera)
    more = render_gaussians(Gaussians.cat([extra, scene]), camera)
    for name in ("rgb", "alpha", "depth"):
        assert_same_run(getattr(more, name), getattr(base, name), atol=1e-6, rtol=0)
    empty = render_gaussians(scene.select(torch.zeros(200, dtype=torch.bool)), camera, background=(0.0, 0.5, 1.0))
    assert torch.equal(empty.rgb, torch.tensor([0.0, 0.5, 1.0])[:, None, None].expand(3, 48, 48))


def dense_reference(g: Gaussians, camera: Camera, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel against every Gaussian in float64 (no tiles): rgb (3, H, W) and alpha (H, W)."""
    q = camera.world_to_camera(g.xyz)
    order = torch.argsort(q[:, 2])
    q, g = q[order], g.select(order)
    x, y, z = q.unbind(1)
    mean = torch.stack([camera.fx * x / z + camera.cx, camera.fy * y / z + camera.cy], dim=1)
    jac = torch.zeros(len(g), 2, 3, dtype=q.dtype)
    jac[:, 0, 0], jac[:, 0, 2] = camera.fx / z, -camera.fx * x / z**2
    jac[:, 1, 1], jac[:, 1, 2] = camera.fy / z, -camera.fy * y / z**2
    w = jac @ camera.rotation.to(q)
    cov = w @ g.covariance() @ w.transpose(1, 2) + 0.3 * torch.eye(2, dtype=q.dtype)
    v, u = torch.meshgrid(torch.arange(camera.height) + 0.5, torch.arange(camera.width) + 0.5, indexing="ij")
    d = torch.stack([u, v], dim=-1).reshape(-1, 1, 2).to(q) - mean  # (pixels, N, 2)
    power = -0.5 * torch.einsum("pni,nij,pnj->pn", d, torch.linalg.inv(cov), d)
    alpha = (g.opacity[:, 0] * power.exp()).clamp(max=0.99)
    alpha = torch.where(alpha >= 1 / 255, alpha, 0.0)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha], dim=1), dim=1)
    rgb = (alpha * trans[:, :-1]) @ g.rgb + trans[:, -1:] * background
    return rgb.t().reshape(3, camera.height, camera.width), (1 - trans[:, -1]).reshape(camera.height, camera.width)


def test_tiled_render_matches_dense_reference():
    # Odd size (partial tiles) and an off-centre principal point; all Gaussians near the middle of the view.
    g = random_gaussians(150, seed=7, extent=0.7, dtype=torch.float64)
    rotation, translation = look_at(torch.tensor([1.5, 0.8, 0.6]))
    camera = Camera(rotation, translation, 60.0, 70.0, 27.0, 21.0, 53, 37)
    background = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)
    out = render_gaussians(g, camera, background=background.tolist())
    rgb, alpha = dense_reference(g, camera, background)
    assert (out.alpha[0] - alpha).abs().max() < 1e-4  # tiles stop once all their pixels are 1e-4 transparent
    assert (out.rgb - rgb).abs().max() < 1e-4


def test_render_is_differentiable():
    camera = sphere_cameras(4, size=32)[0]
    g = random_gaussians(30, seed=2, extent=0.5)
    params = {f: getattr(g, f).clone().requires_grad_() for f in FIELDS}
    out = render_gaussians(Gaussians(**params), camera)
    (out.rgb.square().sum() + out.alpha.sum()).backward()
    for field, tensor in params.items():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0, field


@pytest.mark.skipif(not gsplat_available(), reason="needs CUDA and gsplat")
def test_gsplat_agrees_with_torch():
    camera = sphere_cameras(6, size=64)[3]
    g = random_gaussians(2000, seed=11, extent=0.8).to("cuda")
    fast = render_gaussians(g, camera, background=(1.0, 1.0, 1.0), backend="gsplat")
    ours = render_gaussians(g, camera, background=(1.0, 1.0, 1.0), backend="torch")
    # gsplat clamps alpha at 0.999 (3DGS: 0.99) and stops per pixel rather than per tile: small differences only.
    assert (fast.rgb - ours.rgb).abs().mean() < 2e-3 and (fast.rgb - ours.rgb).abs().max() < 0.05
    assert (fast.alpha - ours.alpha).abs().max() < 0.05
