"""The whole 3D path on CPU: mesh -> voxel features -> AToken (official-format tiny weights) -> Gaussian decoder ->
Gaussians -> .ply, with the 3D PSNR at held-out views; and the CLI commands around it."""

import re

import pytest
import torch

from atoken_diffusers.cli.main import main
from atoken_diffusers.conversion import load_original_gaussian_decoder
from atoken_diffusers.three_d.gaussians import Gaussians
from atoken_diffusers.three_d.pipeline import gaussians_from_voxels, reconstruct_mesh
from atoken_diffusers.three_d.voxelize import load_voxel_features
from tests.test_three_d import media_mesh


@pytest.fixture(scope="module")
def gs_dir(tmp_path_factory, parity_dir):
    out = tmp_path_factory.mktemp("gs")
    main(["convert", "--gs-decoder", str(parity_dir / "gs_decoder.pt"), "--config", str(parity_dir / "gs_config.yaml"),
          "--output", str(out / "gs")])
    return out / "gs"


def test_mesh_to_gaussians_with_3d_psnr(fsq_model, parity_dir):
    gs = load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml")
    result = reconstruct_mesh(media_mesh("Bunny.obj"), fsq_model, gs, num_views=8, eval_views=2, size=128)
    n = result.coords.shape[0]
    assert result.gaussians.xyz.shape == (n * 32, 3)
    # centres reach 0.75 voxel around their voxel's centre: at most a quarter voxel outside the object's box
    assert result.gaussians.xyz.abs().max() <= 0.5 + 0.25 / 64 + 1e-6
    assert result.renders.shape == result.targets.shape == (2, 3, 128, 128)
    assert 0 < result.psnr < 60 and -1 <= result.ssim <= 1


def test_gaussians_come_out_where_the_voxels_are(fsq_model, parity_dir):
    gs = load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml")
    coords = torch.tensor([[10, 20, 30], [40, 41, 42]])
    g = gaussians_from_voxels(fsq_model, gs, coords, torch.rand(2, 768))
    centres = (coords.float() + 0.5) / 64 - 0.5
    offset = (g.xyz.view(2, 32, 3) - centres[:, None]).abs().max()
    assert offset <= 0.75 / 64 + 1e-6  # within the voxel_size 1.5 reach of each voxel


def test_cli_pack_and_reconstruct_mesh(tmp_path, converted_dirs, gs_dir, capsys, monkeypatch):
    mesh = media_mesh("Bunny.obj")
    main(["pack-3d", mesh, "--output", str(tmp_path / "bunny.safetensors"), "--views", "8"])
    assert "occupied voxels" in capsys.readouterr().out
    coords, feats = load_voxel_features(tmp_path / "bunny.safetensors")
    assert coords.shape[0] == feats.shape[0] > 500

    out = tmp_path / "bunny.ply"
    main(["reconstruct", mesh, "--model", str(converted_dirs["fsq"]), "--gs-decoder", str(gs_dir), "--output", str(out),
          "--views", "8", "--eval-views", "1"])
    printed = capsys.readouterr().out
    assert re.search(r"3D PSNR [\d.]+ dB", printed)
    splat = Gaussians.load_ply(out)
    assert splat.xyz.shape[0] % 32 == 0 and splat.xyz.shape[0] > 500 * 32
    # without --gs-decoder the embedded one is used; when the package ships none, the flag is asked for
    monkeypatch.setattr("atoken_diffusers.weights.DEFAULT_GS_DECODER_DIR", tmp_path / "absent")
    with pytest.raises(SystemExit, match="--gs-decoder"):
        main(["reconstruct", mesh, "--model", str(converted_dirs["fsq"]), "--output", str(out)])
