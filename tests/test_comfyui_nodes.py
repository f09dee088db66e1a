"""The ComfyUI node pack without ComfyUI: ``folder_paths`` is stubbed with a temporary models/input/output tree.
Nodes run on a real photograph (scikit-image) with the official-format tiny weights."""

import shutil
import sys
import types

import pytest
import torch

from tests.conftest import real_image


@pytest.fixture()
def comfy(tmp_path, monkeypatch, converted_dirs, parity_dir):
    root = tmp_path / "comfy"
    models = root / "models" / "atoken"
    models.mkdir(parents=True)
    shutil.copytree(converted_dirs["plain"], models / "tiny")
    shutil.copytree(converted_dirs["fsq"], models / "tiny-fsq")
    shutil.copy(parity_dir / "atoken.pt", models / "official.pt")
    shutil.copy(parity_dir / "atoken_config.yaml", models / "official.yaml")
    for d in ("input", "output"):
        (root / d).mkdir()
    stub = types.ModuleType("folder_paths")
    stub.models_dir = str(root / "models")
    stub.folder_names_and_paths = {}
    stub.get_input_directory = lambda: str(root / "input")
    stub.get_output_directory = lambda: str(root / "output")
    monkeypatch.setitem(sys.modules, "folder_paths", stub)
    import comfyui_nodes

    comfyui_nodes.nodes._load.cache_clear()
    return types.SimpleNamespace(root=root, models=models, nodes=comfyui_nodes.nodes, pack=comfyui_nodes)


def _images(n=2):
    x = torch.cat([real_image(64, 80), real_image(64, 80).flip(-1)])[:n]
    return (x.permute(0, 2, 3, 1) + 1) / 2  # ComfyUI IMAGE: (B, H, W, C) in [0, 1]


def test_loader_lists_folders_and_official_pairs(comfy):
    options = comfy.nodes.ATokenLoader.INPUT_TYPES()["required"]["model"][0]
    # the shipped models come first: continuous, then FSQ (so the Tokenize nodes work with no download)
    assert options == ["(embedded default)", "(embedded default, FSQ tokens)", "official.pt", "tiny", "tiny-fsq"]
    assert "atoken" in sys.modules["folder_paths"].folder_names_and_paths
    handle, vae = comfy.nodes.ATokenLoader().load("official.pt", "fp32", "cpu")
    assert vae is handle.vae and handle.model.config.latent_channels == 12
    bf16, _ = comfy.nodes.ATokenLoader().load("tiny", "bf16", "cpu")
    assert bf16.model.dtype == torch.bfloat16
    with pytest.raises(FileNotFoundError, match="not found"):
        comfy.nodes.ATokenLoader().load("missing", "fp32", "cpu")


def test_encode_decode_nodes_match_the_model(comfy):
    handle, _ = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    images = _images()
    (latent,) = comfy.nodes.ATokenEncode().encode(handle, images)
    assert latent["samples"].shape == (2, 12, 4, 5)
    (decoded,) = comfy.nodes.ATokenDecode().decode(handle, latent)
    assert decoded.shape == (2, 64, 80, 3) and 0 <= decoded.min() and decoded.max() <= 1
    with torch.no_grad():
        direct = handle.model(images.permute(0, 3, 1, 2) * 2 - 1).sample.clamp(-1, 1)
    torch.testing.assert_close(decoded, ((direct + 1) / 2).permute(0, 2, 3, 1), atol=1e-5, rtol=0)


def test_builtin_vae_nodes_can_use_it(comfy):
    """What VAEEncode / VAEDecode / VAEDecodeTiled do with a VAE object."""
    _, vae = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    pixels = torch.cat([_images(), torch.ones(2, 64, 80, 1)], dim=-1)  # RGBA input: VAEEncode drops alpha
    z = vae.encode(pixels[:, :, :, :3])
    assert z.shape == (2, 12, 4, 5) and vae.spacial_compression_decode() == 16 and vae.temporal_compression_decode() == 4
    images = vae.decode(z)
    assert images.shape == (2, 64, 80, 3)
    big = vae.encode(((real_image(160, 160).permute(0, 2, 3, 1) + 1) / 2))
    tiled = vae.decode_tiled(big, tile_x=128 // 16, tile_y=128 // 16, overlap=32 // 16)
    assert (tiled - vae.decode(big)).abs().max() < 0.5 and not vae.model.use_tiling


def test_oom_falls_back_to_tiles(comfy, monkeypatch):
    _, vae = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    z = vae.encode(_images(1))
    calls = []
    real = vae._decode

    def flaky(latents, **options):
        tiled = options.get("tiling", False)
        calls.append(tiled)
        if not tiled:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(latents, **options)

    monkeypatch.setattr(vae, "_decode", flaky)
    assert vae.decode(z).shape == (1, 64, 80, 3) and calls == [False, True]


def test_video_latents_and_frames(comfy):
    handle, vae = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    frames = _images(1).repeat(9, 1, 1, 1)
    (latent,) = comfy.nodes.ATokenEncode().encode(handle, frames, as_video=True)
    assert latent["samples"].shape == (1, 12, 3, 4, 5)  # 9 frames -> 3 latent frames
    (decoded,) = comfy.nodes.ATokenDecode().decode(handle, latent)
    assert decoded.shape == (12, 64, 80, 3)
    assert vae.decode(latent["samples"]).shape == (1, 12, 64, 80, 3)  # VAEDecode then folds frames into the batch


def test_tokens_embed_and_zero_shot(comfy, tmp_path):
    from tests.text_models import make_siglip_text_tower

    handle, _ = comfy.nodes.ATokenLoader().load("tiny-fsq", "fp32", "cpu")
    images = _images()
    (tokens,) = comfy.nodes.ATokenTokenize().tokenize(handle, images)
    assert tokens.shape == (2, 2, 4, 5) and tokens.dtype == torch.int64
    (latent,) = comfy.nodes.ATokenDetokenize().detokenize(handle, tokens)
    assert latent["samples"].shape == (2, 12, 4, 5)
    (emb,) = comfy.nodes.ATokenEmbed().embed(handle, images)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    make_siglip_text_tower(["cat", "rocket", "astronaut", "a photo of the video rendering good close up"],
                           comfy.models / "text")
    out = comfy.nodes.ATokenZeroShot().classify(handle, images, "cat, rocket,\nastronaut", "text", top_k=2)
    lines = out["result"][0].splitlines()
    assert len(lines) == 2 and all(len(line.split(",")) == 2 for line in lines)
    with pytest.raises(ValueError, match="labels is empty"):
        comfy.nodes.ATokenZeroShot().classify(handle, images, " , ", "text")


def test_mesh_to_splat_node(comfy, parity_dir):
    from atoken_diffusers.conversion import load_original_gaussian_decoder
    from atoken_diffusers.three_d.gaussians import Gaussians
    from tests.test_three_d import media_mesh

    load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml").save_pretrained(
        comfy.models / "gs")
    assert comfy.nodes.ATokenMeshToSplat.INPUT_TYPES()["required"]["gs_decoder"][0] == ["gs"]
    shutil.copy(media_mesh("Bunny.obj"), comfy.root / "input" / "bunny.obj")
    handle, _ = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    out = comfy.nodes.ATokenMeshToSplat().convert(handle, "gs", "bunny.obj", "atoken/bunny")
    rel = out["result"][0]
    assert rel == "atoken/bunny_00001.ply" and out["ui"]["3d"][0]["type"] == "output"
    assert len(Gaussians.load_ply(comfy.root / "output" / rel)) % 32 == 0
    with pytest.raises(FileNotFoundError, match="not found"):
        comfy.nodes.ATokenMeshToSplat().convert(handle, "gs", "missing.glb")


def test_node_inputs_are_validated(comfy):
    handle, _ = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    with pytest.raises(ValueError, match="3 \\(RGB\\) or 4 \\(RGBA\\) channels"):
        comfy.nodes.ATokenEncode().encode(handle, torch.zeros(1, 32, 32, 2))
    with pytest.raises(ValueError, match="IMAGE batch"):
        comfy.nodes.ATokenEmbed().embed(handle, torch.zeros(32, 32, 3))
    with pytest.raises(ValueError, match="has 4 latent channels but this AToken model uses 12"):
        comfy.nodes.ATokenDecode().decode(handle, {"samples": torch.zeros(1, 4, 8, 8)})


def test_every_node_is_registered(comfy):
    for name, cls in comfy.pack.NODE_CLASS_MAPPINGS.items():
        assert name in comfy.pack.NODE_DISPLAY_NAME_MAPPINGS
        assert callable(getattr(cls, cls.FUNCTION)) and "required" in cls.INPUT_TYPES()


def test_embedded_default_is_offered_when_the_package_ships_one(comfy, monkeypatch, converted_dirs):
    import atoken_diffusers.weights as weights

    handle, _ = comfy.nodes.ATokenLoader().load("(embedded default)", "fp32", "cpu")
    assert handle.model.config.latent_channels == 48  # atoken-small, shipped in atoken_diffusers/weights
    fsq, _ = comfy.nodes.ATokenLoader().load("(embedded default, FSQ tokens)", "fp32", "cpu")
    (tokens,) = comfy.nodes.ATokenTokenize().tokenize(fsq, _images())
    assert tokens.shape == (2, 8, 4, 5) and 0 <= tokens.min() and tokens.max() < 4096  # atoken-small-d
    monkeypatch.setattr(weights, "DEFAULT_MODEL_DIR", converted_dirs["plain"])
    handle, _ = comfy.nodes.ATokenLoader().load("(embedded default)", "fp32", "cpu")
    assert handle.model.config.latent_channels == 12
    monkeypatch.setattr(weights, "DEFAULT_MODEL_DIR", converted_dirs["plain"] / "absent")
    assert "(embedded default)" not in comfy.nodes.ATokenLoader.INPUT_TYPES()["required"]["model"][0]
