"""AutoencoderAToken: AToken (arXiv 2509.14476) as a diffusers autoencoder for images, videos and 3D assets."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.autoencoders.vae import AutoencoderMixin, DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from diffusers.utils.accelerate_utils import apply_forward_hook
from torch import nn

from ..layers.pooling_head import AttentionPoolingHead
from ..layers.position_table import LearnedPositionTable
from ..quantizers.fsq import FSQ, levels_for_codebook_size
from ..tokens.patchify import grid_to_tokens, pad_to_patches, tokens_to_grid
from ..tokens.sparse import SparseTokens
from ..tokens.temporal_tiles import build_layout
from ..utils.validation import check_indices, check_latents, check_pixels, check_tokens
from .decoder import ATokenDecoder
from .encoder import ATokenEncoder
from .presets import preset_config
from .spatial_tiling import blend_tiles

LATENT_PATCH = (1, 1, 1)


@dataclass
class SparseEncoderOutput(BaseOutput):
    """Result of :meth:`AutoencoderAToken.encode_tokens`, every per-token tensor in the input row order.

    Attributes:
        latent_dist: Gaussian posterior over (N, latent_channels) token latents.
        features: (N, encoder_dim) encoder features after the final LayerNorm (what an MLLM consumes).
        embedding: (B, encoder_dim) L2-normalised pooled embedding per sample.
    """

    latent_dist: DiagonalGaussianDistribution
    features: torch.Tensor
    embedding: torch.Tensor


def _init_weights(module: nn.Module) -> None:
    """ViT-style initialisation for models trained from scratch (truncated normal 0.02, zero biases)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (LearnedPositionTable, AttentionPoolingHead)):
        nn.init.normal_(module.weight if isinstance(module, LearnedPositionTable) else module.probe, std=0.02)


def _shifted(tokens: SparseTokens, offset: tuple[int, int]) -> SparseTokens:
    """Move tokens by (rows, cols) latent cells (a spatial tile's place in its image)."""
    if offset == (0, 0):
        return tokens
    coords = tokens.coords.clone()
    coords[:, 2] += offset[0]
    coords[:, 3] += offset[1]
    return SparseTokens(tokens.feats, coords)


class AutoencoderAToken(ModelMixin, ConfigMixin, AutoencoderMixin, PeftAdapterMixin):
    r"""AToken: one transformer tokenizer for images, videos and 3D assets.

    Pixels in [-1, 1] are cut into 4 x 16 x 16 patches (images are the first frame of a 4-frame group whose other
    frames are zero), encoded by a SigLIP2-style transformer with 4D RoPE, projected to a Gaussian over
    ``latent_channels`` per token, and decoded by a second transformer back to patches. Latents are channel-first:
    (B, C, H/16, W/16) for images and (B, C, ceil(T/4), H/16, W/16) for videos.

    Args:
        latent_channels: channels per latent token (48 for So/C and So/D, 32 for stage 1).
        encoder_dim, encoder_depth, encoder_heads, encoder_mlp_dim: encoder width, blocks, heads, MLP size.
        decoder_dim, decoder_depth, decoder_heads, decoder_mlp_dim: the same for the decoder.
        patch_size: (frames, height, width) of a patch.
        in_channels: pixel channels.
        pos_grid_size: side of the learned position table (16 -> 16 x 16 entries).
        use_quantizer, fsq_codebook_size, fsq_num_codebooks: FSQ over the posterior mean (So/D: 4096 x 8).
        temporal_tile_frames: video frames per independent encoder tile (16).
        decode_stride_frames, decode_cache_frames: decoder tile stride and cross-tile key/value cache, in frames
            (16 and 0 by default; their sum must not exceed ``temporal_tile_frames``).
        tile_sample_min_size, tile_overlap_factor: spatial tiling after :meth:`enable_tiling`.
        scaling_factor, shift_factor, latents_mean, latents_std: latent normalisation read by pipelines.
        block_out_channels: only its length matters to pipelines (2 ** (len - 1) == 16, the spatial factor).
        z_dim, scale_factor_spatial, scale_factor_temporal: derived aliases (latent_channels, 16, 4) kept in the
            config for Wan-style pipelines; leave them unset.
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock", "AttentionPoolingHead"]
    _skip_layerwise_casting_patterns = ["pos_table", "norm"]

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
        fsq_codebook_size: int = 4096,
        fsq_num_codebooks: int = 8,
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
        scale_factor_spatial: int | None = None,
        scale_factor_temporal: int | None = None,
    ):
        super().__init__()
        self.patch_size = tuple(patch_size)
        patch_dim = math.prod(self.patch_size) * in_channels
        self.encoder = ATokenEncoder(patch_dim, encoder_dim, encoder_depth, encoder_heads, encoder_mlp_dim, pos_grid_size)
        self.to_moments = nn.Linear(encoder_dim, 2 * latent_channels, bias=False)
        self.decoder = ATokenDecoder(
            latent_channels, patch_dim, decoder_dim, decoder_depth, decoder_heads, decoder_mlp_dim, pos_grid_size
        )
        self.quantizer = None
        if use_quantizer:
            levels = levels_for_codebook_size(fsq_codebook_size)
            if len(levels) * fsq_num_codebooks != latent_channels:
                raise ValueError(
                    f"FSQ with {fsq_num_codebooks} codebooks of {len(levels)} dims needs latent_channels = "
                    f"{len(levels) * fsq_num_codebooks}; got {latent_channels}."
                )
            self.quantizer = FSQ(levels, fsq_num_codebooks)
        # Aliases that Wan-style pipelines read; they are derived, so a config that contradicts them is an error.
        derived = dict(z_dim=latent_channels, scale_factor_spatial=self.patch_size[1], scale_factor_temporal=self.patch_size[0])
        for key, value in derived.items():
            given = locals()[key]
            if given is not None and given != value:
                raise ValueError(f"{key}={given} contradicts the model ({key} must be {value}); drop it from the config.")
        self.register_to_config(**derived)
        self.spatial_compression_ratio = self.patch_size[1]
        self.temporal_compression_ratio = self.patch_size[0]
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_size = tile_sample_min_size
        self.tile_overlap_factor = tile_overlap_factor
        self.set_decode_tiles(decode_stride_frames, decode_cache_frames)
        self.apply(_init_weights)

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "AutoencoderAToken":
        """A randomly initialised model of a named size: ``so-c``, ``so-d``, ``so-c-s1``, ``base`` or ``tiny``."""
        return cls(**preset_config(name, **overrides))

    @classmethod
    def from_original(cls, checkpoint, config, **kwargs) -> "AutoencoderAToken":
        """Load an official ``.pt`` checkpoint with its ``.yaml`` config (see :mod:`atoken_diffusers.conversion`)."""
        from ..conversion.original import load_original_autoencoder

        return load_original_autoencoder(checkpoint, config, **kwargs)

    # ----------------------------------------------------------------------------------------------- settings

    def enable_tiling(self, tile_sample_min_size: int | None = None, tile_overlap_factor: float | None = None) -> None:
        """Encode/decode images (and video frames) larger than ``tile_sample_min_size`` pixels in overlapping
        spatial tiles blended over ``tile_overlap_factor`` of a tile. Temporal tiles are always on for video."""
        self.use_tiling = True
        if tile_sample_min_size is not None:
            if tile_sample_min_size < self.patch_size[1] or tile_sample_min_size % self.patch_size[1]:
                raise ValueError(f"tile_sample_min_size must be a positive multiple of 16; got {tile_sample_min_size}.")
            self.tile_sample_min_size = tile_sample_min_size
        if tile_overlap_factor is not None:
            if not 0 <= tile_overlap_factor < 1:
                raise ValueError(f"tile_overlap_factor must be in [0, 1); got {tile_overlap_factor}.")
            self.tile_overlap_factor = tile_overlap_factor

    def set_decode_tiles(self, stride_frames: int = 16, cache_frames: int = 0) -> None:
        """Decode video in tiles of ``stride_frames`` frames, each also attending to the keys/values of the last
        ``cache_frames`` frames of the tile before (0 = independent tiles). Both are multiples of 4 with a sum of at
        most ``temporal_tile_frames`` (16). The reference's default is 16 / 0; 12 / 4 smooths tile seams."""
        self._check_decode_tiles(stride_frames, cache_frames)
        self.decode_stride_frames, self.decode_cache_frames = stride_frames, cache_frames

    def _check_decode_tiles(self, stride_frames: int, cache_frames: int) -> None:
        pt, limit = self.patch_size[0], self.config.temporal_tile_frames
        if stride_frames <= 0 or stride_frames % pt or cache_frames < 0 or cache_frames % pt:
            raise ValueError(f"stride_frames ({stride_frames}) and cache_frames ({cache_frames}) must be multiples of {pt}, stride > 0.")
        if stride_frames + cache_frames > limit:
            raise ValueError(f"stride_frames + cache_frames must be <= {limit}; got {stride_frames} + {cache_frames}.")

    # ------------------------------------------------------------------------------------ sparse entry points

    def _tile_latent_frames(self) -> int:
        return self.config.temporal_tile_frames // self.patch_size[0]

    def _encode_hidden(self, tokens: SparseTokens, extent: tuple[int, int] | None = None):
        layout = build_layout(tokens.coords, stride=self._tile_latent_frames(), extent=extent)
        hidden = self.encoder(tokens.feats[layout.order].to(self.dtype), layout)
        return hidden, layout

    def encode_tokens(self, tokens: SparseTokens) -> SparseEncoderOutput:
        """Encode a packed token set (images, videos or 3D voxels of mixed sizes).

        Args:
            tokens: feats (N, 3072) patch vectors in [-1, 1] (see :mod:`atoken_diffusers.tokens`), coords (N, 5).
        """
        check_tokens(tokens, self.encoder.proj_in.in_features, "tokens")
        hidden, layout = self._encode_hidden(tokens)
        moments = self.to_moments(hidden)[layout.restore]
        embedding = F.normalize(self.encoder.embed(hidden, layout), dim=-1)
        return SparseEncoderOutput(DiagonalGaussianDistribution(moments), hidden[layout.restore], embedding)

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
        stride = self.decode_stride_frames if stride_frames is None else stride_frames
        cache = self.decode_cache_frames if cache_frames is None else cache_frames
        self._check_decode_tiles(stride, cache)
        pt = self.patch_size[0]
        layout = build_layout(latents.coords, stride=stride // pt, cache=cache // pt, extent=extent)
        patches = self.decoder(latents.feats[layout.order].to(self.dtype), layout)
        return latents.replace(patches[layout.restore])

    # ------------------------------------------------------------------------------------- dense entry points

    def _as_clip(self, x: torch.Tensor) -> tuple[torch.Tensor, bool]:
        check_pixels(x, "x", self.config.in_channels)
        return (x[:, :, None], True) if x.ndim == 4 else (x, False)

    def _per_sample(self, fn, x: torch.Tensor) -> torch.Tensor:
        if self.use_slicing and x.shape[0] > 1:
            return torch.cat([fn(part) for part in x.split(1)])
        return fn(x)

    @staticmethod
    def _time_chunked(fn, x: torch.Tensor, chunk: int | None) -> torch.Tensor:
        """Run ``fn`` on consecutive chunks of ``chunk`` frames (dim 2), writing each result into one preallocated
        output: temporal tiles are independent, so a long video costs the memory of one tile plus its output, like
        the reference's tile-by-tile loop."""
        if chunk is None or x.shape[2] <= chunk:
            return fn(x)
        out, start = None, 0
        for part in x.split(chunk, dim=2):
            y = fn(part)
            if out is None:  # every chunk maps frames at the same rate (x4 for decode, /4 for encode)
                out = y.new_empty(*y.shape[:2], -(-x.shape[2] * y.shape[2] // part.shape[2]), *y.shape[3:])
            out[:, :, start : start + y.shape[2]] = y
            start += y.shape[2]
        return out[:, :, :start]

    def _tile_cells(self) -> tuple[int, int]:
        tile = self.tile_sample_min_size // self.patch_size[1]
        return tile, int(tile * self.tile_overlap_factor)

    def _encode_moments(self, clip: torch.Tensor) -> torch.Tensor:
        """(B, 3, T, H, W) padded pixels -> (B, 2C, t, h, w) moments."""
        s = self.patch_size[1]
        tile, overlap = self._tile_cells()
        if self.use_tiling and max(clip.shape[-2:]) > tile * s:
            extent = (clip.shape[-2] // s, clip.shape[-1] // s)
            fn = lambda piece, offset: self._encode_moments_untiled(piece, offset, extent)  # noqa: E731
            return blend_tiles(fn, clip, tile, overlap, in_scale=s, out_scale=1)
        return self._encode_moments_untiled(clip)

    def _clip_hidden(self, clip: torch.Tensor, offset=(0, 0), extent=None):
        """Padded (B, 3, T, H, W) pixels -> encoder hidden states (group order), their layout and token grid.
        ``offset``/``extent`` place a spatial tile inside its whole image (latent cells)."""
        b, _, t, h, w = clip.shape
        grid = (b, t // self.patch_size[0], h // self.patch_size[1], w // self.patch_size[2])
        tokens = _shifted(grid_to_tokens(clip.to(self.dtype), self.patch_size), offset)
        hidden, layout = self._encode_hidden(tokens, extent)
        return hidden, layout, grid

    def _encode_moments_untiled(self, clip: torch.Tensor, offset=(0, 0), extent=None) -> torch.Tensor:
        hidden, layout, grid = self._clip_hidden(clip, offset, extent)
        return tokens_to_grid(self.to_moments(hidden)[layout.restore], grid, LATENT_PATCH)

    @apply_forward_hook
    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput | tuple:
        """Encode images (B, 3, H, W) or videos (B, 3, T, H, W) with values in [-1, 1].

        Sides that are not multiples of 16 are padded by repeating the border, frame counts that are not multiples
        of 4 with zero (grey) frames; :meth:`forward` crops the reconstruction back. A video of 4k + 1 frames gives
        k + 1 latent frames, like Wan 2.2's VAE.

        Returns:
            ``AutoencoderKLOutput(latent_dist)`` over (B, C, ceil(H/16), ceil(W/16)) for images or
            (B, C, ceil(T/4), ceil(H/16), ceil(W/16)) for videos.
        """
        clip, is_image = self._as_clip(x)
        tile_frames = self.config.temporal_tile_frames
        encode_chunk = lambda c: self._time_chunked(self._encode_moments, c, tile_frames)  # noqa: E731
        moments = self._per_sample(encode_chunk, pad_to_patches(clip, self.patch_size))
        if is_image:
            moments = moments[:, :, 0]
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def _decode_clip(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, t, h, w) latents -> (B, 3, 4t, 16h, 16w) pixels."""
        tile, overlap = self._tile_cells()
        if self.use_tiling and max(z.shape[-2:]) > tile:
            fn = lambda piece, offset: self._decode_clip_untiled(piece, offset, tuple(z.shape[-2:]))  # noqa: E731
            return blend_tiles(fn, z, tile, overlap, in_scale=1, out_scale=self.patch_size[1])
        return self._decode_clip_untiled(z)

    def _decode_clip_untiled(self, z: torch.Tensor, offset=(0, 0), extent=None) -> torch.Tensor:
        b, _, t, h, w = z.shape
        patches = self.decode_tokens(_shifted(grid_to_tokens(z, LATENT_PATCH), offset), extent=extent).feats
        return tokens_to_grid(patches, (b, t, h, w), self.patch_size, channels=self.config.in_channels)

    @apply_forward_hook
    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple:
        """Decode latents (B, C, h, w) to images (B, 3, 16h, 16w), or (B, C, t, h, w) to videos (B, 3, 4t, 16h, 16w).

        Values are raw decoder outputs, nominally in [-1, 1] (not clamped). Sizes are the padded ones; crop to the
        original size if the input was padded (``forward`` does).
        """
        check_latents(z, self.config.latent_channels)
        is_image = z.ndim == 4
        # Without a cache, decoder tiles are independent: decode one tile at a time. With a cache every tile needs the
        # previous one's keys/values, so all tiles run in one pass.
        chunk = None if self.decode_cache_frames else self.decode_stride_frames // self.patch_size[0]
        decode_chunk = lambda c: self._time_chunked(self._decode_clip, c, chunk)  # noqa: E731
        clip = self._per_sample(decode_chunk, z[:, :, None] if is_image else z)
        sample = clip[:, :, 0] if is_image else clip
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> DecoderOutput | tuple:
        """Reconstruct ``sample`` (images or videos in [-1, 1]) at its own size. Decodes the posterior mean unless
        ``sample_posterior``; models with an FSQ quantizer decode the quantised codes."""
        posterior = self.encode(sample).latent_dist
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        if self.quantizer is not None:
            z = self.quantizer.quantize(z.movedim(1, -1))[0].movedim(-1, 1)
        dec = self.decode(z).sample
        dec = dec[..., : sample.shape[-2], : sample.shape[-1]]
        if sample.ndim == 5:
            dec = dec[:, :, : sample.shape[2]]
        return DecoderOutput(sample=dec) if return_dict else (dec,)

    # ----------------------------------------------------------------------- discrete tokens and embeddings

    def _require_quantizer(self) -> FSQ:
        if self.quantizer is None:
            raise ValueError(
                "This model has no FSQ quantizer (config use_quantizer=False). Load an FSQ checkpoint such as So/D "
                "(preset 'so-d'), or construct the model with use_quantizer=True."
            )
        return self.quantizer

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """Discrete FSQ indices of images (B, codebooks, h, w) or videos (B, codebooks, t, h, w), int64."""
        fsq = self._require_quantizer()
        mean = self.encode(x).latent_dist.mode()
        return fsq.quantize(mean.movedim(1, -1))[1].movedim(-1, 1)

    def detokenize(self, indices: torch.Tensor) -> torch.Tensor:
        """FSQ indices -> latents (B, C, h, w) / (B, C, t, h, w) to pass to :meth:`decode`."""
        fsq = self._require_quantizer()
        check_indices(indices, fsq.num_codebooks, fsq.codebook_size)
        return fsq.indices_to_codes(indices.movedim(1, -1)).movedim(-1, 1).to(self.dtype)

    def _encode_dense_hidden(self, x: torch.Tensor):
        clip, is_image = self._as_clip(x)
        hidden, layout, grid = self._clip_hidden(pad_to_patches(clip, self.patch_size))
        return hidden, layout, grid, is_image

    @apply_forward_hook
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised pooled semantic embedding (B, encoder_dim) of images or videos (all frames pooled)."""
        hidden, layout, _, _ = self._encode_dense_hidden(x)
        return F.normalize(self.encoder.embed(hidden, layout), dim=-1)

    @apply_forward_hook
    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """Dense encoder features after the final LayerNorm, before the latent projection (what a multimodal LLM
        consumes): (B, encoder_dim, h, w) for images, (B, encoder_dim, t, h, w) for videos."""
        hidden, layout, grid, is_image = self._encode_dense_hidden(x)
        feats = tokens_to_grid(hidden[layout.restore], grid, LATENT_PATCH)
        return feats[:, :, 0] if is_image else feats
