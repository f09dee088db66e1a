"""Training :class:`ATokenDiT` with rectified-flow matching on pre-encoded AToken latents.

x_0 = (latent - latents_mean) / latents_std (the VAE config's statistics; computed from the shards and stored in the
exported VAE config when the VAE has none), x_s = (1 - s) x_0 + s * noise with s drawn logit-normal (or uniform) and
shifted, loss = || model(x_s, 1000 s, label) - (noise - x_0) ||^2. Labels (and text) are dropped with probability
``run.class_dropout`` for classifier-free guidance.

    from atoken_diffusers.generation import DiTTrainer, GeneratorTrainConfig
    config = GeneratorTrainConfig.from_yaml(None, {"data.shards": "runs/shards", "run.output_dir": "runs/dit"})
    DiTTrainer(config).train()          # -> runs/dit/pipeline
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler

from ..data.latent_stats import latent_normalization, normalize_latents, stats_from_latents
from ..training.loop import GeneratorTrainer
from .dit import DIT_PRESETS, ATokenDiT
from .pipeline_dit import ATokenDiTPipeline


class DiTTrainer(GeneratorTrainer):
    def build_model(self) -> ATokenDiT:
        from ...models.autoencoder_atoken import AutoencoderAToken

        data = self.data
        if len(data.latent_shape) != 3:
            raise ValueError(f"data.kind {data.kind!r} has latents of shape {data.latent_shape}; the DiT generates "
                             "images: use data.kind images.")
        channels, h, w = data.latent_shape
        kwargs = dict(in_channels=channels, sample_size=max(h, w), num_classes=data.num_classes,
                      class_names=data.classes, class_dropout_prob=self.config.run.class_dropout)
        kwargs.update(self.model_kwargs(DIT_PRESETS))
        text_dim = kwargs.get("text_embed_dim")
        if text_dim and text_dim != data.text_dim:
            raise ValueError(f"model text_embed_dim={text_dim} but the shards hold "
                             f"{'no text embeddings' if data.text_dim is None else f'{data.text_dim}-dim ones'}; "
                             "encode the dataset with --text-model, or drop text_embed_dim.")
        self.stats = latent_normalization(AutoencoderAToken.load_config(self.vae_path()), channels)
        self.stats_from_shards = self.stats is None
        if self.stats is None:  # not computed with `atoken latent-stats`: use the shards' own statistics
            self.stats = stats_from_latents(self.data.iter_latents())
            self.accelerator.print("the VAE config has no latents_mean/latents_std: using statistics of the shards "
                                   "(stored in the exported pipeline's VAE config).")
        return ATokenDiT(**kwargs)

    def compute_loss(self, batch: dict, generator: torch.Generator) -> torch.Tensor:
        flow, device = self.config.flow, batch["latents"].device
        x0 = normalize_latents(batch["latents"], self.stats)
        b = x0.shape[0]
        noise = torch.randn(x0.shape, generator=generator).to(device)
        if flow.timestep_sampling == "logit_normal":
            u = torch.sigmoid(torch.randn(b, generator=generator))
        else:
            u = torch.rand(b, generator=generator)
        s = (flow.shift * u / (1 + (flow.shift - 1) * u)).to(device)
        keep = torch.rand(b, generator=generator) >= self.config.run.class_dropout
        labels = torch.where(keep.to(device), batch["labels"], torch.full_like(batch["labels"], self.model.null_class))
        text = None
        if self.model.config.text_embed_dim:
            text = batch["text_embeds"] * keep.to(device)[:, None]
        xs = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * noise
        pred = self.wrapped(xs, s * 1000, labels if self.model.config.num_classes else None, text).sample
        return F.mse_loss(pred.float(), (noise - x0).float())

    def build_pipeline(self, model: ATokenDiT) -> ATokenDiTPipeline:
        vae = self.load_vae()
        if self.stats_from_shards:
            vae.register_to_config(latents_mean=self.stats[0].tolist(), latents_std=self.stats[1].tolist())
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.config.flow.shift)
        return ATokenDiTPipeline(transformer=model, vae=vae, scheduler=scheduler)
