"""``ATokenARPipeline``: class-conditional autoregressive generation of AToken FSQ tokens, decoded to images.

    pipe = ATokenARPipeline.from_pretrained("runs/ar/pipeline")
    out = pipe(class_labels=3, guidance_scale=3.0, temperature=1.0, top_k=512,
               generator=torch.Generator().manual_seed(0))
    out.images[0], out.indices  # PIL image, (1, K, h, w) indices
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DiffusionPipeline
from diffusers.image_processor import VaeImageProcessor
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

from ...models.autoencoder_atoken import AutoencoderAToken
from ..inputs import check_guidance, check_image_size, check_output_type, resolve_class_labels
from .ar_transformer import ATokenARTransformer
from .class_conditional import ClassConditionalImageMixin
from .sampling import check_sampling_args, sample_logits

OUTPUT_TYPES = ("pil", "np", "pt", "latent", "indices")


@dataclass
class ATokenARPipelineOutput(ImagePipelineOutput):
    """``images`` as asked by ``output_type`` and the generated ``indices`` (B, K, h, w) int64."""

    indices: torch.Tensor | None = None


class ATokenARPipeline(ClassConditionalImageMixin, DiffusionPipeline):
    r"""Autoregressive generation over FSQ indices with :class:`ATokenARTransformer` (raster order over latent
    positions, codebooks one after another inside a position), decoded by an AToken autoencoder with an FSQ
    quantizer.

    Components:
        transformer: :class:`ATokenARTransformer`.
        vae: :class:`AutoencoderAToken` whose quantizer has the transformer's codebook count and size.
    """

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, transformer: ATokenARTransformer, vae: AutoencoderAToken):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def _check_vae(self) -> None:
        fsq, cfg = self.vae.quantizer, self.transformer.config
        if fsq is None:
            raise ValueError("the pipeline's vae has no FSQ quantizer; AR generation needs an FSQ AToken model "
                             "(e.g. So/D, use_quantizer=True).")
        if (fsq.num_codebooks, fsq.codebook_size) != (cfg.num_codebooks, cfg.codebook_size):
            raise ValueError(f"the vae quantizer has {fsq.num_codebooks} codebooks x {fsq.codebook_size} but the "
                             f"transformer predicts {cfg.num_codebooks} x {cfg.codebook_size}; pair models trained "
                             "together.")

    @torch.no_grad()
    def generate_indices(self, labels: torch.Tensor, grid: tuple[int, int], guidance_scale: float,
                         temperature: float, top_k: int | None, top_p: float | None,
                         generator: torch.Generator | None) -> torch.Tensor:
        """(B, K, h, w) indices for class ids ``labels`` (B,), decoded position by position with KV caches."""
        tf = self.transformer
        b, k, positions = labels.shape[0], tf.config.num_codebooks, grid[0] * grid[1]
        do_cfg = guidance_scale > 1
        model_labels = torch.cat([labels, torch.full_like(labels, tf.null_class)]) if do_cfg else labels
        rows = model_labels.shape[0]
        backbone, head = tf.new_caches(rows, positions)
        out = torch.empty(b, positions, k, dtype=torch.long, device=labels.device)
        prev = None
        for j in self.progress_bar(range(positions)):
            h = tf.step_backbone(backbone, grid, model_labels, prev)
            head.reset()
            index = None
            for c in range(k):  # codebooks of this position, one after another
                logits = tf.step_head(head, h, index).float()
                if do_cfg:
                    cond, uncond = logits.chunk(2)
                    logits = uncond + guidance_scale * (cond - uncond)
                drawn = sample_logits(logits, temperature, top_k, top_p, generator)
                out[:, j, c] = drawn
                index = torch.cat([drawn, drawn]) if do_cfg else drawn
            prev = out[:, j].repeat(2, 1) if do_cfg else out[:, j]
        return out.transpose(1, 2).reshape(b, k, *grid)

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | str | list | torch.Tensor | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float = 3.0,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ATokenARPipelineOutput | tuple:
        r"""Generate images.

        Args:
            class_labels: class ids in [0, num_classes) or class names; one image per entry (times
                ``num_images_per_prompt``).
            num_images_per_prompt: images per label.
            height, width: pixels, positive multiples of the VAE's spatial compression (16; default: the
                transformer's ``sample_size`` x 16).
            guidance_scale: classifier-free guidance on the logits, >= 1 (1 disables it).
            temperature: logit temperature (0: greedy).
            top_k, top_p: optional top-k / nucleus filtering of every codebook's distribution.
            generator: a ``torch.Generator`` (one, shared by the batch) for reproducible samples.
            output_type: ``"pil"``, ``"np"`` ((B, H, W, 3) in [0, 1]), ``"pt"`` ((B, 3, H, W) in [0, 1]),
                ``"latent"`` ((B, C, h, w) FSQ codes) or ``"indices"`` ((B, K, h, w) int64).
        Returns:
            :class:`ATokenARPipelineOutput` with ``images`` and ``indices``.
        """
        check_output_type(output_type, OUTPUT_TYPES)
        check_sampling_args(temperature, top_k, top_p)
        if isinstance(generator, list):
            raise ValueError("generator must be a single torch.Generator (the batch is drawn together).")
        self._check_vae()
        tf, device = self.transformer, self._execution_device
        cfg = tf.config
        factor = self.vae_scale_factor
        grid = check_image_size(height or cfg.sample_size * factor, width or cfg.sample_size * factor, factor)
        check_guidance(guidance_scale, True, cfg.class_dropout_prob)  # the "no class" label is the unconditional branch
        if class_labels is None and cfg.num_classes == 1:
            class_labels = 0
        labels = resolve_class_labels(class_labels, cfg.num_classes, cfg.class_names).to(device)
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be a positive integer; got {num_images_per_prompt!r}.")
        labels = labels.repeat_interleave(num_images_per_prompt)

        indices = self.generate_indices(labels, grid, guidance_scale, temperature, top_k, top_p, generator)
        if output_type == "indices":
            images = indices
        else:
            latents = self.vae.detokenize(indices)
            if output_type == "latent":
                images = latents
            else:
                decoded = self.vae.decode(latents).sample.float().clamp(-1, 1)
                images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, indices
        return ATokenARPipelineOutput(images=images, indices=indices)
