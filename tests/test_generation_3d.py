"""Image-to-3D on AToken latents: the sparse-structure VAE, both flow transformers (packing, windows, batching), the
pipeline's mechanics and errors with tiny random parts, and the three training stages run briefly on four meshes
bundled with gradio (conditions: their ray-cast renders): falling losses, stage-1 occupancy far above chance for a
training object, a .ply at the end, save/reload and the `atoken generate 3d` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.generation.three_d.pipeline_image_to_3d import ATokenImageTo3DPipeline
from atoken_diffusers.generation.three_d.sparse_flow import SparseLatentFlowTransformer
from atoken_diffusers.generation.three_d.sparse_structure import (
    SparseStructureVAE,
    coords_to_grid,
    depth_to_space,
    grid_to_coords,
    iou,
    space_to_depth,
)
from atoken_diffusers.generation.three_d.structure_flow import SparseStructureFlowTransformer
from atoken_diffusers.three_d.gaussians import Gaussians
from tests.generation_data import threads
from tests.test_three_d import media_mesh

pytest.importorskip("trimesh")
MESHES = ["Bunny.obj", "Duck.glb", "Fox.gltf", "face.obj"]  # sorted as the dataset stores them
IMAGE = 64  # condition renders: 64 x 64 -> 16 AToken tokens


@pytest.fixture(scope="module")
def gs_dir(tmp_path_factory, parity_dir) -> Path:
    """The official-format tiny Gaussian decoder (random weights), as a diffusers folder."""
    from atoken_diffusers.conversion import load_original_gaussian_decoder

    out = tmp_path_factory.mktemp("gs") / "gs"
    load_original_gaussian_decoder(parity_dir / "gs_decoder.pt", parity_dir / "gs_config.yaml").save_pretrained(out)
    return out


def tiny_pipeline(vae_dir, gs_dir) -> ATokenImageTo3DPipeline:
    """Untrained tiny components with identity statistics."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from atoken_diffusers.three_d.gaussian_decoder import ATokenGaussianDecoder

    torch.manual_seed(0)
    vae = AutoencoderAToken.from_pretrained(vae_dir).eval()
    s_vae = SparseStructureVAE(hidden_channels=16, num_blocks=0, latent_channels=4, occupancy_prior=0.02,
                               latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    s_tf = SparseStructureFlowTransformer(in_channels=4, cond_dim=64, hidden_size=64, num_layers=1, num_heads=2,
                                          patch_size=4)
    l_tf = SparseLatentFlowTransformer(in_channels=12, cond_dim=64, hidden_size=64, num_layers=2, num_heads=2,
                                       window_size=4, latents_mean=[0.0] * 12, latents_std=[1.0] * 12)
    pipe = ATokenImageTo3DPipeline(vae, s_vae, s_tf, l_tf, ATokenGaussianDecoder.from_pretrained(gs_dir),
                                   FlowMatchEulerDiscreteScheduler(shift=3.0), image_size=IMAGE)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------ parts


def test_structure_helpers_round_trip():
    x = torch.randn(2, 3, 8, 8, 8)
    torch.testing.assert_close(depth_to_space(space_to_depth(x, 4), 4), x, rtol=0, atol=0)
    coords = torch.tensor([[0, 1, 2, 3], [1, 63, 0, 5], [1, 0, 0, 0]])
    grid = coords_to_grid(coords, 2)
    assert grid.shape == (2, 1, 64, 64, 64) and grid.sum() == 3
    assert grid_to_coords(grid > 0).tolist() == sorted(coords.tolist())
    assert iou(grid > 0, grid > 0) == 1.0 and iou(grid > 0, torch.zeros_like(grid) > 0) == 0.0
    vae = SparseStructureVAE(hidden_channels=16, num_blocks=1)
    logits, posterior = vae(grid)
    assert logits.shape == grid.shape and posterior.mean.shape == (2, 8, 16, 16, 16)
    with pytest.raises(ValueError, match=r"occupancy must be \(B, 1, 64, 64, 64\)"):
        vae.encode(grid[:, :, :32])


def test_sparse_flow_packs_samples_independently_in_any_row_order():
    torch.manual_seed(0)
    model = SparseLatentFlowTransformer(in_channels=6, cond_dim=16, hidden_size=32, num_layers=2, num_heads=2,
                                        window_size=4).eval()
    for p in model.parameters():  # leave the zero-initialised start: every path matters
        torch.nn.init.normal_(p, std=0.2)
    a = torch.unique(torch.randint(0, 64, (300, 3)), dim=0)
    b = torch.unique(torch.randint(20, 40, (200, 3)), dim=0)
    coords = torch.cat([torch.cat([torch.zeros(len(a), 1, dtype=torch.long), a], 1),
                        torch.cat([torch.ones(len(b), 1, dtype=torch.long), b], 1)])
    x, cond, t = torch.randn(len(coords), 6), torch.randn(2, 5, 16), torch.tensor([300.0, 700.0])
    with torch.no_grad():
        both = model(x, coords, t, cond).sample
        perm = torch.randperm(len(coords))
        shuffled = model(x[perm], coords[perm], t, cond).sample
        alone = model(x[:len(a)], coords[:len(a)], t[:1], cond[:1]).sample
    assert both.shape == (len(coords), 6) and both.abs().sum() > 0
    torch.testing.assert_close(shuffled, both[perm], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone, both[:len(a)], rtol=1e-4, atol=1e-5)  # sample 1 does not leak into sample 0
    with pytest.raises(ValueError, match=r"coords x, y, z must lie in \[0, 64\)"):
        model(x[:1], torch.tensor([[0, 64, 0, 0]]), t[:1], cond[:1])
    with pytest.raises(ValueError, match=r"coords batch indices must lie in \[0, 1\)"):
        model(x[:1], torch.tensor([[1, 0, 0, 0]]), t[:1], cond[:1])


def test_pipeline_mechanics_and_bad_input(converted_dirs, gs_dir, tmp_path, one_thread):
    pipe = tiny_pipeline(converted_dirs["plain"], gs_dir)
    image = np.asarray(pytest.importorskip("skimage").data.chelsea())  # (300, 451, 3) uint8 photograph
    out = pipe(image, num_inference_steps=2, guidance_scale=1.5, occupancy_threshold=-3.3,
               generator=torch.Generator().manual_seed(0))
    coords, latents, gaussians = out.coords[0], out.latents[0], out.gaussians[0]
    print(f"untrained tiny pipeline: {coords.shape[0]} voxels")
    assert coords.shape[1] == 3 and latents.shape == (coords.shape[0], 12) and coords.shape[0] > 0
    assert isinstance(gaussians, Gaussians) and len(gaussians) == coords.shape[0] * 32
    path = gaussians.save_ply(tmp_path / "cat.ply")
    assert len(Gaussians.load_ply(path)) == len(gaussians)
    pipe.save_pretrained(tmp_path / "pipe")
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["latent_transformer"] == ["atoken_diffusers.generation.three_d.sparse_flow", "SparseLatentFlowTransformer"]
    reloaded = ATokenImageTo3DPipeline.from_pretrained(tmp_path / "pipe")
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded([image], num_inference_steps=2, guidance_scale=1.5, occupancy_threshold=-3.3,
                     generator=torch.Generator().manual_seed(0), output_type="latent")
    assert again.gaussians is None
    torch.testing.assert_close(again.latents[0], latents, rtol=0, atol=0)

    with pytest.raises(ValueError, match="image is required"):
        pipe(num_inference_steps=1)
    with pytest.raises(TypeError, match=r"image must be an image.*got Tensor of shape \(1, 3, 4, 64, 64\)"):
        pipe(torch.rand(1, 3, 4, 64, 64), num_inference_steps=1)  # a video
    with pytest.raises(TypeError, match=r"Bunny.obj is not a readable image"):
        pipe(media_mesh("Bunny.obj"), num_inference_steps=1)  # a mesh file
    with pytest.raises(TypeError, match="image must be an image.*got float"):
        pipe(3.5, num_inference_steps=1)
    with pytest.raises(FileNotFoundError, match="image file a photo of a duck does not exist"):
        pipe("a photo of a duck", num_inference_steps=1)  # text is not an image
    with pytest.raises(ValueError, match=r"image values must lie in \[0, 1\]"):
        pipe(torch.rand(3, 64, 64) * 255, num_inference_steps=1)
    with pytest.raises(ValueError, match="guidance_scale must be >= 1"):
        pipe(image, guidance_scale=0.5, num_inference_steps=1)
    with pytest.raises(ValueError, match="output_type must be one of gaussians, latent"):
        pipe(image, output_type="mesh", num_inference_steps=1)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
        pipe(image, num_inference_steps=0)


def test_training_script_errors_name_the_fix(tmp_path, gs_dir):
    from atoken_diffusers.generation.three_d.train_image_to_3d import main

    with pytest.raises(SystemExit, match="--stage encode needs --meshes, --vae and --data"):
        main(["--stage", "encode", "--meshes", "gradio:models3d"])
    with pytest.raises(SystemExit, match="lacks the trained stage.*structure_vae, structure_flow, latent_flow"):
        main(["--stage", "assemble", "--output-dir", str(tmp_path), "--gaussian-decoder", str(gs_dir)])
    with pytest.raises(SystemExit, match="has no manifest.json; create it with encode_3d_dataset"):
        main(["--stage", "latent_flow", "--data", str(tmp_path), "--output-dir", str(tmp_path / "run")])


# ------------------------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def i23d(converted_dirs, gs_dir, tmp_path_factory):
    """Four gradio meshes encoded with the tiny AToken (4 condition renders each), the three stages trained briefly
    (stage 1 through the training script's command line) and the pipeline assembled."""
    from atoken_diffusers.generation.three_d.data import encode_3d_dataset
    from atoken_diffusers.generation.three_d.train_image_to_3d import main, train_stage

    root = tmp_path_factory.mktemp("i23d")
    common = ["--set", "optim.warmup_steps=10", "--set", "run.ema_decay=0", "--set", "run.log_every=1",
              "--set", "run.checkpoint_every=1000", "--set", "run.batch_size=4"]
    with threads(1):
        encode_3d_dataset([media_mesh(m) for m in MESHES], converted_dirs["plain"], root / "data", views=4,
                          image_size=IMAGE, pack_views=12, pack_size=128, log=lambda *_: None)
        main(["--stage", "structure_vae", "--data", str(root / "data"), "--output-dir", str(root / "run"),
              "--preset", "tiny", "--max-steps", "150", "--set", "optim.lr=3e-3", "--set", "optim.min_lr=3e-4",
              *common])
        main(["--stage", "structure_flow", "--data", str(root / "data"), "--output-dir", str(root / "run"),
              "--preset", "tiny", "--max-steps", "300", "--set", "optim.lr=3e-3", "--set", "optim.min_lr=3e-4",
              *common])
        train_stage(root / "data", root / "run", "latent_flow", {
            "model.preset": "tiny", "run.max_steps": 40, "run.batch_size": 2, "optim.lr": 2e-3, "optim.min_lr": 2e-4,
            "optim.warmup_steps": 5, "run.ema_decay": 0, "run.log_every": 1, "run.checkpoint_every": 1000})
        main(["--stage", "assemble", "--output-dir", str(root / "run"), "--gaussian-decoder", str(gs_dir)])
    return root


def stage_losses(root: Path, stage: str) -> list[float]:
    return [json.loads(line)["loss"] for line in (root / "run" / stage / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_training_stages_lower_their_losses(i23d):
    for stage, factor in (("structure_vae", 0.5), ("structure_flow", 0.6), ("latent_flow", 0.9)):
        losses = stage_losses(i23d, stage)
        start, end = np.mean(losses[:10]), np.mean(losses[-10:])
        print(f"image-to-3D {stage}: loss of the first 10 steps {start:.3f}, of the last 10 {end:.3f}")
        assert end < factor * start


@pytest.mark.slow
def test_stage1_occupancy_of_a_training_object_beats_chance(i23d, one_thread):
    from atoken_diffusers.generation.three_d.data import VoxelLatentSet

    pipe = ATokenImageTo3DPipeline.from_pretrained(i23d / "run" / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    data = VoxelLatentSet(i23d / "data")
    truth = [data.batch(torch.tensor([i]))["occupancy"] > 0 for i in range(len(MESHES))]
    renders = torch.stack([obj["renders"][0] for obj in data.objects]).float() / 255  # view 0 of every object
    out = pipe(list(renders), num_inference_steps=20, guidance_scale=1.0, output_type="latent",
               generator=torch.Generator().manual_seed(0))
    scores = []
    for i, name in enumerate(MESHES):
        pred = out.occupancy_logits[i:i + 1] > 0
        own = iou(pred, truth[i])
        others = max(iou(pred, truth[j]) for j in range(len(MESHES)) if j != i)
        p, q = truth[i].float().mean().item(), pred.float().mean().item()
        chance = p * q / (p + q - p * q)  # expected IoU of as many voxels placed uniformly at random
        print(f"stage-1 occupancy of {name}: IoU {own:.3f} with its own voxels ({truth[i].sum()} true, {pred.sum()} "
              f"generated); chance {chance:.4f}; best IoU with another object {others:.3f}")
        scores.append((own, chance, others))
    for own, chance, others in scores:
        assert own > 0.15 and own > 5 * chance and own > 3 * others


@pytest.mark.slow
def test_image_to_ply_and_the_cli(i23d, tmp_path, capsys, one_thread):
    from PIL import Image

    from atoken_diffusers.cli.main import main
    from atoken_diffusers.generation.three_d.data import VoxelLatentSet

    fox = VoxelLatentSet(i23d / "data").objects[2]["renders"][1]  # the fox, condition view 1
    Image.fromarray(fox.permute(1, 2, 0).numpy()).save(tmp_path / "fox.png")
    out = tmp_path / "fox.ply"
    main(["generate", "3d", str(tmp_path / "fox.png"), "--pipeline", str(i23d / "run" / "pipeline"), "--steps", "8",
          "--out", str(out)])
    printed = capsys.readouterr().out
    gaussians = Gaussians.load_ply(out)
    assert f"wrote {out} ({len(gaussians)} Gaussians" in printed and len(gaussians) > 0
    assert gaussians.xyz.min() >= -0.52 and gaussians.xyz.max() <= 0.52  # inside the object's box
    with pytest.raises(SystemExit, match="atoken generate 3d: .*is not a readable image"):
        main(["generate", "3d", media_mesh("Fox.gltf"), "--pipeline", str(i23d / "run" / "pipeline"),
              "--out", str(out)])
