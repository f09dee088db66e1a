"""The ComfyUI node pack without ComfyUI: ``folder_paths`` is stubbed with a temporary models/input/output tree.
Nodes run on a real photograph (scikit-image) with the official-format tiny weights."""

import json
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import RUN_TO_RUN, real_image

WORKFLOWS = Path(__file__).resolve().parents[1] / "comfyui_nodes" / "example_workflows"


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


def _photo(height=360, width=424, frames=1):
    """scikit-image's astronaut at native resolution, sides not multiples of 16; ``frames`` pan over it."""
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).float() / 255
    return torch.stack([photo[8 * i : 8 * i + height, 4 * i : 4 * i + width] for i in range(frames)])


def _builtin_roundtrip(vae, pixels, tiled=False):
    """What ComfyUI's VAEEncode -> VAEDecode (or the Tiled pair at tile 256, overlap 64) do with a VAE object."""
    if tiled:
        z = vae.encode_tiled(pixels[..., :3], tile_x=256, tile_y=256, overlap=64, tile_t=64, overlap_t=8)
        images = vae.decode_tiled(z, tile_x=256 // 16, tile_y=256 // 16, overlap=64 // 16, tile_t=16, overlap_t=2)
    else:
        z = vae.encode(pixels[..., :3])
        images = vae.decode(z)
    return z, images.reshape(-1, *images.shape[-3:]) if images.ndim == 5 else images


def _direct(model, pixels, **options):
    """The model's own reconstruction of (B, H, W, 3) frames/images, as an IMAGE batch."""
    with torch.no_grad():
        return ((model(pixels.movedim(-1, 1) * 2 - 1, **options).sample.clamp(-1, 1) + 1) / 2).movedim(1, -1)


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
    """What VAEEncode / VAEDecode / VAEDecodeTiled do with a VAE object: AToken looks like Wan 2.2's VAE."""
    _, vae = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    assert vae.latent_dim == 3 and vae.spacial_compression_decode() == 16 and vae.temporal_compression_decode() == 4
    assert [vae.downscale_ratio[0](n) for n in (1, 4, 5, 9, 81)] == [1, 1, 2, 3, 21]  # comfy.sd's Wan 2.2 formulas
    assert [vae.upscale_ratio[0](t) for t in (1, 2, 3, 21)] == [1, 5, 9, 81]
    z, images = _builtin_roundtrip(vae, torch.cat([_images(1), torch.ones(1, 64, 80, 1)], dim=-1))  # RGBA input
    assert z.shape == (1, 12, 1, 4, 5) and images.shape == (1, 64, 80, 3)
    # one image is a 1-frame video, whose zero padding frames make it exactly the image path
    torch.testing.assert_close(z[:, :, 0], vae.encode_images(_images(1)), **RUN_TO_RUN)
    big = vae.encode(((real_image(160, 160).permute(0, 2, 3, 1) + 1) / 2))
    tiled = vae.decode_tiled(big, tile_x=128 // 16, tile_y=128 // 16, overlap=32 // 16)
    assert (tiled - vae.decode(big)).abs().max() < 0.5 and not vae.model.use_tiling


def test_every_vae_path_centre_crops_like_comfyui(comfy):
    """424 x 360 -> 416 x 352 through VAEEncode/VAEDecode, the Tiled pair, AToken Encode/Decode and Tokenize: the
    crop is ComfyUI's (vae_encode_crop_pixels: (size % 16) // 2 off the top/left), so results line up with it."""
    handle, vae = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    photo = _photo()
    crop = photo[:, 4:356, 4:420]
    assert torch.equal(vae.vae_encode_crop_pixels(photo), crop)
    for tiled, options in ((False, {}), (True, dict(tiling=True, tile_sample_min_size=256, tile_overlap_factor=0.25))):
        z, images = _builtin_roundtrip(vae, photo, tiled=tiled)
        assert z.shape == (1, 12, 1, 22, 26) and images.shape == (1, 352, 416, 3)
        torch.testing.assert_close(images, _direct(handle.model, crop, **options), atol=1e-5, rtol=0)
    (latent,) = comfy.nodes.ATokenEncode().encode(handle, photo)
    (decoded,) = comfy.nodes.ATokenDecode().decode(handle, latent)
    assert latent["samples"].shape == (1, 12, 22, 26)
    torch.testing.assert_close(decoded, _direct(handle.model, crop), atol=1e-5, rtol=0)
    fsq, _ = comfy.nodes.ATokenLoader().load("tiny-fsq", "fp32", "cpu")
    (tokens,) = comfy.nodes.ATokenTokenize().tokenize(fsq, photo)
    with torch.no_grad():
        assert torch.equal(tokens, fsq.model.tokenize(crop.movedim(-1, 1) * 2 - 1))
    with pytest.raises(ValueError, match="image height is 10 px but AToken needs at least 16"):
        vae.encode(torch.zeros(1, 10, 40, 3))


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
    assert vae.decode(z).shape == (1, 1, 64, 80, 3) and calls == [False, True]


def test_video_follows_wan22_frame_counts(comfy):
    """A batch of frames is one video: 4k + 1 frames -> k + 1 latent frames -> 4k + 1 frames, equal to the model's
    own reconstruction; frames past the last 4k + 1 are dropped (as ComfyUI does for Wan 2.2)."""
    handle, vae = comfy.nodes.ATokenLoader().load("tiny", "fp32", "cpu")
    frames = _photo(64, 80, frames=11)
    z, video = _builtin_roundtrip(vae, frames[:9])
    assert z.shape == (1, 12, 3, 4, 5) and video.shape == (9, 64, 80, 3)
    with torch.no_grad():
        direct = handle.model(frames[:9].movedim(-1, 0)[None] * 2 - 1).sample.clamp(-1, 1)  # (1, 3, 9, H, W)
    torch.testing.assert_close(video, ((direct[0] + 1) / 2).movedim(0, -1), atol=1e-5, rtol=0)
    z11, video11 = _builtin_roundtrip(vae, frames)
    torch.testing.assert_close(z11, z, **RUN_TO_RUN)
    assert video11.shape == (9, 64, 80, 3)
    (latent,) = comfy.nodes.ATokenEncode().encode(handle, frames[:9], as_video=True)
    (decoded,) = comfy.nodes.ATokenDecode().decode(handle, latent)
    torch.testing.assert_close(latent["samples"], z, **RUN_TO_RUN)
    torch.testing.assert_close(decoded, video, **RUN_TO_RUN)
    assert vae.decode(torch.cat([z, z])).shape == (2, 9, 64, 80, 3)  # two videos; VAEDecode joins their frames


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
    # the shipped decoder comes first, so the 3D example workflow runs with no download
    assert comfy.nodes.ATokenMeshToSplat.INPUT_TYPES()["required"]["gs_decoder"][0] == ["(embedded default)", "gs"]
    assert comfy.nodes.paths.resolve("(embedded default)", "gaussian_decoder").endswith("atoken-small-gs")
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
    size = fsq.model.config.fsq_codebook_size                                 # atoken-small-d: 2^17 codes
    assert tokens.shape == (2, 8, 4, 5) and 0 <= tokens.min() and tokens.max() < size and tokens.max() >= 4096
    monkeypatch.setattr(weights, "DEFAULT_MODEL_DIR", converted_dirs["plain"])
    handle, _ = comfy.nodes.ATokenLoader().load("(embedded default)", "fp32", "cpu")
    assert handle.model.config.latent_channels == 12
    monkeypatch.setattr(weights, "DEFAULT_MODEL_DIR", converted_dirs["plain"] / "absent")
    assert "(embedded default)" not in comfy.nodes.ATokenLoader.INPUT_TYPES()["required"]["model"][0]
    monkeypatch.setattr(weights, "DEFAULT_GS_DECODER_DIR", converted_dirs["plain"] / "absent")
    assert comfy.nodes.paths.list_models("gaussian_decoder") == []


@pytest.mark.parametrize("name", ["image", "video", "tokens", "3d"])
def test_example_workflow_is_consistent(comfy, name):
    """Links join matching types both ways, and the pack's nodes carry one valid value per widget (the model lists
    offer the embedded defaults the workflows name, so they run with no download)."""
    workflow = json.loads((WORKFLOWS / f"{name}.json").read_text())
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert workflow["last_node_id"] == max(nodes) and workflow["last_link_id"] == len(workflow["links"])
    for link, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        assert nodes[src]["outputs"][src_slot]["type"] == kind and link in nodes[src]["outputs"][src_slot]["links"]
        assert nodes[dst]["inputs"][dst_slot]["type"] == kind and nodes[dst]["inputs"][dst_slot]["link"] == link
    pack = comfy.pack.NODE_CLASS_MAPPINGS
    used = [node for node in workflow["nodes"] if node["type"] in pack]
    assert used and any(node["type"] == "ATokenLoader" for node in used)
    for node in used:
        cls = pack[node["type"]]
        spec = cls.INPUT_TYPES()["required"]
        widgets = [key for key, value in spec.items()
                   if isinstance(value[0], list) or value[0] in ("INT", "FLOAT", "STRING", "BOOLEAN")]
        values = node.get("widgets_values", [])
        assert len(values) == len(widgets), node["type"]
        for key, value in zip(widgets, values):
            assert value in spec[key][0] if isinstance(spec[key][0], list) else value is not None, (node["type"], key)
        assert [out["type"] for out in node["outputs"]] == list(cls.RETURN_TYPES)
        assert {i["name"] for i in node["inputs"]} <= set(spec)
