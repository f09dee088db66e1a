"""Text-to-video with diffusers' Wan pipeline on AToken latents: the plain WanPipeline and our checked subclass run end
to end with tiny random parts (frame counts, sizes, save/reload, bad input), image-to-video, and a tiny Wan transformer
trained on real clips cut from gradio's bundled videos with fixed captions (falling loss, deterministic samples that
land on their own clips, the CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from atoken_diffusers import AutoencoderAToken
from atoken_diffusers.generation.video.geometry import decoded_num_frames
from atoken_diffusers.generation.video.pipeline_wan import ATokenWanImageToVideoPipeline, ATokenWanPipeline
from atoken_diffusers.generation.video.wan import (
    build_wan_pipeline,
    build_wan_transformer,
    load_text_encoder,
    set_latent_stats,
)
from tests.conftest import assert_same_run, max_difference, real_image
from tests.generation_data import threads
from tests.text_models import make_tokenizer

FRAMES, SIZE = 8, 64  # training clips: 8 frames (2 latent frames) of 64 x 64
CLIPS = {  # name: (gradio video, first frame, caption)
    "blank": ("a.mp4", 0, "a plain grey screen"),
    "title": ("a.mp4", 60, "yellow words on a grey screen"),
    "thanks": ("a.mp4", 120, "a thank you note on grey"),
    "earth0": ("world.mp4", 0, "the earth at night turning"),
    "earth1": ("world.mp4", 300, "city lights on the dark planet"),
    "earth2": ("world.mp4", 600, "a blue globe in black space"),
}


def make_umt5(folder: Path, words: list[str]) -> Path:
    """A 2-layer UMT5 encoder of width 32 with a word-level tokenizer, saved to ``folder``."""
    from transformers import UMT5Config, UMT5EncoderModel

    tok = make_tokenizer(words, folder)
    torch.manual_seed(0)
    config = UMT5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    UMT5EncoderModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def umt5_dir(tmp_path_factory) -> Path:
    words = [c for _, _, c in CLIPS.values()] + ["a red car on a road"]
    return make_umt5(tmp_path_factory.mktemp("umt5"), words)


@pytest.fixture()
def parts(converted_dirs, umt5_dir):
    vae = AutoencoderAToken.from_pretrained(converted_dirs["plain"]).eval()  # 12 latent channels
    tokenizer, text_encoder = load_text_encoder(umt5_dir)
    return vae, tokenizer, text_encoder


def test_plain_wan_pipeline_runs_with_the_atoken_vae(parts, one_thread):
    from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

    vae, tokenizer, text_encoder = parts
    set_latent_stats(vae, (torch.full((12,), 0.1), torch.full((12,), 0.5)))
    assert (vae.config.z_dim, vae.config.scale_factor_temporal, vae.config.scale_factor_spatial) == (12, 4, 16)
    torch.manual_seed(0)
    for patch, (h, w) in (((1, 2, 2), (32, 64)), ((1, 1, 1), (16, 48))):
        transformer = build_wan_transformer(12, text_encoder.config.d_model, "tiny", patch)
        pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                           scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0))
        pipe.set_progress_bar_config(disable=True)
        for num_frames in (1, 5, 9):
            out = pipe("a red car on a road", num_frames=num_frames, height=h, width=w, num_inference_steps=2,
                       max_sequence_length=16, output_type="np", generator=torch.Generator().manual_seed(0)).frames
            # k + 1 latent frames, each decoded by AToken to 4 frames
            assert out.shape == (1, decoded_num_frames(num_frames), h, w, 3)
            assert decoded_num_frames(num_frames) == 4 * ((num_frames - 1) // 4 + 1)
            assert np.isfinite(out).all() and 0 <= out.min() and out.max() <= 1
    latents = pipe("a red car", num_frames=9, height=16, width=48, num_inference_steps=2, max_sequence_length=16,
                   output_type="latent").frames
    assert latents.shape == (1, 12, 3, 1, 3)  # (B, z_dim, k + 1, H / 16, W / 16), still normalised


def test_checked_pipeline_saves_reloads_and_rejects_bad_input(parts, tmp_path, one_thread):
    vae, tokenizer, text_encoder = parts
    torch.manual_seed(0)
    pipe = build_wan_pipeline(vae, text_encoder, tokenizer, preset="tiny", max_sequence_length=16,
                              default_num_frames=5, default_height=32, default_width=32)
    assert isinstance(pipe, ATokenWanPipeline) and vae.config.latents_std == [1.0] * 12  # identity when missing
    pipe.set_progress_bar_config(disable=True)

    def sample(p, seed=0):
        return p("a red car", num_inference_steps=3, output_type="np",
                 generator=torch.Generator().manual_seed(seed)).frames

    first = sample(pipe)
    assert first.shape == (1, 8, 32, 32, 3)  # the stored defaults: 5 frames -> 2 latent frames -> 8 frames
    assert_same_run(first, sample(pipe))
    pipe.save_pretrained(tmp_path / "wan")
    index = json.loads((tmp_path / "wan" / "model_index.json").read_text())
    assert index["vae"] == ["atoken_diffusers.models.autoencoder_atoken", "AutoencoderAToken"]
    assert index["transformer"] == ["diffusers", "WanTransformer3DModel"] and index["default_num_frames"] == 5
    reloaded = ATokenWanPipeline.from_pretrained(tmp_path / "wan")
    reloaded.set_progress_bar_config(disable=True)
    assert_same_run(sample(reloaded), first)

    with pytest.raises(ValueError, match="prompt is required"):
        pipe(num_inference_steps=1)
    with pytest.raises(ValueError, match=r"num_frames=8 is not of the form 4k \+ 1.*use 5 or 9"):
        pipe("a red car", num_frames=8, num_inference_steps=1)
    with pytest.raises(ValueError, match="num_frames must be a positive integer"):
        pipe("a red car", num_frames=0, num_inference_steps=1)
    with pytest.raises(ValueError, match=r"height=40 must be a positive multiple of 32.*use 32 or 64"):
        pipe("a red car", height=40, num_inference_steps=1)
    with pytest.raises(ValueError, match="prompt must be a string or a non-empty list of strings"):
        pipe(prompt=["a red car", 3], num_inference_steps=1)
    with pytest.raises(ValueError, match="num_inference_steps must be a positive integer"):
        pipe("a red car", num_inference_steps=0)
    vae.register_to_config(latents_mean=None)
    with pytest.raises(ValueError, match=r"vae.config.latents_mean must list 12 values"):
        pipe("a red car", num_inference_steps=1)


def test_image_to_video_pipeline(parts, tmp_path, one_thread):
    vae, tokenizer, text_encoder = parts
    torch.manual_seed(0)
    pipe = build_wan_pipeline(vae, text_encoder, tokenizer, preset="tiny", image_to_video=True,
                              max_sequence_length=16, default_num_frames=5, default_height=32, default_width=64)
    assert isinstance(pipe, ATokenWanImageToVideoPipeline)
    assert pipe.transformer.config.in_channels == 2 * 12 + 4  # noisy latents, first-frame mask, condition latents
    pipe.set_progress_bar_config(disable=True)
    image = (real_image(32, 64)[0] + 1) / 2  # the astronaut photograph, (3, 32, 64) in [0, 1]
    out = pipe(image, "a red car", num_inference_steps=2, output_type="np",
               generator=torch.Generator().manual_seed(0)).frames
    assert out.shape == (1, 8, 32, 64, 3) and np.isfinite(out).all()
    pipe.save_pretrained(tmp_path / "i2v")
    reloaded = ATokenWanImageToVideoPipeline.from_pretrained(tmp_path / "i2v")
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded(image, "a red car", num_inference_steps=2, output_type="np",
                     generator=torch.Generator().manual_seed(0)).frames
    assert_same_run(out, again)
    with pytest.raises(TypeError, match="image must be an image"):
        pipe(torch.rand(1, 3, 5, 32, 64), "a red car", num_inference_steps=1)  # a video is not a first frame
    with pytest.raises(ValueError, match="image must be one image"):
        pipe(torch.rand(2, 3, 32, 64), "a red car", num_inference_steps=1)
    with pytest.raises(ValueError, match="expand_timesteps=True"):
        ATokenWanImageToVideoPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                                      scheduler=pipe.scheduler, expand_timesteps=True)


# ------------------------------------------------------------------------------------------------ training


def read_clip(path: Path, start: int, count: int, size: int) -> torch.Tensor:
    """Frames start .. start + count - 1 of a video (PyAV), shorter side to ``size``, centre-cropped: (3, T, S, S)
    in [-1, 1]."""
    import av

    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < start:
                continue
            scale = size / min(frame.width, frame.height)
            w, h = round(frame.width * scale), round(frame.height * scale)
            rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
            top, left = (h - size) // 2, (w - size) // 2
            frames.append(rgb[top:top + size, left:left + size])
            if len(frames) == count:
                break
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).float() / 127.5 - 1


@pytest.fixture(scope="module")
def wan_data(converted_dirs, tmp_path_factory) -> Path:
    """Six 8-frame clips of gradio's videos with fixed captions (sidecar .txt), encoded with the tiny AToken."""
    gradio = pytest.importorskip("gradio")
    from atoken_diffusers.generation.data.encode_dataset import encode_dataset
    from atoken_diffusers.utils.media import save_video

    root = tmp_path_factory.mktemp("wan")
    videos = Path(gradio.__file__).parent / "media_assets" / "videos"
    clips = root / "clips"
    clips.mkdir()
    for name, (video, start, caption) in CLIPS.items():
        save_video(read_clip(videos / video, start, FRAMES, SIZE), clips / f"{name}.mp4", fps=30)
        (clips / f"{name}.txt").write_text(caption)
    with threads(1):
        encode_dataset(clips, converted_dirs["plain"], root / "shards", resolution=SIZE, shard_size=4, videos=True,
                       frames=FRAMES)
    return root


def train_args(data: Path, umt5_dir: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["--shards", str(data / "shards"), "--text-encoder", str(umt5_dir), "--data-root", str(data / "clips"),
            "--output-dir", str(out), "--preset", "tiny", "--max-steps", str(steps),
            "--set", "run.batch_size=6", "--set", "optim.lr=2e-3", "--set", "optim.warmup_steps=10",
            "--set", "run.log_every=1", "--set", "text.max_sequence_length=16", *extra]


@pytest.fixture(scope="module")
def wan_run(wan_data, umt5_dir):
    """A tiny Wan transformer trained on the clips through the training script's command line."""
    from atoken_diffusers.generation.video.train_wan import main

    with threads(1):
        main(train_args(wan_data, umt5_dir, wan_data / "run", 800, "--set", "optim.min_lr=2e-4",
                        "--set", "run.ema_decay=0", "--set", "run.checkpoint_every=400"))
    return wan_data


def test_resumed_wan_training_repeats_the_uninterrupted_run(wan_data, umt5_dir, tmp_path, one_thread):
    from atoken_diffusers.generation.video.train_wan import main

    # a constant rate after warm-up, so that a run stopped at step 10 and continued to 20 is the 20-step run
    args = ("--set", "optim.min_lr=2e-3", "--set", "run.checkpoint_every=10")
    full = main(train_args(wan_data, umt5_dir, tmp_path / "full", 20, *args))
    main(train_args(wan_data, umt5_dir, tmp_path / "part", 10, *args))
    rest = main(train_args(wan_data, umt5_dir, tmp_path / "part", 20, *args))
    assert [r["step"] for r in rest] == list(range(11, 21))
    assert [r["loss"] for r in rest] == [r["loss"] for r in full[10:]]


@pytest.mark.slow
def test_t2v_training_on_real_clips(wan_run, one_thread):
    from atoken_diffusers.generation.data.latent_stats import latent_normalization, normalize_latents
    from atoken_diffusers.generation.data.shards import LatentShards
    from atoken_diffusers.generation.video.train_wan import sample_captions

    losses = [json.loads(line)["loss"] for line in (wan_run / "run" / "log.jsonl").read_text().splitlines()]
    start, end = np.mean(losses[:20]), np.mean(losses[-20:])
    print(f"Wan flow-matching loss on 6 real clips: first 20 steps {start:.3f}, last 20 steps {end:.3f}")
    assert len(losses) == 800 and start > 1.5 and end < 0.45 * start

    pipe = ATokenWanPipeline.from_pretrained(wan_run / "run" / "pipeline")
    pipe.set_progress_bar_config(disable=True)
    assert (pipe.config.default_num_frames, pipe.config.default_height) == (FRAMES - 3, SIZE)
    shards = LatentShards(wan_run / "shards", "videos")
    captions = sample_captions(shards, data_root=str(wan_run / "clips"))
    stats = latent_normalization(pipe.vae.config)
    data = normalize_latents(shards.tensors["latents"], stats).flatten(1)
    out = pipe(captions, num_inference_steps=20, guidance_scale=2.0, output_type="latent",
               generator=torch.Generator().manual_seed(0)).frames  # normalised latents
    dist = torch.cdist(out.flatten(1), data)  # (6 samples, 6 clips)
    nearest = dist.argmin(1)
    video_of = {caption: video for video, _, caption in CLIPS.values()}
    group = torch.tensor([video_of[c] == "world.mp4" for c in captions]).long()
    print(f"Wan samples: nearest clip = own clip for {(nearest == torch.arange(6)).sum()} of 6; distance to own clip "
          f"{dist.diagonal().mean():.1f}, to other clips {dist[~torch.eye(6, dtype=bool)].mean():.1f}")
    assert (group[nearest] == group).all()  # grey-card captions give grey cards, earth captions the earth
    assert (nearest == torch.arange(6)).sum() >= 4

    def frames(seed):
        return pipe(captions[0], num_inference_steps=4, output_type="np",
                    generator=torch.Generator().manual_seed(seed)).frames

    video = frames(0)
    assert video.shape == (1, FRAMES, SIZE, SIZE, 3)  # 5 frames asked (the default) -> 2 latent frames -> 8
    assert_same_run(video, frames(0))
    assert max_difference(video, frames(1)) > 1e-2  # another seed really changes the clip


@pytest.mark.slow
def test_generate_video_cli(wan_run, tmp_path, capsys, one_thread):
    import av

    from atoken_diffusers.cli.main import main

    out = tmp_path / "clip.mp4"
    main(["generate", "video", "--pipeline", str(wan_run / "run" / "pipeline"), "--prompt", "a plain grey screen",
          "--num-frames", "5", "--steps", "3", "--out", str(out)])
    assert "8 frames of 64 x 64" in capsys.readouterr().out
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 8
    with pytest.raises(SystemExit, match=r"--num-frames=6 is not of the form 4k \+ 1"):
        main(["generate", "video", "--pipeline", str(wan_run / "run" / "pipeline"), "--prompt", "a car",
              "--num-frames", "6", "--out", str(out)])
    with pytest.raises(SystemExit):
        main(["generate", "video", "--pipeline", str(wan_run / "run" / "pipeline"), "--out", str(out)])
    assert "the following arguments are required: --prompt" in capsys.readouterr().err
