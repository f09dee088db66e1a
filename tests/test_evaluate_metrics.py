"""The metrics of ``atoken evaluate`` keep their defining properties: zero for identical inputs, growing with noise,
a Fréchet distance of a set with itself ~0; the FID Inception-v3 and the I3D load state dicts of their published
layouts strictly and refuse other files.

The networks here have random weights of the right architecture (no downloads): convolutions are re-initialised
with He-normal weights so activations keep their scale through the depth (PyTorch's default initialisation shrinks
them towards 0 over 90+ layers, which would make every distance ~0 and the tests vacuous).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from atoken_diffusers.evaluation.feature_networks import FeatureNetworks, load_strict
from atoken_diffusers.evaluation.i3d import I3D
from atoken_diffusers.evaluation.inception import FIDInceptionV3
from atoken_diffusers.evaluation.metrics import (
    features,
    frechet_distance,
    lpips_distance,
    pixel_scores,
)
from atoken_diffusers.losses.lpips import LPIPS
from atoken_diffusers.utils.media import load_video
from atoken_diffusers.utils.media_sets import bundled_folder
from tests.conftest import real_image


def he_initialised(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` with He-normal convolution weights (random, scale-preserving), frozen."""
    torch.manual_seed(seed)
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net.eval()


def noisy(x: torch.Tensor, sigma: float, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)


def assert_frechet_properties(network: nn.Module, items: torch.Tensor, dim: int) -> None:
    """Features of ``items`` are ``dim``-wide and spread; a set's distance to itself is ~0; more noise, farther."""
    real = features(network, items)
    assert real.shape == (items.shape[0], dim) and real.std() > 1e-3
    assert frechet_distance(real, features(network, items)) == pytest.approx(0.0, abs=1e-6)
    distances = [frechet_distance(real, features(network, noisy(items, s))) for s in (0.1, 0.5)]
    assert 0 < distances[0] < distances[1]


@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """Three different crops of a real photograph, (3, 3, 48, 48) in [-1, 1]."""
    img = real_image(96, 96)
    return torch.cat([img[..., :48, :48], img[..., 48:, :48], img[..., 24:72, 48:]])


def test_pixel_scores_and_lpips_are_perfect_for_identical_inputs_and_worsen_with_noise(photos):
    lpips = LPIPS()  # random backbone and heads: still a distance
    x = photos[:1]
    assert pixel_scores(x, x)["psnr"] == float("inf") and pixel_scores(x, x)["ssim"] == pytest.approx(1.0)
    assert lpips_distance(lpips, x, x) == 0.0
    levels = [0.05, 0.2, 0.5]
    psnrs = [pixel_scores(noisy(x, s), x)["psnr"] for s in levels]
    ssims = [pixel_scores(noisy(x, s), x)["ssim"] for s in levels]
    dists = [lpips_distance(lpips, noisy(x, s), x) for s in levels]
    assert psnrs == sorted(psnrs, reverse=True) and ssims == sorted(ssims, reverse=True)
    assert dists == sorted(dists) and dists[0] > 0


def test_frechet_distance_of_a_set_with_itself_is_zero_and_grows_with_drift():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(64, 16, generator=g)
    assert frechet_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    drifts = [frechet_distance(real, real + s * torch.randn(64, 16, generator=g)) for s in (0.1, 0.5, 1.0)]
    assert drifts == sorted(drifts) and drifts[0] > 0
    with pytest.raises(ValueError, match="at least 2 items"):
        frechet_distance(real[:1], real[:1])


class Passthrough(nn.Module):
    """torchmetrics' FID with features given directly (its documented custom-extractor hook)."""

    num_features = 16

    def forward(self, feats):
        return feats


@pytest.mark.parametrize("n_fake", [8, 40])  # fewer items than features (rank-deficient) and more
def test_frechet_distance_equals_torchmetrics_fid(n_fake):
    from torchmetrics.image.fid import FrechetInceptionDistance

    g = torch.Generator().manual_seed(n_fake)
    real = torch.randn(30, 16, generator=g, dtype=torch.float64)
    fake = 1.3 * torch.randn(n_fake, 16, generator=g, dtype=torch.float64) + 0.2
    fid = FrechetInceptionDistance(feature=Passthrough())
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert frechet_distance(real, fake) == pytest.approx(float(fid.compute()), rel=1e-6)


def test_fid_inception_loads_strictly_and_rfid_orders_noise(tmp_path, photos):
    net = he_initialised(FIDInceptionV3())
    path = tmp_path / "pt_inception.safetensors"
    save_file(net.state_dict(), str(path))
    loaded = FeatureNetworks.from_files(inception=path).inception
    assert torch.equal(loaded.Mixed_7c.branch_pool.conv.weight, net.Mixed_7c.branch_pool.conv.weight)
    assert loaded.input_size == 299
    loaded.input_size = 107  # the same network on 107-px inputs: FID's 299 px costs 8x the time on this CPU
    assert_frechet_properties(loaded, photos, 2048)

    state = net.state_dict()
    del state["fc.bias"]
    save_file(state, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match=r"other\.safetensors: not FID Inception-v3 .*fc\.bias"):
        FeatureNetworks.from_files(inception=tmp_path / "other.safetensors")


def test_i3d_loads_strictly_and_rfvd_orders_noise(tmp_path):
    net = he_initialised(I3D(input_size=32))
    path = tmp_path / "rgb_imagenet.pt"
    torch.save(net.state_dict(), path)
    loaded = load_strict(I3D(input_size=32), path, "I3D")
    assert torch.equal(loaded.logits.conv3d.bias, net.logits.conv3d.bias)
    video, _ = load_video(bundled_folder("gradio:videos") / "b.mp4", max_frames=24)
    small = torch.nn.functional.interpolate(video[0].transpose(0, 1), size=(32, 32), mode="area").transpose(0, 1)
    clips = torch.stack([small[:, i:i + 8] for i in (0, 8, 16)])  # (3, 3, 8, 32, 32)
    assert_frechet_properties(loaded, clips, 400)
    state = net.state_dict()
    state.pop("Mixed_5c.b3b.conv3d.weight")
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"bad\.pt: not I3D weights .*Mixed_5c\.b3b"):
        load_strict(I3D(), tmp_path / "bad.pt", "I3D")


def test_feature_network_flags_name_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="--inception .*nope.pth: no such file"):
        FeatureNetworks.from_files(inception=tmp_path / "nope.pth")
    with pytest.raises(ValueError, match="also pass --lpips-heads"):
        FeatureNetworks.from_files(lpips_vgg=__file__)
    assert FeatureNetworks().missing(("images",)) == ["LPIPS (--lpips-vgg and --lpips-heads)", "rFID (--inception)"]
