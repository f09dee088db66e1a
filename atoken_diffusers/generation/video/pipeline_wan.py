"""diffusers' Wan pipelines with :class:`AutoencoderAToken` as their VAE, plus the input checks Wan leaves out.

:class:`ATokenWanPipeline` *is* a :class:`~diffusers.WanPipeline` (same call, same outputs); the plain ``WanPipeline``
also runs with an AToken VAE. The subclass adds: errors instead of silent rounding for frame counts that are not
4k + 1 and sizes that are not multiples of 16 x the transformer patch, a clear error without a prompt, checks that the
VAE, the transformer and the latent statistics agree, and call defaults (frames, size, text length) stored in the
pipeline config by the trainer. The output video has ``4 (k + 1)`` frames for ``num_frames = 4k + 1`` (AToken decodes
every latent frame to 4 frames; see :mod:`.wan`).

:class:`ATokenWanImageToVideoPipeline` is Wan 2.1-style image-to-video (``WanImageToVideoPipeline`` without
``expand_timesteps``): the transformer sees the noisy latents, 4 mask channels and the AToken latents of the image
followed by zero frames. Wan 2.2's ``expand_timesteps`` mode, which overwrites the first latent frame by the image's
latent, does not fit AToken, whose first latent frame covers frames 0-3 (the result would show the image followed by
three grey frames), so it is refused.
"""

from __future__ import annotations

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline, WanTransformer3DModel
from transformers import AutoTokenizer, UMT5EncoderModel

from ...models.autoencoder_atoken import AutoencoderAToken
from ..inputs import check_multiple
from .geometry import check_num_frames, decoded_num_frames


class _ATokenWanChecks:
    """Checks and defaults shared by both pipelines (mixed in before the diffusers class). The geometry comes from the
    VAE: diffusers' Wan pipelines set ``vae_scale_factor_spatial/temporal`` from ``vae.config.scale_factor_*``."""

    def _register_defaults(self, max_sequence_length: int, default_num_frames: int, default_height: int,
                           default_width: int) -> None:
        self.register_to_config(max_sequence_length=max_sequence_length, default_num_frames=default_num_frames,
                                default_height=default_height, default_width=default_width)

    def expected_in_channels(self, z_dim: int) -> int:
        return z_dim

    def check_components(self) -> None:
        """The VAE, transformer(s) and latent statistics fit together (raises ValueError naming the fix)."""
        vae = self.vae
        if not isinstance(vae, AutoencoderAToken):
            raise TypeError(f"vae must be an AutoencoderAToken; got {type(vae).__name__}.")
        z = vae.config.z_dim
        for key in ("latents_mean", "latents_std"):
            value = vae.config.get(key)
            if value is None or len(value) != z:
                raise ValueError(f"vae.config.{key} must list {z} values (Wan denormalises latents with it); compute "
                                 "it with `atoken latent-stats`, or use build_wan_pipeline (identity when missing).")
        for name in ("transformer", "transformer_2"):
            tf = getattr(self, name, None)
            if tf is None:
                continue
            want = self.expected_in_channels(z)
            if tf.config.in_channels != want or (tf.config.out_channels or tf.config.in_channels) != z:
                raise ValueError(f"{name} has in/out channels {tf.config.in_channels}/{tf.config.out_channels}; with "
                                 f"this VAE (z_dim={z}) they must be {want}/{z}.")

    def _prepare_call(self, prompt, prompt_embeds, height, width, num_frames, num_inference_steps,
                      max_sequence_length):
        cfg = self.config
        height = cfg.get("default_height", 480) if height is None else height
        width = cfg.get("default_width", 832) if width is None else width
        num_frames = cfg.get("default_num_frames", 81) if num_frames is None else num_frames
        if max_sequence_length is None:
            max_sequence_length = cfg.get("max_sequence_length", 512)
        if prompt is None and prompt_embeds is None:
            raise ValueError("prompt is required: pass a text prompt (str or list of str), or prompt_embeds from "
                             "encode_prompt.")
        if prompt is not None:
            items = [prompt] if isinstance(prompt, str) else prompt
            if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
                raise ValueError(f"prompt must be a string or a non-empty list of strings; got {prompt!r}.")
        if self.transformer is None and getattr(self, "transformer_2", None) is None:
            raise ValueError("this pipeline has no transformer; build one with build_wan_pipeline or load a trained "
                             "pipeline folder.")
        self.check_components()
        tf = self.transformer if self.transformer is not None else self.transformer_2
        patch = tf.config.patch_size
        check_num_frames(num_frames, temporal=self.vae_scale_factor_temporal)
        s = self.vae_scale_factor_spatial
        reason = f"{s} pixels per latent cell x the transformer's patch"
        check_multiple(height, "height", s * patch[1], reason)
        check_multiple(width, "width", s * patch[2], reason)
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be a positive integer; got {num_inference_steps!r}.")
        if not isinstance(max_sequence_length, int) or max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be a positive integer; got {max_sequence_length!r}.")
        return height, width, num_frames, max_sequence_length

    def decoded_num_frames(self, num_frames: int) -> int:
        """Frames in the output video for ``num_frames`` = 4k + 1: 4 (k + 1)."""
        return decoded_num_frames(num_frames, self.vae_scale_factor_temporal)


class ATokenWanPipeline(_ATokenWanChecks, WanPipeline):
    r"""Text-to-video: :class:`~diffusers.WanPipeline` over AToken latents.

    Components are Wan's (``tokenizer``, ``text_encoder`` UMT5/T5, ``transformer``
    :class:`~diffusers.WanTransformer3DModel` with in/out channels = the VAE's latent channels, ``scheduler``
    :class:`~diffusers.FlowMatchEulerDiscreteScheduler`) with ``vae`` an :class:`AutoencoderAToken` whose
    ``latents_mean``/``latents_std`` are set.

    Call arguments are ``WanPipeline``'s; ``height``, ``width``, ``num_frames`` and ``max_sequence_length`` default to
    the values stored at training. ``num_frames`` must be 4k + 1; ``frames`` then holds 4 (k + 1) frames:
    ``output_type="np"`` gives (B, 4 (k + 1), height, width, 3) in [0, 1].
    """

    def __init__(self, tokenizer: AutoTokenizer, text_encoder: UMT5EncoderModel, vae: AutoencoderAToken,
                 scheduler: FlowMatchEulerDiscreteScheduler, transformer: WanTransformer3DModel | None = None,
                 transformer_2: WanTransformer3DModel | None = None, boundary_ratio: float | None = None,
                 expand_timesteps: bool = False, max_sequence_length: int = 512, default_num_frames: int = 81,
                 default_height: int = 480, default_width: int = 832):
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                         transformer=transformer, transformer_2=transformer_2, boundary_ratio=boundary_ratio,
                         expand_timesteps=expand_timesteps)
        self._register_defaults(max_sequence_length, default_num_frames, default_height, default_width)

    def __call__(self, prompt=None, negative_prompt=None, height: int | None = None, width: int | None = None,
                 num_frames: int | None = None, num_inference_steps: int = 50,
                 max_sequence_length: int | None = None, **kwargs):
        height, width, num_frames, max_sequence_length = self._prepare_call(
            prompt, kwargs.get("prompt_embeds"), height, width, num_frames, num_inference_steps, max_sequence_length)
        return super().__call__(prompt=prompt, negative_prompt=negative_prompt, height=height, width=width,
                                num_frames=num_frames, num_inference_steps=num_inference_steps,
                                max_sequence_length=max_sequence_length, **kwargs)


def check_condition_image(image, name: str = "image") -> torch.Tensor:
    """One still image for image-to-video (a PIL image, an image file path, an (H, W, 3) array or a float (3, H, W)
    tensor in [0, 1]) as a (1, 3, H, W) tensor in [0, 1]; videos, batches, meshes or text are refused."""
    from ..three_d.image_condition import image_tensor

    x = image_tensor(image, name)
    if x.shape[0] != 1:
        raise ValueError(f"{name} must be one image (the first frame); got a batch of {x.shape[0]}.")
    return x


class ATokenWanImageToVideoPipeline(_ATokenWanChecks, WanImageToVideoPipeline):
    r"""Image-to-video: Wan 2.1-style :class:`~diffusers.WanImageToVideoPipeline` over AToken latents.

    The transformer takes ``2 C + 4`` input channels (noisy latents, the 4 first-frame mask channels, the condition
    latents) and outputs ``C``; no CLIP image encoder is needed (``image_dim=None``). ``image`` is one still image.
    """

    def __init__(self, tokenizer: AutoTokenizer, text_encoder: UMT5EncoderModel, vae: AutoencoderAToken,
                 scheduler: FlowMatchEulerDiscreteScheduler, image_processor=None, image_encoder=None,
                 transformer: WanTransformer3DModel | None = None, transformer_2: WanTransformer3DModel | None = None,
                 boundary_ratio: float | None = None, expand_timesteps: bool = False, max_sequence_length: int = 512,
                 default_num_frames: int = 81, default_height: int = 480, default_width: int = 832):
        if expand_timesteps:
            raise ValueError("expand_timesteps=True (Wan 2.2 TI2V) replaces the first latent frame by the image's "
                             "latent; an AToken latent frame covers 4 frames, so it does not fit. Use the default "
                             "(Wan 2.1-style conditioning).")
        super().__init__(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                         image_processor=image_processor, image_encoder=image_encoder, transformer=transformer,
                         transformer_2=transformer_2, boundary_ratio=boundary_ratio, expand_timesteps=False)
        self._register_defaults(max_sequence_length, default_num_frames, default_height, default_width)

    # diffusers 0.42's image-to-video module calls ftfy unconditionally; the text-to-video one guards it.
    _get_t5_prompt_embeds = WanPipeline._get_t5_prompt_embeds

    def expected_in_channels(self, z_dim: int) -> int:
        # Wan's first-frame mask has one channel per frame of a latent frame.
        return 2 * z_dim + self.vae_scale_factor_temporal

    def check_components(self) -> None:
        super().check_components()
        tf = self.transformer
        if tf is not None and tf.config.image_dim is not None and self.image_encoder is None:
            raise ValueError("the transformer takes CLIP image embeddings (image_dim is set) but the pipeline has no "
                             "image_encoder; build the transformer with image_dim=None.")

    def __call__(self, image=None, prompt=None, negative_prompt=None, height: int | None = None,
                 width: int | None = None, num_frames: int | None = None, num_inference_steps: int = 50,
                 max_sequence_length: int | None = None, **kwargs):
        if image is None:
            raise ValueError("image is required: pass the first frame (a PIL image, file path, array or tensor).")
        image = check_condition_image(image)
        height, width, num_frames, max_sequence_length = self._prepare_call(
            prompt, kwargs.get("prompt_embeds"), height, width, num_frames, num_inference_steps, max_sequence_length)
        return super().__call__(image=image, prompt=prompt, negative_prompt=negative_prompt, height=height,
                                width=width, num_frames=num_frames, num_inference_steps=num_inference_steps,
                                max_sequence_length=max_sequence_length, **kwargs)
