"""ATokenDiT + ATokenDiTPipeline: a tiny class-conditional DiT trained (through the CLI) on latents of two classes of
real photo crops; falling loss, class-following samples, determinism, save/reload, resume, bad input."""

from __future__ import annotations

import argparse
import json
import shutil

import numpy as np
import pytest
import torch

from atoken_diffusers.generation import ATokenDiT, ATokenDiTPipeline, DiTTrainer, GeneratorTrainConfig, LatentShards
from atoken_diffusers.generation.data.latent_stats import latent_normalization, normalize_latents
from tests.conftest import assert_same_run, max_difference
from tests.generation_data import threads

STEPS = 400


def run_cli(module, *argv: str):
    parser = argparse.ArgumentParser()
    module.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def dit_run(gen_data, tmp_path_factory):
    from atoken_diffusers.cli import train_generator

    out = tmp_path_factory.mktemp("dit")
    with threads(1):
        run_cli(train_generator, "train-generator", "dit", "--shards", str(gen_data.shards), "--output-dir", str(out),
                "--preset", "tiny", "--max-steps", str(STEPS), "--batch-size", "18", "--lr", "2e-3",
                "--set", "optim.warmup_steps=10", "--set", "optim.min_lr=2e-4", "--set", "run.ema_decay=0",
                "--set", "run.checkpoint_every=200", "--set", "run.log_every=1")
    return out


@pytest.fixture(scope="module")
def pipe(dit_run):
    p = ATokenDiTPipeline.from_pretrained(dit_run / "pipeline")
    p.set_progress_bar_config(disable=True)
    return p


def test_loss_falls(dit_run):
    losses = [json.loads(line)["loss"] for line in (dit_run / "log.jsonl").read_text().splitlines()]
    assert len(losses) == STEPS
    start, end = np.mean(losses[:20]), np.mean(losses[-20:])
    print(f"DiT flow-matching loss: first 20 steps {start:.3f}, last 20 steps {end:.3f}")
    assert start > 1.5 and end < 0.5 * start
    assert sorted(p.name for p in (dit_run / "checkpoints").iterdir()) == ["checkpoint-00000200", "checkpoint-00000400"]


def test_samples_are_nearest_to_their_class(pipe, gen_data, one_thread):
    """Distance: L2 in the normalised latent space (VAE latents_mean/std) to each class's mean latent."""
    data = LatentShards(gen_data.shards).tensors
    stats = latent_normalization(pipe.vae.config)
    assert stats is not None  # the trainer stored the shards' statistics in the exported VAE config
    z = normalize_latents(data["latents"], stats)
    means = torch.stack([z[data["labels"] == c].mean(0) for c in (0, 1)]).flatten(1)
    wanted = torch.tensor([0] * 6 + [1] * 6)
    out = pipe(class_labels=wanted.tolist(), num_inference_steps=20, guidance_scale=2.0,
               generator=torch.Generator().manual_seed(0), output_type="latent").images
    assert out.shape == (12, 12, 3, 3)
    dist = torch.cdist(normalize_latents(out, stats).flatten(1), means)  # (12 samples, 2 classes)
    own, other = dist.gather(1, wanted[:, None])[:, 0], dist.gather(1, 1 - wanted[:, None])[:, 0]
    print(f"DiT samples: distance to own class mean {own.mean():.2f}, to the other class mean {other.mean():.2f} "
          f"(class means {torch.dist(means[0], means[1]):.2f} apart)")
    assert (own < other).all()
    # by name, too
    by_name, by_id = (pipe(class_labels=label, num_inference_steps=4, generator=torch.Generator().manual_seed(0),
                           output_type="latent").images for label in (["space", "cat"], [1, 0]))
    torch.testing.assert_close(by_name, by_id, rtol=0, atol=0)


def test_sampling_is_deterministic_and_survives_save_and_reload(pipe, tmp_path, one_thread):
    def sample(p, seed=0):
        return p(class_labels=[1, 0], num_inference_steps=6, guidance_scale=3.0,
                 generator=torch.Generator().manual_seed(seed), output_type="np").images

    first = sample(pipe)
    assert first.shape == (2, 48, 48, 3) and 0 <= first.min() and first.max() <= 1
    assert_same_run(first, sample(pipe))
    assert max_difference(first, sample(pipe, seed=1)) > 1e-2  # another seed really changes the samples
    pipe.save_pretrained(tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "model_index.json").read_text())
    assert index["transformer"] == ["atoken_diffusers.generation.image.dit", "ATokenDiT"]
    assert index["vae"] == ["atoken_diffusers.models.autoencoder_atoken", "AutoencoderAToken"]
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    reloaded = ATokenDiTPipeline.from_pretrained(tmp_path / "copy")
    reloaded.set_progress_bar_config(disable=True)
    assert_same_run(sample(reloaded), first)
    pil = pipe(class_labels=0, num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images
    assert pil[0].size == (48, 48)


def test_bad_input_errors_name_the_argument(pipe):
    with pytest.raises(ValueError, match=r"class_labels: class id 2 is out of range.*ids 0\.\.1 \(0=cat, 1=space\)"):
        pipe(class_labels=[0, 2], num_inference_steps=1)
    with pytest.raises(ValueError, match="unknown class name 'dog'; known names: cat, space"):
        pipe(class_labels="dog", num_inference_steps=1)
    with pytest.raises(ValueError, match=r"guidance_scale must be >= 1 \(1 turns classifier-free guidance off\)"):
        pipe(class_labels=0, guidance_scale=0.5, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"height=40 must be a positive multiple of 16.*use 32 or 48"):
        pipe(class_labels=0, height=40, num_inference_steps=1)
    with pytest.raises(ValueError, match="output_type must be one of"):
        pipe(class_labels=0, output_type="jpeg", num_inference_steps=1)
    with pytest.raises(ValueError, match="latents must have shape"):
        pipe(class_labels=0, latents=torch.zeros(1, 12, 2, 2), num_inference_steps=1)
    with pytest.raises(ValueError, match="class_labels is required"):
        pipe(num_inference_steps=1)


def test_resumed_training_repeats_the_uninterrupted_run(gen_data, tmp_path, one_thread):
    def config(out, steps):
        return GeneratorTrainConfig.from_yaml(None, {
            "data.shards": str(gen_data.shards), "model.preset": "tiny", "run.output_dir": str(out),
            "run.max_steps": steps, "run.batch_size": 5, "run.checkpoint_every": 3, "run.ema_decay": 0.99,
            "optim.warmup_steps": 2, "run.log_every": 1})

    whole = DiTTrainer(config(tmp_path / "whole", 6)).train()
    # the state of a run killed between steps 3 and 6: its last checkpoint is step 3, no pipeline yet
    shutil.copytree(tmp_path / "whole", tmp_path / "split")
    shutil.rmtree(tmp_path / "split" / "checkpoints" / "checkpoint-00000006")
    shutil.rmtree(tmp_path / "split" / "pipeline")
    rest = DiTTrainer(config(tmp_path / "split", 6)).train()
    assert [r["step"] for r in rest] == [4, 5, 6]
    logged = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2, 3, 4, 5, 6]
    for a, b in zip(whole[3:], rest):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-7)
    w = ATokenDiT.from_pretrained(tmp_path / "whole" / "pipeline" / "transformer").state_dict()
    s = ATokenDiT.from_pretrained(tmp_path / "split" / "pipeline" / "transformer").state_dict()
    for name in w:  # the exported EMA weights agree
        torch.testing.assert_close(w[name], s[name], rtol=1e-4, atol=1e-6)


def test_text_conditioning_changes_the_condition():
    torch.manual_seed(0)
    model = ATokenDiT(in_channels=12, sample_size=3, hidden_size=32, num_layers=1, num_heads=1, num_classes=2,
                      text_embed_dim=8).eval()
    t = torch.tensor([500.0])
    a, b = torch.randn(2, 1, 8)
    assert not torch.allclose(model.condition(t, None, a, 1), model.condition(t, None, b, 1))
    torch.testing.assert_close(model.condition(t, torch.tensor([0]), None, 1),
                               model.condition(t, torch.tensor([0]), torch.zeros(1, 8), 1) - model.text_embed.bias)
    with pytest.raises(ValueError, match="hidden_size / num_heads must be a multiple of 8"):
        ATokenDiT(hidden_size=36, num_heads=3)


def test_cli_generate_writes_reproducible_images(dit_run, tmp_path, one_thread):
    from PIL import Image

    from atoken_diffusers.cli import generate

    for name in ("a", "b"):
        run_cli(generate, "generate", "image", "--pipeline", str(dit_run / "pipeline"), "--class-id", "1",
                "--seed", "0", "--steps", "4", "--guidance", "2", "--out", str(tmp_path / f"{name}.png"))
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        # two separate runs: float noise may flip a pixel's uint8 rounding, never by more than one level
        assert a.size == (48, 48) and np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    run_cli(generate, "generate", "image", "--pipeline", str(dit_run / "pipeline"), "--class-name", "cat", "space",
            "--steps", "2", "--out", str(tmp_path / "pair.png"))
    assert (tmp_path / "pair-0.png").is_file() and (tmp_path / "pair-1.png").is_file()
    with pytest.raises(SystemExit, match="class id 7 is out of range"):
        run_cli(generate, "generate", "image", "--pipeline", str(dit_run / "pipeline"), "--class-id", "7",
                "--out", str(tmp_path / "x.png"))


def test_text_conditional_dit_from_captioned_shards(gen_data, tmp_path, one_thread):
    """encode-dataset --text-model stores pooled caption embeddings (sidecar .txt captions); a DiT with
    text_embed_dim trains on them and the pipeline / CLI take prompts."""
    from atoken_diffusers.cli import generate
    from atoken_diffusers.generation.data.encode_dataset import encode_dataset
    from atoken_diffusers.understanding.text import TextTower
    from tests.text_models import make_siglip_text_tower

    captions = {"cat": "a photo of a cat", "space": "stars in deep space"}
    images = tmp_path / "images"
    shutil.copytree(gen_data.images, images)
    for png in images.rglob("*.png"):
        png.with_suffix(".txt").write_text(captions[png.parent.name])
    tower = make_siglip_text_tower(list(captions.values()), tmp_path / "text")
    encode_dataset(images, gen_data.vae, tmp_path / "shards", resolution=48, shard_size=9, text_model=str(tower))
    shards = LatentShards(tmp_path / "shards")
    assert shards.text_dim == 64 and shards.tensors["text_embeds"].shape == (18, 64)
    embeds = TextTower.from_pretrained(tower).encode(list(captions.values()))
    torch.testing.assert_close(shards.tensors["text_embeds"][[0, 9]], embeds, rtol=1e-4, atol=1e-5)

    config = GeneratorTrainConfig.from_yaml(None, {
        "data.shards": str(tmp_path / "shards"), "model.preset": "tiny", "model.overrides": {"text_embed_dim": 64},
        "run.output_dir": str(tmp_path / "run"), "run.max_steps": 30, "run.batch_size": 6, "run.ema_decay": 0,
        "optim.lr": 2e-3, "optim.warmup_steps": 5})
    records = DiTTrainer(config).train()
    assert records[-1]["loss"] < records[0]["loss"]
    pipe = ATokenDiTPipeline.from_pretrained(tmp_path / "run" / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    out = pipe(prompt_embeds=embeds, num_inference_steps=3, guidance_scale=2.0, output_type="latent",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (2, 12, 3, 3) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"prompt_embeds must be \(B, 64\)"):
        pipe(prompt_embeds=torch.zeros(1, 8), num_inference_steps=1)
    run_cli(generate, "generate", "image", "--pipeline", str(tmp_path / "run" / "pipeline"), "--prompt",
            "a photo of a cat", "--text-model", str(tower), "--steps", "2", "--out", str(tmp_path / "cat.png"))
    assert (tmp_path / "cat.png").is_file()
