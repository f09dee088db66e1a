"""The pieces of the embedded default's recipe: the PCA baseline and patch-grid measure, the PCA start of a model,
the FSQ re-coding, the closed-form finish (output refit, deblocking strength), the pixel losses, and the Debian
wallpaper photo set."""

from __future__ import annotations

import subprocess

import pytest
import torch
import torch.nn.functional as F

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.losses.recipe import LossWeights, pixel_loss
from atoken_diffusers.training.fsq_init import recode_for_fsq
from atoken_diffusers.training.pca_init import init_from_pca
from atoken_diffusers.utils import media_sets
from atoken_diffusers.utils.metrics import psnr
from atoken_diffusers.weights.baseline import PCACodec, from_patches, grid_ratio, to_patches
from tests.conftest import real_image


@pytest.fixture(scope="module")
def photos():
    """Training views (crops of astronaut at two scales) and a held-out one (chelsea), 64 x 96, in [-1, 1]."""
    from atoken_diffusers.utils.media import load_image
    from atoken_diffusers.utils.media_sets import bundled_folder

    astro = load_image(bundled_folder("skimage") / "astronaut.png")
    train = [F.interpolate(astro, size=s, mode="bilinear", antialias=True) for s in ((256, 256), (160, 160))]
    return [t.clamp(-1, 1) for t in train], real_image(64, 96)


def test_patches_round_trip_and_pca_is_exact_on_its_span(photos, tmp_path):
    train, held = photos
    assert torch.equal(from_patches(to_patches(held), held), held)
    patches = torch.cat([to_patches(t) for t in train])
    codec = PCACodec.fit(patches, 12)
    torch.testing.assert_close(codec.basis.t() @ codec.basis, torch.eye(12), atol=1e-5, rtol=0)
    inside = codec.decode(torch.randn(5, 12))               # patches in the codec's span come back unchanged
    torch.testing.assert_close(codec.decode(codec.encode(inside)), inside, atol=1e-4, rtol=0)
    codec.save(tmp_path / "pca.safetensors")
    again = PCACodec.load(tmp_path / "pca.safetensors")
    assert torch.equal(again.basis, codec.basis) and again.scale == pytest.approx(codec.scale)
    assert psnr(again.reconstruct(held), held) > 20          # a linear codec works on an unseen photograph
    with pytest.raises(ValueError, match="need at least 12 patches"):
        PCACodec.fit(patches[:5], 12)


def test_grid_ratio_separates_photographs_from_blocky_images(photos):
    _, held = photos
    blocks = F.interpolate(F.avg_pool2d(held, 16), scale_factor=16, mode="nearest")  # one colour per patch
    shifted = torch.roll(held, shifts=(8, 8), dims=(-2, -1))
    assert 0.7 < grid_ratio(held) < 1.4 and 0.7 < grid_ratio(shifted) < 1.4
    assert grid_ratio(blocks) > 20                            # every step of a patch-constant image is on a border


def test_model_started_from_pca_computes_the_pca_codec(photos):
    train, held = photos
    codec = PCACodec.fit(torch.cat([to_patches(t) for t in train]), 12)
    torch.manual_seed(0)
    model = AutoencoderAToken.from_preset("tiny").eval()      # 64 wide, 12 latent channels
    init_from_pca(model, codec.mean, codec.basis, scale=codec.scale)
    with torch.no_grad():
        out = model(held).sample
        mean = model.encode(held).latent_dist.mean
    ours, pca = psnr(out, held), psnr(codec.reconstruct(held), held)
    assert abs(ours - pca) < 0.3, (ours, pca)                 # measured: within 0.05 dB
    coeff = codec.encode(to_patches(held)) * codec.scale      # latents are the scaled PCA coefficients
    torch.testing.assert_close(mean.movedim(1, -1).reshape(-1, 12), coeff, atol=0.05, rtol=0.05)
    with pytest.raises(ValueError, match="continuous model"):
        init_from_pca(AutoencoderAToken.from_preset("tiny-d"), codec.mean, codec.basis)
    with pytest.raises(ValueError, match="basis must be"):
        init_from_pca(model, codec.mean, codec.basis[:, :6])


def _tiny_pca_model(train) -> AutoencoderAToken:
    """The tiny preset started as PCA-12 of the training views (its 12 latent channels)."""
    codec = PCACodec.fit(torch.cat([to_patches(t) for t in train]), 12)
    torch.manual_seed(0)
    model = AutoencoderAToken.from_preset("tiny").eval()
    init_from_pca(model, codec.mean, codec.basis, scale=codec.scale)
    return model


def test_fsq_recoding_beats_quantising_the_latent_as_it_is(photos):
    train, held = photos
    continuous = _tiny_pca_model(train)
    plain = AutoencoderAToken.from_preset("tiny-d").eval()
    plain.load_state_dict(continuous.state_dict())
    recoded = AutoencoderAToken.from_preset("tiny-d").eval()
    with torch.no_grad():
        feats = torch.cat([_features(continuous, t) for t in train])
        summary = recode_for_fsq(recoded, continuous, feats)
        scores = {name: psnr(m.decode(m.detokenize(m.tokenize(held))).sample, held)
                  for name, m in (("plain", plain), ("recoded", recoded))}
    assert sum(n for _, n in summary["channels_per_direction"]) == 12 and summary["constant_fit_residual"] < 0.1
    assert scores["recoded"] > scores["plain"] + 2, scores   # measured: +5 dB on this photograph


def test_shared_fsq_channels_interleave_their_cells():
    from atoken_diffusers.training.fsq_init import allocate_channels, fit_direction

    c = torch.randn(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = [fit_direction(c, 2, 1e-3, n)["mse"] for n in (1, 2, 4)]
    # 1, 2, 4 two-level channels code 2, 3, 5 cells (Lloyd-Max optimum for a unit Gaussian: 0.363, 0.190, 0.080).
    assert errors[0] > 1.8 * errors[1] > 1.8 * 1.9 * errors[2], errors  # measured 0.373 / 0.196 / 0.082
    # Two strong directions and a weak one, four 2-level channels: the strong ones share, the weak one gets none.
    values = torch.stack([3 * c, 2 * c.roll(1), 0.1 * c.roll(2)], 1)
    allocation = allocate_channels(values, torch.tensor([2, 2, 2, 2]), 1e-3)
    assert sorted(allocation) == [0, 1] and sum(len(slots) for slots, _ in allocation.values()) == 4


def test_output_refit_lowers_the_error_it_reports_and_deblocking_picks_the_least(photos):
    from atoken_diffusers.training.output_refit import choose_deblock_strength, refit_output_projection

    train, _ = photos
    model = _tiny_pca_model(train)
    with torch.no_grad():
        model.decoder.proj_out.weight.mul_(0.9)              # a projection short of its optimum
        before = [F.mse_loss(model(t).sample, t).item() for t in train]
        other_rows = model.decoder.proj_out.weight[768:].clone()
        summary = refit_output_projection(model, train)
        after = [F.mse_loss(model(t).sample, t).item() for t in train]
    weights = [t[0, 0].numel() for t in train]                # the report is per pixel value over all views
    mean = lambda v: sum(a * w for a, w in zip(v, weights)) / sum(weights)  # noqa: E731
    assert summary["tokens"] == sum(w // 256 for w in weights)
    assert summary["mse_before"] == pytest.approx(mean(before), rel=1e-4)
    assert summary["mse_after"] == pytest.approx(mean(after), rel=1e-4) and mean(after) < 0.9 * mean(before)
    assert torch.equal(model.decoder.proj_out.weight[768:], other_rows)  # only frame 0's rows (images) move
    best, table = choose_deblock_strength(model, train)
    assert best == min(table, key=table.get) and set(table) >= {0.0, 0.1}


def _features(model, x):
    from atoken_diffusers.tokens.patchify import grid_to_tokens, pad_to_patches

    return model.encode_tokens(grid_to_tokens(pad_to_patches(x[:, :, None]))).features


def test_pixel_loss_terms(photos):
    _, held = photos
    weights = LossWeights(l1=1.0, mse=10.0, gradient=1.0)
    terms = {}
    assert pixel_loss([held[0]], [held[0]], weights, terms) == 0 and set(terms) == {"l1", "mse", "gradient"}
    blocky = F.interpolate(F.avg_pool2d(held, 16), scale_factor=16, mode="nearest")[0]
    smooth = F.interpolate(F.avg_pool2d(held, 16), scale_factor=16, mode="bilinear")[0]
    grad = {}
    for name, rec in (("blocky", blocky), ("smooth", smooth)):
        t = {}
        pixel_loss([rec], [held[0]], LossWeights(l1=0.0, gradient=1.0), t)
        grad[name] = float(t["gradient"])
    assert grad["blocky"] > grad["smooth"]                    # steps at patch borders cost more than blur
    voxels = {}
    pixel_loss([torch.zeros(5, 768)], [torch.ones(5, 768)], weights, voxels)  # 3D features: no pixel grid
    assert "gradient" not in voxels and float(voxels["l1"]) == 1.0


def test_wallpapers_one_file_per_picture(tmp_path, monkeypatch):
    plasma = tmp_path / "wallpapers" / "Kite" / "contents"
    (plasma / "images").mkdir(parents=True)
    for name, size in (("1920x1080.jpg", 10), ("5120x2880.jpg", 30), ("1280x800.jpg", 5)):
        (plasma / "images" / name).write_bytes(b"x" * size)
    (plasma / "screenshot.jpg").write_bytes(b"x")
    mate = tmp_path / "mate"
    mate.mkdir()
    for name, size in (("Elephants.jpg", 10), ("Elephants_5640x3172.jpg", 40), ("Dune.jpg", 7)):
        (mate / name).write_bytes(b"x" * size)
    listing = "\n".join(str(p) for p in tmp_path.rglob("*")) + "\n/usr/share/doc/copyright\n"
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=listing))
    found = media_sets.debian_wallpapers(("one-package",))
    assert sorted(p.name for p in found) == ["5120x2880.jpg", "Dune.jpg", "Elephants_5640x3172.jpg"]
    monkeypatch.setattr(media_sets, "debian_wallpapers", lambda *a: [])
    with pytest.raises(FileNotFoundError, match="apt-get install -y mate-backgrounds"):
        media_sets.expand_paths(["debian:wallpapers"], "images")


def test_context_decoder_is_written_exactly_into_the_attention_heads(photos):
    """The least-squares decoder over 3 x 3 coefficient neighbourhoods, built from the decoder's own blocks, computes
    what the formula says, lowers the patch grid and gains PSNR over PCA on an unseen photograph."""
    from atoken_diffusers.models.presets import preset_config
    from atoken_diffusers.training.context_init import fit_context_decoder, init_context_decoder, neighbourhood

    train, held = photos
    codec = PCACodec.fit(torch.cat([to_patches(t) for t in train]), 12)
    views = [v[..., i:i + 64, j:j + 64] for v in train for i in (0, 64) for j in (0, 32, 64)]
    torch.manual_seed(0)
    model = AutoencoderAToken(**preset_config("tiny", decoder_depth=4)).eval()  # 2 heads x 4 blocks >= 8 heads
    head_dim = model.decoder.head_dim
    fit = fit_context_decoder(codec, views, head_dim, rank=16, ridge=1e-4)
    init_from_pca(model, codec.mean, codec.basis, scale=codec.scale)
    init_context_decoder(model, fit, scale=codec.scale)
    grid = codec.encode(to_patches(held)).reshape(4, 6, 12)
    gathered = neighbourhood(grid, head_dim)
    own, others = gathered[:, :12], gathered[:, 12:].reshape(-1, 8, 12)
    formula = own @ fit["own"].t() + fit["bias"] + torch.einsum("nhk,hrk->nr", others, fit["mix"]) @ fit["basis"].t()
    latents = (grid * codec.scale).permute(2, 0, 1)[None]                      # exact PCA latents, (1, 12, 4, 6)
    with torch.no_grad():
        decoded = model.decode(latents).sample
        out = model(held).sample
    err = (decoded - from_patches(formula, held)).abs()
    assert err.mean() < 2e-3 and err.max() < 2e-2, (err.mean(), err.max())  # the norms: a near-constant scale
    pca = codec.reconstruct(held)
    assert grid_ratio(out) < grid_ratio(pca) - 0.1, (grid_ratio(out), grid_ratio(pca))
    assert psnr(out, held) > psnr(pca, held), (psnr(out, held), psnr(pca, held))
