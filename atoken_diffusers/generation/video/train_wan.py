"""Training a Wan transformer (text-to-video) on pre-encoded AToken video latents and their captions.

Data: the shards of ``atoken encode-dataset DATA --videos --frames F`` (F = 4 (k + 1); kind ``videos``), captions
per clip from ``text.captions`` (JSON {file name or path relative to DATA: caption}), or sidecar ``.txt`` files under
``text.data_root`` (= DATA; the file name when there is none), or else the class sub-folder names. Captions are
embedded by the frozen UMT5/T5 ``text.encoder`` exactly as :class:`ATokenWanPipeline` does at sampling (cached).

Objective (rectified flow, as Wan): x_0 = (latent - latents_mean) / latents_std, x_s = (1 - s) x_0 + s noise,
loss = || transformer(x_s, 1000 s, text) - (noise - x_0) ||^2, s logit-normal (or uniform) and shifted; captions are
replaced by the empty prompt (Wan's default negative prompt) with probability ``run.class_dropout`` for guidance.
The run folder ends with ``pipeline/``, an :class:`ATokenWanPipeline` sampling ``num_frames = F - 3`` frames by
default (decoded to F). Resumable; ``accelerate launch`` for several processes.

    python -m atoken_diffusers.generation.video.train_wan --shards runs/video-shards --text-encoder umt5 \\
        --output-dir runs/wan --preset S --max-steps 100000
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ...utils.media_sets import caption_for
from ..data.latent_stats import latent_normalization, normalize_latents, stats_from_latents
from ..training.config import DataConfig, FlowConfig, GeneratorTrainConfig, ModelSpec
from ..training.loop import GeneratorTrainer
from .geometry import SPATIAL, TEMPORAL
from .wan import WAN_PRESETS, build_wan_transformer, load_text_encoder, prompt_encoder


@dataclass
class TextConfig:
    encoder: str = ""                    # local UMT5/T5 folder (or one with text_encoder/ and tokenizer/)
    captions: str | None = None          # JSON {file name or DATA-relative path: caption}
    data_root: str | None = None         # the folder the shards were encoded from (sidecar .txt captions)
    max_sequence_length: int = 512       # text tokens (padded); stored as the pipeline's default
    cache_size: int = 4096               # caption embeddings kept in memory


@dataclass
class WanTrainConfig(GeneratorTrainConfig):
    """:class:`GeneratorTrainConfig` plus a ``text`` section; ``model.preset`` names ``WAN_PRESETS`` and
    ``model.overrides`` takes any ``WanTransformer3DModel`` argument (e.g. ``patch_size: [1, 1, 1]``)."""

    model: ModelSpec = field(default_factory=lambda: ModelSpec(preset="S"))
    data: DataConfig = field(default_factory=lambda: DataConfig(kind="videos"))
    flow: FlowConfig = field(default_factory=lambda: FlowConfig(shift=3.0))
    text: TextConfig = field(default_factory=TextConfig)

    def validate(self) -> None:
        super().validate()
        if self.data.kind != "videos":
            raise ValueError(f"data.kind must be videos for text-to-video; got {self.data.kind!r}.")
        if not self.text.encoder:
            raise ValueError("text.encoder is not set; pass a local UMT5/T5 folder (--text-encoder DIR).")
        if self.text.max_sequence_length < 1:
            raise ValueError(f"text.max_sequence_length must be >= 1; got {self.text.max_sequence_length}.")


def sample_captions(shards, captions: str | None = None, data_root: str | None = None) -> list[str]:
    """One caption per sample of ``shards`` (a :class:`LatentShards`), in sample order (see the module doc)."""
    plan_path = shards.folder / "plan.json"
    if not plan_path.is_file():
        raise FileNotFoundError(f"{shards.folder} has no plan.json (written by `atoken encode-dataset`); captions are "
                                "matched to clips through it.")
    entry = json.loads(plan_path.read_text())["kinds"][shards.kind]
    files, labels = entry["files"], entry["labels"]
    if captions:
        table = json.loads(Path(captions).read_text())
        missing = [f for f in files if f not in table and Path(f).name not in table]
        if missing:
            raise ValueError(f"text.captions {captions} has no caption for {missing[:5]} (keys: file names or paths "
                             "relative to the data folder).")
        return [table.get(f, table.get(Path(f).name)) for f in files]
    if data_root:
        return [caption_for(Path(data_root) / f) for f in files]
    if shards.num_classes < 2:
        raise ValueError("no captions: set text.captions (a JSON file) or text.data_root (the encoded folder, for "
                         "sidecar .txt captions); class names caption only data with several class sub-folders.")
    return [shards.classes[label].replace("_", " ").replace("-", " ") for label in labels]


class _IndexedShards:
    """The shards, with each batch also carrying its sample indices (to look captions up)."""

    def __init__(self, shards):
        self.base = shards

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):
        return getattr(self.base, name)

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        return {**self.base.batch(index), "index": torch.as_tensor(index, dtype=torch.long)}


class WanTrainer(GeneratorTrainer):
    def load_data(self):
        return _IndexedShards(super().load_data())

    def build_model(self):
        from ...models.autoencoder_atoken import AutoencoderAToken

        data, text = self.data, self.config.text
        if len(data.latent_shape) != 4:
            raise ValueError(f"the shards hold latents of shape {data.latent_shape}; text-to-video needs video "
                             "latents (C, t, h, w): encode with --videos.")
        channels, t, h, w = data.latent_shape
        spec = self.config.model
        self.model_kwargs(WAN_PRESETS)  # checks the preset name
        overrides = dict(spec.overrides)
        patch = tuple(overrides.pop("patch_size", (1, 2, 2)))
        vae_config = AutoencoderAToken.load_config(self.vae_path())
        spatial = vae_config.get("scale_factor_spatial") or SPATIAL  # configs before the alias existed: AToken's 16
        if h % patch[1] or w % patch[2]:
            raise ValueError(f"latent grid {h} x {w} is not divisible by patch_size {patch}; encode at a resolution "
                             f"that is a multiple of {spatial * patch[1]}, or use patch_size [1, 1, 1].")
        self.captions = sample_captions(data.base, text.captions, text.data_root)
        self.tokenizer, self.text_encoder = load_text_encoder(text.encoder)
        self.text_encoder.requires_grad_(False).to(self.accelerator.device)
        self.encode = prompt_encoder(self.tokenizer, self.text_encoder)
        self.cache: dict[str, torch.Tensor] = {}
        self.stats = latent_normalization(vae_config, channels)
        if self.stats is None:
            self.stats = stats_from_latents(data.iter_latents())
            self.accelerator.print("the VAE config has no latents_mean/latents_std: using statistics of the shards "
                                   "(stored in the exported pipeline's VAE config).")
        self.latent_frames, self.latent_size = t, (h, w)
        temporal = vae_config.get("scale_factor_temporal") or TEMPORAL
        return build_wan_transformer(channels, self.text_encoder.config.d_model, spec.preset, patch,
                                     temporal=temporal, **overrides)

    @torch.no_grad()
    def embed(self, captions: list[str], device) -> torch.Tensor:
        """(B, max_sequence_length, D) embeddings, computed once per distinct caption (up to ``cache_size``)."""
        new = sorted({c for c in captions if c not in self.cache})
        if new:
            if len(self.cache) + len(new) > self.config.text.cache_size:
                self.cache.clear()
            emb = self.encode.encode_prompt(new, do_classifier_free_guidance=False,
                                            max_sequence_length=self.config.text.max_sequence_length,
                                            device=self.text_encoder.device)[0]
            self.cache.update(zip(new, emb.float().cpu()))
        return torch.stack([self.cache[c] for c in captions]).to(device)

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        flow, device = self.config.flow, batch["latents"].device
        x0 = normalize_latents(batch["latents"], self.stats)
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator).to(device)
        u = (torch.sigmoid(torch.randn(b, generator=generator)) if flow.timestep_sampling == "logit_normal"
             else torch.rand(b, generator=generator))
        s = (flow.shift * u / (1 + (flow.shift - 1) * u)).to(device)
        keep = (torch.rand(b, generator=generator) >= self.config.run.class_dropout).tolist()
        captions = [self.captions[i] if k else "" for i, k in zip(batch["index"].tolist(), keep)]
        text = self.embed(captions, device)
        sv = s.view(-1, 1, 1, 1, 1)
        xs = (1 - sv) * x0 + sv * noise
        pred = self.wrapped(hidden_states=xs, timestep=s * 1000, encoder_hidden_states=text.to(xs.dtype),
                            return_dict=False)[0]
        return F.mse_loss(pred.float(), (noise - x0).float())

    def build_pipeline(self, model):
        from diffusers import FlowMatchEulerDiscreteScheduler

        from .pipeline_wan import ATokenWanPipeline
        from .wan import set_latent_stats

        vae = self.load_vae()
        set_latent_stats(vae, self.stats)
        h, w = self.latent_size
        return ATokenWanPipeline(
            tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=vae, transformer=model,
            scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.config.flow.shift),
            max_sequence_length=self.config.text.max_sequence_length,
            default_num_frames=vae.temporal_compression_ratio * (self.latent_frames - 1) + 1,
            default_height=h * vae.spatial_compression_ratio, default_width=w * vae.spatial_compression_ratio)


def main(argv: list[str] | None = None) -> list[dict]:
    from ...training.overrides import overrides_from_args

    p = argparse.ArgumentParser(prog="python -m atoken_diffusers.generation.video.train_wan",
                                description="Train a Wan transformer on AToken video latents (resumes; works under "
                                            "`accelerate launch`). Settings: --config YAML, then flags, then --set.")
    p.add_argument("--config", help="YAML with the sections model, data, optim, run, flow, text")
    p.add_argument("--shards", help="video shards of `atoken encode-dataset --videos` (data.shards)")
    p.add_argument("--text-encoder", help="local UMT5/T5 folder (text.encoder)")
    p.add_argument("--data-root", help="the encoded folder, for sidecar .txt captions (text.data_root)")
    p.add_argument("--captions", help="JSON {file: caption} (text.captions)")
    p.add_argument("--output-dir", help="run folder (run.output_dir)")
    p.add_argument("--preset", help=f"transformer size: {', '.join(WAN_PRESETS)}")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = p.parse_args(argv)
    overrides = overrides_from_args(args, {"shards": "data.shards", "text_encoder": "text.encoder",
                                           "data_root": "text.data_root", "captions": "text.captions",
                                           "preset": "model.preset"})
    try:
        trainer = WanTrainer(WanTrainConfig.from_yaml(args.config, overrides))
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"train_wan: {err}") from None
    return trainer.train()


if __name__ == "__main__":
    main()
