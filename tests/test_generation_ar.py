"""ATokenARTransformer + ATokenARPipeline: a tiny class-conditional AR model trained on FSQ tokens of two classes of
real photo crops; falling loss, KV-cache decoding equal to the full forward pass, class-following samples,
determinism, save/reload, sampling filters, bad input."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.generation import (
    ARTrainer,
    ATokenARPipeline,
    ATokenARTransformer,
    GeneratorTrainConfig,
    LatentShards,
)
from atoken_diffusers.generation.image.sampling import sample_logits
from tests.conftest import assert_same_run
from tests.generation_data import threads

STEPS = 150


@pytest.fixture(scope="module")
def ar_run(gen_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ar")
    config = GeneratorTrainConfig.from_yaml(None, {
        "data.shards": str(gen_data.shards), "model.preset": "tiny", "run.output_dir": str(out),
        "run.max_steps": STEPS, "run.batch_size": 18, "run.ema_decay": 0, "run.checkpoint_every": 100,
        "optim.lr": 2e-3, "optim.min_lr": 2e-4, "optim.warmup_steps": 10})
    with threads(1):
        records = ARTrainer(config).train()
    return out, records


@pytest.fixture(scope="module")
def pipe(ar_run):
    p = ATokenARPipeline.from_pretrained(ar_run[0] / "pipeline")
    p.set_progress_bar_config(disable=True)
    return p


def test_loss_falls(ar_run):
    losses = [r["loss"] for r in ar_run[1]]
    start, end = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"AR cross-entropy: first 10 steps {start:.3f}, last 10 steps {end:.3f} (uniform over 4096 codes: "
          f"{np.log(4096):.3f})")
    assert start > 6 and end < 0.25 * start
    assert (ar_run[0] / "pipeline" / "model_index.json").is_file()


def test_kv_cache_decoding_equals_the_full_forward_pass():
    torch.manual_seed(0)
    model = ATokenARTransformer(num_codebooks=3, codebook_size=16, sample_size=4, hidden_size=32, num_layers=2,
                                num_heads=2, head_hidden_size=16, head_layers=2, head_heads=2, num_classes=3).eval()
    grid = (3, 4)  # not the table size and not square: the position table is resized
    indices = torch.randint(0, 16, (2, 3, *grid))
    labels = torch.tensor([2, 0])
    with torch.no_grad():
        full = model(indices, labels)  # (2, 3, 3, 4, 16)
        backbone, head = model.new_caches(2, grid[0] * grid[1])
        seq = indices.flatten(2).transpose(1, 2)  # (2, 12, 3)
        stepped = torch.empty(2, 12, 3, 16)
        for j in range(12):
            h = model.step_backbone(backbone, grid, labels, seq[:, j - 1] if j else None)
            head.reset()
            for c in range(3):
                stepped[:, j, c] = model.step_head(head, h, seq[:, j, c - 1] if c else None)
    torch.testing.assert_close(stepped, full.flatten(2, 3).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_samples_agree_with_their_class_tokens(pipe, gen_data, one_thread):
    """Agreement: fraction of equal indices (1 - normalised Hamming distance) to the nearest training sample of a
    class."""
    data = LatentShards(gen_data.shards).tensors
    tokens, labels = data["indices"].long(), data["labels"]
    wanted = torch.tensor([0] * 6 + [1] * 6)
    out = pipe(class_labels=wanted.tolist(), guidance_scale=2.0, top_k=20,
               generator=torch.Generator().manual_seed(0), output_type="indices")
    assert out.indices.shape == (12, 2, 3, 3) and torch.equal(out.images, out.indices)
    agree = (out.indices[:, None] == tokens[None]).flatten(2).float().mean(-1)  # (12 samples, 18 training samples)
    nearest = torch.stack([agree[:, labels == c].max(1).values for c in (0, 1)], 1)  # (12, 2)
    own, other = nearest.gather(1, wanted[:, None])[:, 0], nearest.gather(1, 1 - wanted[:, None])[:, 0]
    print(f"AR samples: index agreement with the nearest sample of their own class {own.mean():.2f}, of the other "
          f"class {other.mean():.2f}")
    assert (own > other).all() and own.mean() > 0.8


def test_sampling_is_deterministic_and_survives_save_and_reload(pipe, tmp_path, one_thread):
    def sample(p, seed=0, **kw):
        return p(class_labels=[1, 0], guidance_scale=3.0, top_p=0.9, generator=torch.Generator().manual_seed(seed),
                 output_type="np", **kw)

    first = sample(pipe)
    assert first.images.shape == (2, 48, 48, 3) and 0 <= first.images.min() and first.images.max() <= 1
    again = sample(pipe)
    assert torch.equal(first.indices, again.indices)  # sampled token ids: integers, exact
    assert_same_run(first.images, again.images)
    assert not torch.equal(first.indices, sample(pipe, seed=1, temperature=2.0).indices)
    pipe.save_pretrained(tmp_path / "copy")
    index = json.loads((tmp_path / "copy" / "model_index.json").read_text())
    assert index["transformer"] == ["atoken_diffusers.generation.image.ar_transformer", "ATokenARTransformer"]
    reloaded = ATokenARPipeline.from_pretrained(tmp_path / "copy")
    reloaded.set_progress_bar_config(disable=True)
    assert torch.equal(sample(reloaded).indices, first.indices)
    # the images are the VAE's decoding of the indices
    latents = pipe(class_labels=[1, 0], guidance_scale=3.0, top_p=0.9, generator=torch.Generator().manual_seed(0),
                   output_type="latent").images
    torch.testing.assert_close(latents, pipe.vae.detokenize(first.indices))


def test_sampling_filters():
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]]).repeat(500, 1)
    assert (sample_logits(logits, temperature=0) == 1).all()
    assert (sample_logits(logits, top_k=1, generator=gen) == 1).all()
    assert (sample_logits(logits, top_p=0.01, generator=gen) == 1).all()
    top2 = sample_logits(logits, top_k=2, generator=gen)
    assert set(top2.tolist()) == {1, 3}
    nucleus = sample_logits(logits, top_p=0.8, generator=gen)  # p = 0.64, 0.24, 0.09, 0.03: keeps indices 1 and 3
    assert set(nucleus.tolist()) == {1, 3}
    free = sample_logits(logits, generator=gen)
    assert set(free.tolist()) == {0, 1, 2, 3}


def test_bad_input_errors_name_the_argument(pipe, converted_dirs):
    with pytest.raises(ValueError, match=r"class_labels: class id 5 is out of range.*ids 0\.\.1"):
        pipe(class_labels=5)
    with pytest.raises(ValueError, match=r"guidance_scale must be >= 1"):
        pipe(class_labels=0, guidance_scale=0.9)
    with pytest.raises(ValueError, match=r"width=50 must be a positive multiple of 16.*use 48 or 64"):
        pipe(class_labels=0, width=50)
    with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\]"):
        pipe(class_labels=0, top_p=1.5)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        pipe(class_labels=0, temperature=-1.0)
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        pipe(class_labels=0, top_k=0)
    plain_vae = AutoencoderAToken.from_pretrained(converted_dirs["plain"])
    plain = ATokenARPipeline(transformer=pipe.transformer, vae=plain_vae)
    with pytest.raises(ValueError, match="no FSQ quantizer"):
        plain(class_labels=0)
    with pytest.raises(ValueError, match="indices has 3 codebooks; this model predicts 2"):
        pipe.transformer(torch.zeros(1, 3, 2, 2, dtype=torch.long), torch.tensor([0]))


def test_cli_generate_with_the_ar_pipeline(ar_run, tmp_path, one_thread):
    from PIL import Image

    from atoken_diffusers.cli import generate

    parser = argparse.ArgumentParser()
    generate.add_parser(parser.add_subparsers(dest="command", required=True))
    for name in ("a", "b"):
        args = parser.parse_args(["generate", "image", "--pipeline", str(ar_run[0] / "pipeline"), "--class-name",
                                  "space", "--seed", "3", "--top-k", "50", "--out", str(tmp_path / f"{name}.png")])
        args.func(args)
    with Image.open(tmp_path / "a.png") as a, Image.open(tmp_path / "b.png") as b:
        # two separate runs: float noise may flip a pixel's uint8 rounding, never by more than one level
        assert a.size == (48, 48) and np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
