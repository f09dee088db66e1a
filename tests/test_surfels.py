"""Surfels from voxel occupancy (three_d/surfels.py) and the Gaussian decoder's surfel prior: frames of known
surfaces, batch independence, a zero head giving exactly the surfels, and a solid render of a voxelised sphere."""

from __future__ import annotations

import math

import pytest
import torch

from atoken_diffusers.three_d.camera import sphere_cameras
from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder
from atoken_diffusers.three_d.gaussians import (
    Gaussians,
    matrix_to_quaternion,
    quaternion_multiply,
    quaternion_to_matrix,
)
from atoken_diffusers.three_d.rasterizer import render_gaussians
from atoken_diffusers.three_d.surfels import surface_frames, surfels

RES = 32


def _sphere_shell(radius: float = 10.0) -> torch.Tensor:
    """(N, 4) voxels (batch 0) whose centres lie within half a voxel of a sphere around the grid centre."""
    r = torch.arange(RES)
    xyz = torch.cartesian_prod(r, r, r)
    dist = (xyz.float() + 0.5 - RES / 2).norm(dim=1)
    shell = xyz[(dist - radius).abs() < 0.5]
    return torch.cat([torch.zeros(len(shell), 1, dtype=torch.long), shell], 1)


def test_quaternions_round_trip_and_compose():
    q = torch.nn.functional.normalize(torch.randn(500, 4, generator=torch.Generator().manual_seed(0)), dim=1)
    q = torch.cat([q, torch.eye(4)])  # the 180-degree turns, where the trace formula alone fails
    m = quaternion_to_matrix(q)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(m)), m, atol=1e-5, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(quaternion_multiply(q[:250], q[250:500])), m[:250] @ m[250:500],
                               atol=1e-5, rtol=0)


def test_plane_and_sphere_normals():
    r = torch.arange(8, 24)
    plane = torch.cat([torch.zeros(256, 1, dtype=torch.long), torch.cartesian_prod(r, r),
                       torch.full((256, 1), 5)], 1)                       # the plane z = 5
    frames, centroid = surface_frames(plane, RES)
    assert torch.allclose(frames[:, :, 2].abs(), torch.tensor([0.0, 0.0, 1.0]).expand(256, 3), atol=1e-4)
    assert torch.allclose(torch.linalg.det(frames), torch.ones(256), atol=1e-4)
    assert centroid[:, 2].abs().max() < 1e-6                               # the plane's own voxels: on it
    shell = _sphere_shell()
    frames, _ = surface_frames(shell, RES)
    radial = torch.nn.functional.normalize(shell[:, 1:].float() + 0.5 - RES / 2, dim=1)
    cosine = (frames[:, :, 2] * radial).sum(1).abs()
    assert cosine.mean() > 0.99 and cosine.min() > 0.95, (cosine.mean(), cosine.min())  # measured 0.999 / 0.986


def test_samples_do_not_see_each_other():
    shell = _sphere_shell()
    other = shell.clone()
    other[:, 0] = 1
    other[:, 1] = (other[:, 1] + 3).clamp(max=RES - 1)                   # overlapping positions, another sample
    both = torch.cat([shell, torch.unique(other, dim=0)])
    frames, centroid = surface_frames(both, RES)
    alone_frames, alone_centroid = surface_frames(shell, RES)
    torch.testing.assert_close(centroid[: len(shell)], alone_centroid)
    torch.testing.assert_close(frames[: len(shell), :, 2].abs(), alone_frames[:, :, 2].abs(), atol=1e-5, rtol=0)


def _prior_decoder(num_gaussians: int = 1) -> ATokenGaussianDecoder:
    torch.manual_seed(0)
    decoder = ATokenGaussianDecoder(resolution=RES, model_channels=24, latent_channels=12, num_blocks=1,
                                    num_heads=2, mlp_channels=48, window_size=4, num_gaussians=num_gaussians,
                                    perturb_offset=False, opacity_bias=0.99, surfel_prior={}).eval()
    assert not decoder.proj_out.weight.any() and not decoder.proj_out.bias.any()  # fresh: the surfels themselves
    return decoder


@torch.no_grad()
def test_zero_head_gives_the_surfels_and_a_solid_sphere():
    shell = _sphere_shell()
    colour, black = torch.tensor([0.6, -0.2, -1.0]), torch.full((3,), -1.0)  # black: the packing background
    feats = torch.cat([colour, colour, colour, black]).repeat(len(shell), 1)  # 3 pixels of one colour, 1 background
    decoder = _prior_decoder()
    out = decoder(feats, shell)
    prior = surfels(shell, feats, RES, **decoder.config.surfel_prior)
    torch.testing.assert_close(out.xyz, prior["centre"] - 0.5)
    torch.testing.assert_close(out.features_dc[:, 0] * 0.28209479177387814 + 0.5,
                               torch.tensor([0.8, 0.4, 0.0]).expand(len(shell), 3))
    torch.testing.assert_close(quaternion_to_matrix(out.rotation), prior["frame"], atol=1e-5, rtol=0)
    assert torch.allclose(out.opacity, torch.tensor(0.99))
    # Rendered, the sheet of surfels is opaque: no see-through gaps inside the silhouette.
    camera = sphere_cameras(1, size=64)[0]
    alpha = render_gaussians(Gaussians(out.xyz, out.features_dc[:, 0], out.scaling, out.rotation, out.opacity),
                             camera, background=(0, 0, 0)).alpha[0]
    centre = alpha[24:40, 24:40]                                            # well inside the disc's silhouette
    assert centre.min() > 0.99, centre.min()


@torch.no_grad()
def test_several_gaussians_spread_over_the_surface():
    shell = _sphere_shell()
    out = _prior_decoder(4)(torch.zeros(len(shell), 12), shell)
    frames, _ = surface_frames(shell, RES)
    offsets = (out.xyz.view(-1, 4, 3) - out.xyz.view(-1, 4, 3).mean(1, keepdim=True)) * RES  # voxels
    across = torch.einsum("ngi,ni->ng", offsets, frames[:, :, 2])
    assert across.abs().max() < 1e-4 and offsets.norm(dim=-1).max() <= math.sqrt(0.5) + 1e-4


def test_prior_needs_the_features():
    decoder = _prior_decoder()
    shell = _sphere_shell()
    with pytest.raises(ValueError, match="feats is required with surfel_prior"):
        decoder.to_gaussians(torch.zeros(len(shell), 14), shell)
