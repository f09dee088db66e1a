"""``ATokenDiTPipeline``: class- (and optionally text-) conditional image generation with a DiT over AToken latents.

    pipe = ATokenDiTPipeline.from_pretrained("runs/dit/pipeline")
    images = pipe(class_labels=[3, 3], num_inference_steps=50, guidance_scale=4.0,
                  generator=torch.Generator().manual_seed(0)).images
"""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ...models.autoencoder_atoken import AutoencoderAToken
from ...utils.validation import check_finite
from ..data.latent_stats import denormalize_latents, latent_normalization
from ..inputs import check_guidance, check_image_size, check_output_type, resolve_class_labels
from .class_conditional import ClassConditionalImageMixin
from .dit import ATokenDiT

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


class ATokenDiTPipeline(ClassConditionalImageMixin, DiffusionPipeline):
    r"""Flow-matching generation of AToken latents with :class:`ATokenDiT`, decoded by the AToken autoencoder.

    Components:
        transformer: :class:`ATokenDiT`, trained on latents normalised with the VAE's ``latents_mean/std``.
        vae: :class:`AutoencoderAToken` (its ``latents_mean``/``latents_std`` undo the normalisation; identity when
            unset).
        scheduler: :class:`~diffusers.FlowMatchEulerDiscreteScheduler`.
    """

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, transformer: ATokenDiT, vae: AutoencoderAToken, scheduler: FlowMatchEulerDiscreteScheduler):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def _conditions(self, class_labels, prompt_embeds, num_images_per_prompt: int, device):
        cfg = self.transformer.config
        labels = None
        if class_labels is None and prompt_embeds is None and cfg.num_classes == 1:
            class_labels = 0  # a single-class (unlabelled) dataset
        if cfg.num_classes > 0 and (class_labels is not None or prompt_embeds is None):
            labels = resolve_class_labels(class_labels, cfg.num_classes, cfg.class_names).to(device)
        elif class_labels is not None:
            raise ValueError("class_labels were given but this transformer is not class-conditional (num_classes=0).")
        if prompt_embeds is not None:
            if not cfg.text_embed_dim:
                raise ValueError("prompt_embeds were given but this transformer takes no text (text_embed_dim=None).")
            if prompt_embeds.ndim != 2 or prompt_embeds.shape[1] != cfg.text_embed_dim:
                raise ValueError(f"prompt_embeds must be (B, {cfg.text_embed_dim}) pooled text embeddings; got "
                                 f"{tuple(prompt_embeds.shape)}.")
            check_finite(prompt_embeds, "prompt_embeds")
            prompt_embeds = prompt_embeds.to(device, self.transformer.dtype)
        batch = labels.shape[0] if labels is not None else (prompt_embeds.shape[0] if prompt_embeds is not None else 1)
        if labels is not None and prompt_embeds is not None and prompt_embeds.shape[0] != batch:
            raise ValueError(f"class_labels has {batch} entries but prompt_embeds {prompt_embeds.shape[0]}; pass one "
                             "prompt embedding per label.")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer; got {num_images_per_prompt!r}.")
        if labels is None and cfg.num_classes > 0:  # text only: the "no class" label
            labels = torch.full((batch,), self.transformer.null_class, device=device, dtype=torch.long)
        rep = lambda t: None if t is None else t.repeat_interleave(num_images_per_prompt, 0)  # noqa: E731
        return rep(labels), rep(prompt_embeds), batch * num_images_per_prompt

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list | torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 4.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple:
        r"""Generate images.

        Args:
            class_labels: class ids in [0, num_classes) or class names (one image per entry, times
                ``num_images_per_prompt``). Required for class-conditional transformers.
            prompt_embeds: (B, text_embed_dim) pooled text embeddings (e.g. SigLIP2 ``TextTower.encode``) for
                text-conditional transformers.
            num_images_per_prompt: images per label / prompt.
            height, width: pixels, positive multiples of the VAE's spatial compression (16; default: the
                transformer's ``sample_size`` x 16).
            num_inference_steps: Euler steps of the flow ODE (>= 1).
            guidance_scale: classifier-free guidance scale, >= 1 (1 disables guidance).
            generator: random source(s) of the initial noise, for reproducible samples.
            latents: (B, C, h, w) initial noise in the normalised latent space, instead of drawing it.
            output_type: ``"pil"`` (list of PIL images), ``"np"`` ((B, H, W, 3) float in [0, 1]), ``"pt"``
                ((B, 3, H, W) float in [0, 1]) or ``"latent"`` ((B, C, h, w) raw AToken latents, not normalised).
        Returns:
            :class:`~diffusers.pipelines.pipeline_utils.ImagePipelineOutput` with ``images``.
        """
        check_output_type(output_type, OUTPUT_TYPES)
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer; got {num_inference_steps!r}.")
        tf, device = self.transformer, self._execution_device
        cfg = tf.config
        height = height or cfg.sample_size * self.vae_scale_factor
        width = width or cfg.sample_size * self.vae_scale_factor
        h, w = check_image_size(height, width, self.vae_scale_factor)
        conditional = cfg.num_classes > 0 or bool(cfg.text_embed_dim)
        do_cfg = check_guidance(guidance_scale, conditional, cfg.class_dropout_prob)
        labels, text, batch = self._conditions(class_labels, prompt_embeds, num_images_per_prompt, device)

        shape = (batch, cfg.in_channels, h, w)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=torch.float32)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents must have shape {shape} (batch, channels, height/16, width/16); got "
                             f"{tuple(latents.shape)}.")
        check_finite(latents, "latents")
        latents = latents.to(device, torch.float32)
        if do_cfg:
            labels = None if labels is None else torch.cat([labels, torch.full_like(labels, tf.null_class)])
            text = None if text is None else torch.cat([text, torch.zeros_like(text)])

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for t in self.progress_bar(self.scheduler.timesteps):
            model_in = torch.cat([latents, latents]) if do_cfg else latents
            v = tf(model_in.to(tf.dtype), t.expand(model_in.shape[0]), labels, text).sample.float()
            if do_cfg:
                cond, uncond = v.chunk(2)
                v = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(v, t, latents).prev_sample

        latents = denormalize_latents(latents, latent_normalization(self.vae.config))
        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(latents.to(self.vae.dtype)).sample.float().clamp(-1, 1)
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)
