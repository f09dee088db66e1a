"""Text-to-video with diffusers' Wan pipeline and transformer on AToken latents: builders and latent helpers.

AToken's video latents have the geometry of Wan 2.2's VAE (4x temporal, 16x spatial compression; 48 channels for
So/C), so :class:`~diffusers.WanPipeline` runs with :class:`AutoencoderAToken` in place of ``AutoencoderKLWan``. It
reads ``vae.config.z_dim``, ``scale_factor_temporal`` (4), ``scale_factor_spatial`` (16), ``latents_mean`` and
``latents_std`` (it denormalises ``latents * std + mean`` before ``vae.decode``; both lists must be set) and
``vae.dtype``.

Frame counts. Wan takes ``num_frames = 4k + 1`` and generates ``k + 1`` latent frames. Wan's causal VAE decodes them
to 4k + 1 frames; AToken decodes every latent frame to a group of 4 frames, so the video has ``4 (k + 1) =
num_frames + 3`` frames (:func:`decoded_num_frames`). Train on clips of 4 (k + 1) frames (``atoken encode-dataset
--videos --frames 4(k+1)``) and sample with ``num_frames = 4k + 1``: every decoded frame is then a real frame.

    tokenizer, text_encoder = load_text_encoder("path/to/umt5")          # local folder, no download
    pipe = build_wan_pipeline(vae, text_encoder, tokenizer, preset="S")  # random transformer; train it (train_wan)
    video = pipe("a red car", num_frames=17, height=256, width=256).frames   # (1, 20, 256, 256, 3)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from .geometry import TEMPORAL, check_num_frames

logger = logging.getLogger(__name__)

# WanTransformer3DModel sizes; in/out channels and text_dim come from the VAE and the text encoder. "tiny" is for
# tests and CPU smoke runs; "ti2v-5b" is the layout of Wan 2.2 TI2V-5B (whose VAE has AToken's geometry).
WAN_PRESETS = {
    "tiny": dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=2, freq_dim=64),
    "S": dict(num_attention_heads=6, attention_head_dim=64, ffn_dim=1536, num_layers=12, freq_dim=256),
    "B": dict(num_attention_heads=12, attention_head_dim=64, ffn_dim=3072, num_layers=12, freq_dim=256),
    "L": dict(num_attention_heads=16, attention_head_dim=64, ffn_dim=4096, num_layers=24, freq_dim=256),
    "ti2v-5b": dict(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30, freq_dim=256),
}


# ------------------------------------------------------------------------------------------------------ latents


def set_latent_stats(vae, stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """Write ``latents_mean``/``latents_std`` into the VAE config, which Wan's pipelines require: ``stats`` when
    given, the VAE's own when it has them, else the identity (mean 0, std 1) with a warning."""
    from ..data.latent_stats import latent_normalization

    channels = vae.config.latent_channels
    if stats is None:
        if latent_normalization(vae.config) is not None:
            return
        logger.warning("the AToken VAE has no latents_mean/latents_std: using mean 0 / std 1. Compute them with "
                       "`atoken latent-stats` for a better-conditioned generator.")
        stats = torch.zeros(channels), torch.ones(channels)
    mean, std = (torch.as_tensor(v, dtype=torch.float32).reshape(-1) for v in stats)
    if mean.numel() != channels or std.numel() != channels:
        raise ValueError(f"latent statistics have {mean.numel()} / {std.numel()} entries; the VAE has {channels} "
                         "latent channels.")
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist())


# ------------------------------------------------------------------------------------------------------ text


def load_text_encoder(path: str | os.PathLike, dtype: torch.dtype = torch.float32):
    """(tokenizer, text encoder) from a local folder: a UMT5 (Wan's) or T5 encoder, either in the folder itself or in
    ``text_encoder/`` and ``tokenizer/`` sub-folders (a Wan repository layout). Never downloads."""
    from transformers import AutoConfig, AutoTokenizer, T5EncoderModel, UMT5EncoderModel

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"text encoder folder {path} does not exist; pass a local UMT5/T5 folder.")
    enc_dir = root / "text_encoder" if (root / "text_encoder" / "config.json").is_file() else root
    tok_dir = root / "tokenizer" if (root / "tokenizer").is_dir() else root
    if not (enc_dir / "config.json").is_file():
        raise FileNotFoundError(f"{path} holds no text encoder config.json (nor text_encoder/config.json).")
    model_type = AutoConfig.from_pretrained(enc_dir, local_files_only=True).model_type
    classes = {"umt5": UMT5EncoderModel, "t5": T5EncoderModel}
    if model_type not in classes:
        raise ValueError(f"{enc_dir} holds a {model_type!r} model; Wan's pipeline needs a UMT5 or T5 encoder.")
    encoder = classes[model_type].from_pretrained(enc_dir, torch_dtype=dtype, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir, local_files_only=True)
    return tokenizer, encoder


def prompt_encoder(tokenizer, text_encoder):
    """A text-only :class:`ATokenWanPipeline` whose ``encode_prompt`` embeds captions exactly as sampling does
    (Wan's prompt cleaning, padding to ``max_sequence_length`` with zeros after the last token)."""
    from .pipeline_wan import ATokenWanPipeline

    pipe = ATokenWanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, scheduler=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------------ builders


def build_wan_transformer(latent_channels: int, text_dim: int, preset: str = "tiny",
                          patch_size: tuple = (1, 2, 2), image_to_video: bool = False, temporal: int = TEMPORAL,
                          **overrides):
    """A randomly initialised :class:`~diffusers.WanTransformer3DModel` for AToken latents.

    Args:
        latent_channels: the VAE's ``z_dim`` (48 for So/C); the transformer outputs that many channels.
        text_dim: hidden size of the text encoder (``d_model``; 4096 for UMT5-XXL).
        preset: a name of ``WAN_PRESETS``.
        patch_size: (1, 2, 2) as Wan does, or (1, 1, 1) for one token per latent cell.
        image_to_video: inputs of Wan 2.1-style image-to-video (noisy latents + 4 mask channels + condition
            latents: 2 C + 4 channels).
        temporal: the VAE's temporal compression (``vae.temporal_compression_ratio``, 4), the number of mask channels.
        overrides: any other ``WanTransformer3DModel`` argument.
    """
    from diffusers import WanTransformer3DModel

    if preset not in WAN_PRESETS:
        raise ValueError(f"preset {preset!r} is unknown; choose one of {', '.join(WAN_PRESETS)}.")
    patch_size = tuple(int(p) for p in patch_size)
    if len(patch_size) != 3 or patch_size[0] != 1 or patch_size[1] != patch_size[2] or patch_size[1] not in (1, 2):
        raise ValueError(f"patch_size must be (1, 1, 1) or (1, 2, 2); got {patch_size}.")
    in_channels = 2 * latent_channels + temporal if image_to_video else latent_channels
    kwargs = dict(WAN_PRESETS[preset], patch_size=patch_size, in_channels=in_channels, out_channels=latent_channels,
                  text_dim=text_dim)
    kwargs.update(overrides)
    return WanTransformer3DModel(**kwargs)


def build_wan_pipeline(vae, text_encoder, tokenizer, transformer=None, preset: str = "tiny",
                       patch_size: tuple = (1, 2, 2), shift: float = 3.0, image_to_video: bool = False,
                       latent_stats: tuple[torch.Tensor, torch.Tensor] | None = None, max_sequence_length: int = 512,
                       default_num_frames: int = 81, default_height: int = 480, default_width: int = 832):
    """Assemble Wan's pipeline around an AToken VAE.

    Args:
        vae: :class:`AutoencoderAToken`; its ``latents_mean/std`` are set from ``latent_stats`` (or to the
            identity when it has none, see :func:`set_latent_stats`).
        text_encoder, tokenizer: a UMT5/T5 encoder and its tokenizer (:func:`load_text_encoder`).
        transformer: a ``WanTransformer3DModel``; None builds a random one of ``preset`` and ``patch_size``.
        shift: the flow-matching scheduler's timestep shift.
        image_to_video: build :class:`ATokenWanImageToVideoPipeline` (Wan 2.1-style conditioning: the transformer
            takes noisy latents, 4 mask channels and the latents of the first frame followed by zero frames).
        max_sequence_length, default_num_frames, default_height, default_width: defaults of the pipeline call.
    Returns:
        :class:`ATokenWanPipeline` (a ``WanPipeline`` with input checks) or :class:`ATokenWanImageToVideoPipeline`.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .pipeline_wan import ATokenWanImageToVideoPipeline, ATokenWanPipeline

    set_latent_stats(vae, latent_stats)
    if transformer is None:
        transformer = build_wan_transformer(vae.config.latent_channels, text_encoder.config.d_model, preset,
                                            patch_size, image_to_video, vae.temporal_compression_ratio)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    cls = ATokenWanImageToVideoPipeline if image_to_video else ATokenWanPipeline
    pipe = cls(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler,
               max_sequence_length=max_sequence_length, default_num_frames=check_num_frames(
                   default_num_frames, "default_num_frames", vae.temporal_compression_ratio),
               default_height=default_height, default_width=default_width)
    pipe.check_components()
    return pipe
