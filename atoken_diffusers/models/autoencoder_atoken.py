"""AutoencoderAToken: AToken (arXiv 2509.14476) as a diffusers autoencoder for images, videos and 3D assets."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..layers.pooling_head import AttentionPoolingHead
from ..layers.position_table import LearnedPositionTable
from ..quantizers.fsq import FSQ
from ..tokens.patchify import LATENT_PATCH, grid_to_tokens, pad_to_patches, smooth_patch_borders, tokens_to_grid
from ..tokens.sparse import SparseTokens
from ..tokens.temporal_tiles import build_layout, grid_layout
from ..utils.memory import check_fits, estimate_peak_bytes
from ..utils.validation import check_latents, check_pixel_values, check_pixels, check_tokens
from .config_validation import check_config
from .decoder import ATokenDecoder
from .discrete_and_semantic import DiscreteTokensMixin, SemanticFeaturesMixin
from .encoder import ATokenEncoder
from .inference_options import InferenceOptions
from .outputs import SparseEncoderOutput
from .presets import preset_config
from .single_file import FromOriginalATokenMixin
from .spatial_tiling import blend_tiles, time_chunked
from .strict_loading import StrictLoadingMixin


def _init_weights(module: nn.Module) -> None:
    """ViT-style initialisation for models trained from scratch (truncated normal 0.02, zero biases)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (LearnedPositionTable, AttentionPoolingHead)):
        nn.init.normal_(module.weight if isinstance(module, LearnedPositionTable) else module.probe, std=0.02)


class AutoencoderAToken(StrictLoadingMixin, ModelMixin, ConfigMixin, AutoencoderMixin, PeftAdapterMixin,
                        FromOriginalATokenMixin, DiscreteTokensMixin, SemanticFeaturesMixin):
    r"""AToken: one transformer tokenizer for images, videos and 3D assets.

    Pixels in [-1, 1] are cut into 4 x 16 x 16 patches (images are the first frame of a 4-frame group whose other
    frames are zero), encoded by a SigLIP2-style transformer with 4D RoPE, projected to a Gaussian over
    ``latent_channels`` per token, and decoded by a second transformer back to patches. Latents are channel-first:
    (B, C, H/16, W/16) for images and (B, C, ceil(T/4), H/16, W/16) for videos.

    Load converted weights with ``from_pretrained`` and the official ``.pt`` + ``.yaml`` pair with
    ``from_single_file(pt, config=yaml)`` (``from_original`` is its earlier name).

    Args:
        latent_channels: channels per latent token (48 for So/C and So/D, 32 for stage 1).
        encoder_dim, encoder_depth, encoder_heads, encoder_mlp_dim: encoder width, blocks, heads, MLP size.
        decoder_dim, decoder_depth, decoder_heads, decoder_mlp_dim: the same for the decoder.
        patch_size: (frames, height, width) of a patch.
        in_channels: pixel channels.
        pos_grid_size: side of the learned position table (16 -> 16 x 16 entries).
        use_quantizer, fsq_levels, fsq_codebook_size, fsq_num_codebooks: FSQ over the posterior mean (So/D: levels
            [4] * 6, 4096 codes, 8 codebooks). Give the levels, the size (only sizes the suggested levels give
            exactly, e.g. 4096 = 4^6 but not 1024) or neither (So/D's); the config then records both, and
            ``fsq_codebook_size`` is always prod(fsq_levels).
        temporal_tile_frames: video frames per independent encoder tile (16).
        decode_stride_frames, decode_cache_frames: decoder tile stride and cross-tile key/value cache, in frames
            (16 and 0 by default; their sum must not exceed ``temporal_tile_frames``).
        tile_sample_min_size, tile_overlap_factor: spatial tiling after :meth:`enable_tiling`.
        scaling_factor, shift_factor, latents_mean, latents_std: latent normalisation read by pipelines.
        block_out_channels: only its length matters to pipelines (2 ** (len - 1) == 16, the spatial factor).
        deblock_strength: the decoder's deblocking filter on pixel outputs (:func:`~atoken_diffusers.tokens.patchify.
            smooth_patch_borders`; 0, the official models': off). Token-level ``decode_tokens`` returns unfiltered
            patch vectors.
        z_dim, scale_factor_spatial, scale_factor_temporal: derived aliases (latent_channels, 16, 4) kept in the
            config for Wan-style pipelines; leave them unset.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock", "AttentionPoolingHead"]
    _skip_layerwise_casting_patterns = ["pos_table", "norm"]
    # Left unquantized by diffusers' quantizers (bitsandbytes, torchao, ...): the pixel <-> transformer boundaries
    # (decoder.proj_out writes pixels, so its rounding lands on the image unaveraged; 8-bit there alone costs 8x the
    # error of 8-bit everywhere else) and the 48-input latent projection. Full dotted paths on purpose: diffusers
    # keeps a parameter in float32 only when an entry equals one component of its name, which these never do.
    _keep_in_fp32_modules = ["encoder.proj_in", "decoder.proj_in", "decoder.proj_out"]
    _depth_keys = {"encoder.blocks": "encoder_depth", "decoder.blocks": "decoder_depth"}  # for load errors

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 48,
        encoder_dim: int = 1152,
        encoder_depth: int = 27,
        encoder_heads: int = 16,
        encoder_mlp_dim: int = 4304,
        decoder_dim: int = 1152,
        decoder_depth: int = 27,
        decoder_heads: int = 16,
        decoder_mlp_dim: int = 4304,
        patch_size: tuple = (4, 16, 16),
        in_channels: int = 3,
        pos_grid_size: int = 16,
        use_quantizer: bool = False,
        fsq_codebook_size: int | None = None,
        fsq_num_codebooks: int = 8,
        fsq_levels: list | None = None,
        temporal_tile_frames: int = 16,
        decode_stride_frames: int = 16,
        decode_cache_frames: int = 0,
        tile_sample_min_size: int = 512,
        tile_overlap_factor: float = 0.25,
        scaling_factor: float = 1.0,
        shift_factor: float = 0.0,
        latents_mean: list | None = None,
        latents_std: list | None = None,
        block_out_channels: tuple = (128, 256, 512, 512, 512),
        force_upcast: bool = False,
        sample_size: int = 256,
        z_dim: int | None = None,
        deblock_strength: float = 0.0,
        scale_factor_spatial: int | None = None,
        scale_factor_temporal: int | None = None,
    ):
        super().__init__()
        check_config(type(self), self.config)  # types, ranges, cross-key rules: before any sizes a tensor
        self.patch_size = tuple(patch_size)
        patch_dim = math.prod(self.patch_size) * in_channels
        self.encoder = ATokenEncoder(patch_dim, encoder_dim, encoder_depth, encoder_heads, encoder_mlp_dim, pos_grid_size)
        self.to_moments = nn.Linear(encoder_dim, 2 * latent_channels, bias=False)
        self.decoder = ATokenDecoder(
            latent_channels, patch_dim, decoder_dim, decoder_depth, decoder_heads, decoder_mlp_dim, pos_grid_size
        )
        self.quantizer = None
        if use_quantizer:
            self.quantizer = FSQ.for_latents(latent_channels, fsq_num_codebooks, fsq_codebook_size, fsq_levels)
            # The config records the levels and the size they really give (see quantizers.fsq.resolve_levels).
            self.register_to_config(fsq_levels=self.quantizer.level_list, fsq_codebook_size=self.quantizer.codebook_size)
        # Aliases that Wan-style pipelines read, derived (check_config refused a config that contradicts them).
        self.register_to_config(z_dim=latent_channels, scale_factor_spatial=self.patch_size[1],
                                scale_factor_temporal=self.patch_size[0])
        self.spatial_compression_ratio = self.patch_size[1]
        self.temporal_compression_ratio = self.patch_size[0]
        self.inference_defaults = InferenceOptions(
            tile_sample_min_size=tile_sample_min_size, tile_overlap_factor=tile_overlap_factor,
            decode_stride_frames=decode_stride_frames, decode_cache_frames=decode_cache_frames,
        )
        self._check_options(self.inference_defaults)
        self.apply(_init_weights)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "AutoencoderAToken":
        """A randomly initialised model of a named size: ``so-c``, ``so-d``, ``so-c-s1``, ``base`` or ``tiny``."""
        return cls(**preset_config(name, **overrides))

    # ----------------------------------------------------------------------------------------------- settings

    def _check_options(self, options: InferenceOptions) -> InferenceOptions:
        return options.check(self.patch_size[1], self.patch_size[0], self.config.temporal_tile_frames)

    def inference_options(self, **overrides) -> InferenceOptions:
        """The options a call runs with: the model's defaults (:meth:`enable_tiling`, :meth:`enable_slicing`,
        :meth:`set_decode_tiles`) with the non-None ``overrides`` (names of :class:`InferenceOptions`)."""
        options = self.inference_defaults.replace(**overrides)
        return options if options is self.inference_defaults else self._check_options(options)

    def _set_defaults(self, **changes) -> None:
        self.inference_defaults = self.inference_options(**changes)

    # diffusers' switches, kept as properties of the defaults (AutoencoderMixin's enable_/disable_ methods set them).
    use_tiling = property(lambda self: self.inference_defaults.tiling, lambda self, on: self._set_defaults(tiling=bool(on)))
    use_slicing = property(lambda self: self.inference_defaults.slicing, lambda self, on: self._set_defaults(slicing=bool(on)))
    tile_sample_min_size = property(lambda self: self.inference_defaults.tile_sample_min_size)
    tile_overlap_factor = property(lambda self: self.inference_defaults.tile_overlap_factor)
    decode_stride_frames = property(lambda self: self.inference_defaults.decode_stride_frames)
    decode_cache_frames = property(lambda self: self.inference_defaults.decode_cache_frames)

    def enable_tiling(self, tile_sample_min_size: int | None = None, tile_overlap_factor: float | None = None) -> None:
        """By default, encode/decode images (and video frames) larger than ``tile_sample_min_size`` pixels in
        overlapping spatial tiles blended over ``tile_overlap_factor`` of a tile. Temporal tiles are always on for
        video. A single call can instead pass ``tiling=True`` (and the sizes) to encode/decode/forward."""
        self._set_defaults(tiling=True, tile_sample_min_size=tile_sample_min_size,
                           tile_overlap_factor=tile_overlap_factor)

    def set_decode_tiles(self, stride_frames: int = 16, cache_frames: int = 0) -> None:
        """Decode video in tiles of ``stride_frames`` frames, each also attending to the keys/values of the last
        ``cache_frames`` frames of the tile before (0 = independent tiles). Both are multiples of 4 with a sum of at
        most ``temporal_tile_frames`` (16). The reference's default is 16 / 0; 12 / 4 smooths tile seams. A single
        call can pass ``decode_stride_frames`` / ``decode_cache_frames`` to decode/forward instead."""
        self._set_defaults(decode_stride_frames=stride_frames, decode_cache_frames=cache_frames)

    # ------------------------------------------------------------------------------------ sparse entry points

    def _tile_latent_frames(self) -> int:
        return self.config.temporal_tile_frames // self.patch_size[0]

    def _encode_hidden(self, tokens: SparseTokens, extent: tuple[int, int] | None = None):
        layout = build_layout(tokens.coords, stride=self._tile_latent_frames(), extent=extent)
        hidden = self.encoder(layout.sort(tokens.feats).to(self.dtype), layout)
        return hidden, layout

    def encode_tokens(self, tokens: SparseTokens) -> SparseEncoderOutput:
        """Encode a packed token set (images, videos or 3D voxels of mixed sizes).

        Args:
            tokens: feats (N, 3072) patch vectors in [-1, 1] (see :mod:`atoken_diffusers.tokens`), coords (N, 5).
        """
        check_tokens(tokens, self.encoder.proj_in.in_features, "tokens")
        hidden, layout = self._encode_hidden(tokens)
        moments = layout.unsort(self.to_moments(hidden))
        embedding = F.normalize(self.encoder.embed(hidden, layout), dim=-1)
        return SparseEncoderOutput(DiagonalGaussianDistribution(moments), layout.unsort(hidden), embedding)

    def decode_tokens(
        self,
        latents: SparseTokens,
        stride_frames: int | None = None,
        cache_frames: int | None = None,
        extent: tuple[int, int] | None = None,
    ) -> SparseTokens:
        """Decode a packed latent token set to patch vectors (N, 3072), input row order kept.

        ``stride_frames``/``cache_frames`` override :meth:`set_decode_tiles` for this call; ``extent`` (h, w) fixes
        the position-table size (for spatial tiles of a larger latent).
        """
        check_tokens(latents, self.config.latent_channels, "latents")
        options = self.inference_options(decode_stride_frames=stride_frames, decode_cache_frames=cache_frames)
        stride, cache, pt = options.decode_stride_frames, options.decode_cache_frames, self.patch_size[0]
        layout = build_layout(latents.coords, stride=stride // pt, cache=cache // pt, extent=extent)
        patches = self.decoder(layout.sort(latents.feats).to(self.dtype), layout)
        return latents.replace(layout.unsort(patches))

    # ------------------------------------------------------------------------------------- dense entry points

    def _as_clip(self, x: torch.Tensor, opts: InferenceOptions | None = None, mode: str = "encode"):
        """Check shape, then the memory estimate of ``mode`` (with ``opts``; untiled when None), then values (so no
        value check reads an input too large to process); images -> 1-frame clips. Returns (clip, is_image)."""
        check_pixels(x, "x", self.config.in_channels, values=False)
        check_fits(self, x.shape, mode, x.dtype, x.device, opts or InferenceOptions())
        check_pixel_values(x, "x")
        return (x[:, :, None], True) if x.ndim == 4 else (x, False)

    @staticmethod
    def _per_sample(fn, x: torch.Tensor, options: InferenceOptions) -> torch.Tensor:
        if options.slicing and x.shape[0] > 1:
            return torch.cat([fn(part) for part in x.split(1)])
        return fn(x)

    def _encode_moments(self, clip: torch.Tensor, options: InferenceOptions) -> torch.Tensor:
        """(B, 3, T, H, W) pixels -> (B, 2C, ceil(T/4), ceil(H/16), ceil(W/16)) moments; tiles pad themselves."""
        s = self.patch_size[1]
        tile, overlap = options.tile_cells(s)
        extent = (-(-clip.shape[-2] // s), -(-clip.shape[-1] // s))
        if options.tiling and max(extent) > tile:

            def encode_tile(piece, offset):
                return self._encode_moments_untiled(pad_to_patches(piece, self.patch_size), offset, extent)

            return blend_tiles(encode_tile, clip, tile, overlap, in_scale=s, out_scale=1)
        return self._encode_moments_untiled(pad_to_patches(clip, self.patch_size))

    def _clip_hidden(self, clip: torch.Tensor, offset=(0, 0), extent=None):
        """Padded (B, 3, T, H, W) pixels -> encoder hidden states (grid row order), their layout and token grid.
        ``offset``/``extent`` place a spatial tile inside its whole image (latent cells). The layout comes from the
        shape alone (:func:`grid_layout`), so dense encoding has no host sync and traces into one graph."""
        b, _, t, h, w = clip.shape
        grid = (b, t // self.patch_size[0], h // self.patch_size[1], w // self.patch_size[2])
        feats = grid_to_tokens(clip.to(self.dtype), self.patch_size).feats
        layout = grid_layout(grid, self._tile_latent_frames(), offset, extent, device=clip.device)
        return self.encoder(feats, layout), layout, grid

    def _encode_moments_untiled(self, clip: torch.Tensor, offset=(0, 0), extent=None) -> torch.Tensor:
        hidden, _, grid = self._clip_hidden(clip, offset, extent)
        return tokens_to_grid(self.to_moments(hidden), grid, LATENT_PATCH)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True, **options) -> AutoencoderKLOutput | tuple:
        """Encode images (B, 3, H, W) or videos (B, 3, T, H, W) with values in [-1, 1].

        Sides that are not multiples of 16 are padded by repeating the border, frame counts that are not multiples
        of 4 with zero (grey) frames; :meth:`forward` crops the reconstruction back. A video of 4k + 1 frames gives
        k + 1 latent frames, like Wan 2.2's VAE. ``options`` (``tiling``, ``tile_sample_min_size``,
        ``tile_overlap_factor``, ``slicing``) override the model's defaults for this call only.

        Returns:
            ``AutoencoderKLOutput(latent_dist)`` over (B, C, ceil(H/16), ceil(W/16)) for images or
            (B, C, ceil(T/4), ceil(H/16), ceil(W/16)) for videos.
        """
        posterior = self._encode(x, self.inference_options(**options))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def _encode(self, x: torch.Tensor, opts: InferenceOptions, mode: str = "encode") -> DiagonalGaussianDistribution:
        clip, is_image = self._as_clip(x, opts, mode)
        tile_frames = self.config.temporal_tile_frames  # a multiple of 4: padding each chunk pads only the last
        encode_chunk = lambda c: time_chunked(lambda p: self._encode_moments(p, opts), c, tile_frames)  # noqa: E731
        moments = self._per_sample(encode_chunk, clip, opts)
        if is_image:
            moments = moments[:, :, 0]
        return DiagonalGaussianDistribution(moments)

    def _decode_clip(self, z: torch.Tensor, options: InferenceOptions, frames: int | None = None) -> torch.Tensor:
        """(B, C, t, h, w) latents -> (B, 3, 4t, 16h, 16w) pixels, the first ``frames`` kept (images: 1, so tiles
        blend one frame, not the 4 of the group)."""
        tile, overlap = options.tile_cells(self.patch_size[1])
        deblock = self.config.deblock_strength  # a tile filters the borders inside it; the blend covers its edges

        if options.tiling and max(z.shape[-2:]) > tile:

            def decode_tile(piece, offset):
                pixels = self._decode_clip_untiled(piece, options, offset, tuple(z.shape[-2:]))[:, :, :frames]
                return smooth_patch_borders(pixels, self.patch_size[1:], deblock)

            return blend_tiles(decode_tile, z, tile, overlap, in_scale=1, out_scale=self.patch_size[1])
        return smooth_patch_borders(self._decode_clip_untiled(z, options)[:, :, :frames], self.patch_size[1:], deblock)

    def _decode_clip_untiled(self, z: torch.Tensor, options: InferenceOptions, offset=(0, 0), extent=None):
        b, _, t, h, w = z.shape
        pt = self.patch_size[0]
        if options.decode_cache_frames:  # tiles share keys/values: the general (sparse) layout
            tokens = grid_to_tokens(z, LATENT_PATCH).shifted(offset)
            stride, cache = options.decode_stride_frames, options.decode_cache_frames
            patches = self.decode_tokens(tokens, stride, cache, extent).feats
        else:  # independent tiles: the layout from the shape alone (no host sync, one graph)
            layout = grid_layout((b, t, h, w), options.decode_stride_frames // pt, offset, extent, device=z.device)
            feats = grid_to_tokens(z, LATENT_PATCH).feats
            patches = self.decoder(feats.to(self.dtype), layout)
        return tokens_to_grid(patches, (b, t, h, w), self.patch_size, channels=self.config.in_channels)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True, **options) -> DecoderOutput | tuple:
        """Decode latents (B, C, h, w) to images (B, 3, 16h, 16w), or (B, C, t, h, w) to videos (B, 3, 4t, 16h, 16w).

        Values are raw decoder outputs, nominally in [-1, 1] (not clamped). Sizes are the padded ones; crop to the
        original size if the input was padded (``forward`` does). ``options`` (``tiling``, ``tile_sample_min_size``,
        ``tile_overlap_factor``, ``slicing``, ``decode_stride_frames``, ``decode_cache_frames``) override the
        model's defaults for this call only.
        """
        sample = self._decode(z, self.inference_options(**options))
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    def _decode(self, z: torch.Tensor, opts: InferenceOptions, fits_checked: bool = False) -> torch.Tensor:
        check_latents(z, self.config.latent_channels)
        if not fits_checked:
            check_fits(self, z.shape, "decode", z.dtype, z.device, opts)
        is_image = z.ndim == 4
        # Without a cache, decoder tiles are independent: decode one tile at a time. With a cache every tile needs the
        # previous one's keys/values, so all tiles run in one pass.
        chunk = None if opts.decode_cache_frames else opts.decode_stride_frames // self.patch_size[0]
        frames = 1 if is_image else None
        decode_chunk = lambda c: time_chunked(lambda p: self._decode_clip(p, opts, frames), c, chunk)  # noqa: E731
        clip = self._per_sample(decode_chunk, z[:, :, None] if is_image else z, opts)
        return clip[:, :, 0] if is_image else clip

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
        **options,
    ) -> DecoderOutput | tuple:
        """Reconstruct ``sample`` (images or videos in [-1, 1]) at its own size. Decodes the posterior mean unless
        ``sample_posterior``; models with an FSQ quantizer decode the quantised codes. ``options`` as in
        :meth:`decode`, for this call only."""
        opts = self.inference_options(**options)
        posterior = self._encode(sample, opts, mode="forward")  # one memory check for both halves
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        if self.quantizer is not None:
            z = self.quantizer.quantize_channels_first(z)[0]
        dec = self._decode(z, opts, fits_checked=True)
        dec = dec[..., : sample.shape[-2], : sample.shape[-1]]
        if sample.ndim == 5:
            dec = dec[:, :, : sample.shape[2]]
        return DecoderOutput(sample=dec) if return_dict else (dec,)

    def estimate_peak_bytes(self, shape, mode: str = "encode", dtype: torch.dtype | None = None, **options) -> int:
        """Estimated peak memory in bytes (beyond weights and input) of encoding pixels of ``shape`` (B, 3, H, W) /
        (B, 3, T, H, W), decoding latents of ``shape`` (``mode="decode"``) or both (``"forward"``), with this call's
        ``options`` (as in :meth:`decode`). Calls whose estimate exceeds the available memory raise
        :class:`~atoken_diffusers.utils.validation.InputTooLargeError`; see :mod:`atoken_diffusers.utils.memory`."""
        return estimate_peak_bytes(self, shape, mode, dtype or self.dtype, self.inference_options(**options))
