"""The diffusers autoencoder contract: shapes, config keys, save/load, dtypes, tiling, slicing, checkpointing."""

import pytest
import torch
from diffusers.models.autoencoders.vae import DecoderOutput

from atoken_diffusers import AutoencoderAToken
from tests.conftest import assert_same_run, max_difference


def test_latent_shapes_and_padding(tiny_model, image):
    with torch.no_grad():
        z = tiny_model.encode(image[..., :50, :70]).latent_dist.mode()
        assert z.shape == (1, 12, 4, 5)  # 50x70 is padded to 64x80
        out = tiny_model(image[..., :50, :70])
    assert isinstance(out, DecoderOutput) and out.sample.shape == (1, 3, 50, 70)  # cropped back
    video = image[:, :, None].repeat(1, 1, 9, 1, 1)  # 4k + 1 frames -> k + 1 latent frames, like Wan 2.2
    with torch.no_grad():
        zv = tiny_model.encode(video).latent_dist.mode()
        assert zv.shape == (1, 12, 3, 4, 5)
        assert tiny_model.decode(zv).sample.shape == (1, 3, 12, 64, 80)
        assert tiny_model(video).sample.shape == video.shape


def test_pipeline_config_keys(tiny_model):
    c = tiny_model.config
    assert c.latent_channels == c.z_dim == 12
    assert 2 ** (len(c.block_out_channels) - 1) == c.scale_factor_spatial == tiny_model.spatial_compression_ratio == 16
    assert c.scale_factor_temporal == tiny_model.temporal_compression_ratio == 4
    assert c.force_upcast is False and c.scaling_factor == 1.0 and c.shift_factor == 0.0
    assert "latents_mean" in c and "latents_std" in c
    with pytest.raises(ValueError, match="z_dim=7 contradicts"):
        AutoencoderAToken.from_preset("tiny", z_dim=7)


def test_save_load_roundtrip_offline(tiny_model, image, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny_model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = AutoencoderAToken.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert_same_run(loaded(image).sample, tiny_model(image).sample)
    assert all(torch.equal(v, tiny_model.state_dict()[k]) for k, v in loaded.state_dict().items())  # the same bits


def test_bf16_load_runs_close_to_fp32(fsq_model, converted_dirs, image):
    model = AutoencoderAToken.from_pretrained(converted_dirs["plain"], torch_dtype=torch.bfloat16).eval()
    assert model.dtype == torch.bfloat16
    with torch.no_grad():
        z16 = model.encode(image).latent_dist.mode()
        out16 = model.decode(z16).sample
        ref = fsq_model.decode(fsq_model.encode(image).latent_dist.mode()).sample
    assert out16.dtype == torch.bfloat16 and torch.isfinite(out16).all()
    assert (out16.float() - ref).abs().max() < 0.1


def test_tiling_close_to_untiled_and_disable_restores(tiny_model):
    from tests.conftest import real_image

    big = real_image(160, 160)  # 10 x 10 latents, tiles of 8 x 8 with 2 shared
    with torch.no_grad():
        plain = tiny_model(big).sample
        tiny_model.enable_tiling(tile_sample_min_size=128, tile_overlap_factor=0.25)
        tiled_z = tiny_model.encode(big).latent_dist.mode()
        tiled = tiny_model(big).sample
        tiny_model.disable_tiling()
        again = tiny_model(big).sample
    assert tiled_z.shape == (1, 12, 10, 10)
    assert not torch.equal(tiled, plain)  # tiles really ran
    assert (tiled - plain).abs().max() < 0.5
    assert_same_run(again, plain)


def test_slicing_gives_the_same_result(tiny_model, image):
    batch = torch.cat([image, image.flip(-1), -image])
    with torch.no_grad():
        whole = tiny_model(batch).sample
        tiny_model.enable_slicing()
        sliced = tiny_model(batch).sample
    assert_same_run(sliced, whole)  # batch of 1 vs 3: other BLAS blockings, same result up to float noise


def test_batch_equals_single_samples(tiny_model, image):
    batch = torch.cat([image, image.flip(-1)])
    with torch.no_grad():
        emb = tiny_model.embed(batch)
        single = tiny_model.embed(image.flip(-1))
    torch.testing.assert_close(emb[1:], single, atol=1e-5, rtol=0)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))


def test_gradient_checkpointing_same_gradients(tiny_model, image):
    def grads():
        tiny_model.zero_grad()
        tiny_model(image, sample_posterior=False).sample.square().mean().backward()
        return [p.grad.clone() for p in tiny_model.parameters() if p.grad is not None]

    tiny_model.train()
    ref = grads()
    tiny_model.enable_gradient_checkpointing()
    ckpt = grads()
    trained = [n for n, p in tiny_model.named_parameters() if not n.startswith("encoder.pool.")]  # pool: embed only
    assert len(ref) == len(ckpt) == len(trained)
    for a, b in zip(ref, ckpt):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_tokenize_detokenize(fsq_model, image):
    with torch.no_grad():
        idx = fsq_model.tokenize(image)
        assert idx.shape == (1, 2, 4, 5) and idx.dtype == torch.int64
        assert 0 <= idx.min() and idx.max() < 4096
        codes = fsq_model.detokenize(idx)
        assert torch.equal(fsq_model.quantizer.codes_to_indices(codes.movedim(1, -1)).movedim(-1, 1), idx)
        torch.testing.assert_close(fsq_model.decode(codes).sample, fsq_model(image).sample)


def test_plain_model_has_no_tokens(tiny_model, image):
    with pytest.raises(ValueError, match="no FSQ quantizer"):
        tiny_model.tokenize(image)


def test_tile_blending_is_exact_for_a_local_map():
    """With a per-cell function, overlapping tiles must blend back to exactly the untiled result."""
    from atoken_diffusers.models.spatial_tiling import blend_tiles

    z = torch.randn(1, 4, 13, 21)
    up = lambda piece, offset: torch.repeat_interleave(torch.repeat_interleave(piece.tanh(), 16, -2), 16, -1)  # noqa: E731
    torch.testing.assert_close(blend_tiles(up, z, tile=5, overlap=2, in_scale=1, out_scale=16), up(z, (0, 0)))


def test_decode_cache_settings_validated(tiny_model):
    with pytest.raises(ValueError, match="must be <= 16"):
        tiny_model.set_decode_tiles(16, 4)
    with pytest.raises(ValueError, match="decode_stride_frames must be a multiple of 4"):
        tiny_model.set_decode_tiles(6, 0)
    with pytest.raises(ValueError, match="tile_overlap_factor must be a number in \\[0, 1\\)"):
        tiny_model.decode(torch.zeros(1, 12, 2, 2), tiling=True, tile_overlap_factor=5)
    with pytest.raises(TypeError, match="unknown inference option.*tile_size"):
        tiny_model.decode(torch.zeros(1, 12, 2, 2), tile_size=64)


def test_per_call_options_leave_the_model_untouched(tiny_model):
    """Options passed to a call equal the same defaults set on the model, and change nothing for the next caller."""
    from tests.conftest import real_image

    big = real_image(160, 160)
    before = tiny_model.inference_options()
    with torch.no_grad():
        per_call = tiny_model(big, tiling=True, tile_sample_min_size=128).sample
        assert tiny_model.inference_options() == before and not tiny_model.use_tiling
        untiled = tiny_model(big).sample
        tiny_model.enable_tiling(tile_sample_min_size=128)
        try:
            assert_same_run(tiny_model(big).sample, per_call)
        finally:
            tiny_model.disable_tiling()
    assert max_difference(per_call, untiled) > 1e-3  # the option really tiled


def test_concurrent_callers_keep_their_own_options(tiny_model):
    """Two threads decoding the same video with different decoder tiles get what each asked for."""
    from concurrent.futures import ThreadPoolExecutor

    z = torch.randn(1, 12, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = {cache: tiny_model.decode(z, decode_stride_frames=12, decode_cache_frames=cache).sample
                    for cache in (0, 4)}
        with ThreadPoolExecutor(4) as pool:
            jobs = [(cache, pool.submit(lambda c: tiny_model.decode(z, decode_stride_frames=12,
                                                                      decode_cache_frames=c).sample, cache))
                    for cache in (0, 4) * 4]
            for cache, job in jobs:
                assert_same_run(job.result(), expected[cache])
    assert max_difference(expected[0], expected[4]) > 1e-4


def test_lora_adapter_changes_and_restores(tiny_model, image):
    peft = pytest.importorskip("peft")
    with torch.no_grad():
        base = tiny_model(image).sample
    tiny_model.add_adapter(peft.LoraConfig(r=4, target_modules=["to_qkv", "to_out"], init_lora_weights=False))
    trainable = [n for n, p in tiny_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n in trainable)
    with torch.no_grad():
        adapted = tiny_model(image).sample
        tiny_model.disable_adapters()
        restored = tiny_model(image).sample
    assert (adapted - base).abs().max() > 1e-3
    torch.testing.assert_close(restored, base)


@pytest.mark.parametrize(
    "name, millions, latent",
    [("so-c", 845.74, 48), ("so-d", 845.74, 48), ("so-c-s1", 845.68, 32), ("base", 182.34, 48)],
)
def test_presets_have_the_paper_sizes(name, millions, latent):
    with torch.device("meta"):  # no memory, no init cost
        model = AutoencoderAToken.from_preset(name)
    count = lambda m: sum(p.numel() for p in m.parameters()) / 1e6  # noqa: E731
    assert round(count(model), 2) == millions and model.config.latent_channels == latent
    if name.startswith("so"):
        assert round(count(model.encoder)) == 431 and round(count(model.decoder)) == 415  # ~430M / ~415M
        assert model.encoder.blocks[0].attn.head_dim == 72
    assert (model.quantizer is not None) == (name == "so-d")
