"""AToken as a ComfyUI ``VAE``: the object the built-in VAEEncode, VAEDecode, VAEEncodeTiled and VAEDecodeTiled
nodes call. ComfyUI images are (B, H, W, C) in [0, 1]; latents are raw AToken latents.

Conventions, the ones ComfyUI applies to Wan 2.2's VAE (the same 4 x 16 x 16 geometry):

- Sides are centre-cropped down to multiples of 16 before encoding (ComfyUI's ``vae_encode_crop_pixels``), so a
  424 x 360 image comes back 416 x 352 and lines up with a centre crop of the original.
- An IMAGE batch is the T frames of one video: (T, H, W, 3) -> LATENT (1, C, t, h, w) with t = ceil(T / 4); frames
  past the last 4k + 1 are dropped (Wan's count: 4k + 1 frames -> k + 1 latent frames).
- Decoding t latent frames gives 4t - 3 frames: AToken decodes 4t, the last three of which reconstruct the zero
  frames that padded a 4k + 1 clip. A single image is a 1-frame video and round-trips to one image; 4-D latents
  (B, C, h, w) from the pack's own Encode node decode to B images.

Like ComfyUI's own VAE it estimates the memory a call needs, splits a batch to fit the free memory, and falls back
to spatial tiles when the device runs out of memory.
"""

from __future__ import annotations

import logging
import math
from functools import partial

import torch

from atoken_diffusers.utils.validation import PIXEL_LIMIT, InputTooLargeError, value_range, values_checkable

# The fixes of a too-large input in ComfyUI's terms (the model names its Python arguments).
COMFY_FIXES = {
    "tiling": "use the VAE Encode (Tiled) / VAE Decode (Tiled) node",
    "smaller_tile": "lower tile_size in the VAE Encode (Tiled) / VAE Decode (Tiled) node",
    "smaller_input": "downscale the IMAGE (e.g. Upscale Image By < 1) or pass fewer frames: even the smallest tiles "
                     "would not fit",
}


def latent_frames(frames: int, temporal: int = 4) -> int:
    """Latent frames for ``frames`` video frames: ceil(frames / temporal) (Wan 2.2: 4k + 1 -> k + 1)."""
    return max(0, (frames + temporal - 1) // temporal)


def decoded_frames(latents: int, temporal: int = 4) -> int:
    """Frames the VAE view returns for ``latents`` latent frames: temporal * latents - (temporal - 1) (Wan 2.2)."""
    return max(0, latents * temporal - (temporal - 1))


def crop_to_multiple(pixels: torch.Tensor, factor: int) -> torch.Tensor:
    """Centre-crop (..., H, W, C) down to multiples of ``factor`` exactly as ComfyUI's ``vae_encode_crop_pixels``
    does (the extra ``size % factor`` pixels split with the smaller half on the top/left)."""
    for axis, side in ((-3, "height"), (-2, "width")):
        size = pixels.shape[axis]
        keep = size // factor * factor
        if keep == 0:
            raise ValueError(f"image {side} is {size} px but AToken needs at least {factor}; upscale it first "
                             "(e.g. with the ImageScale node).")
        if keep != size:
            pixels = pixels.narrow(axis, (size % factor) // 2, keep)
    return pixels


# ComfyUI IMAGE values: [0, 1]; a little overshoot (an upscaler's ringing) is what the model accepts too, 0..255 is not.
IMAGE_RANGE = ((1 - PIXEL_LIMIT) / 2, (1 + PIXEL_LIMIT) / 2)


def check_image_values(image: torch.Tensor, name: str = "image") -> None:
    """Refuse an empty IMAGE, NaN/Inf and values outside ComfyUI's [0, 1] with a ComfyUI-phrased message (the model's own check
    speaks of [-1, 1] pixels); free only on the CPU, so skipped elsewhere as the model's checks are."""
    if image.numel() == 0:  # callers batch over dim 0: an empty batch would fail in range() with no word on why
        raise ValueError(f"{name} is an empty IMAGE (shape {tuple(image.shape)}); connect one with at least one "
                         "picture or frame.")
    if not image.is_floating_point():
        raise ValueError(f"{name} has dtype {image.dtype}; a ComfyUI IMAGE is float in [0, 1] (divide 8-bit values "
                         "by 255).")
    if not values_checkable(image):
        return
    lo, hi = value_range(image)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} contains NaN/Inf values; check the node that produced it.")
    if lo < IMAGE_RANGE[0] or hi > IMAGE_RANGE[1]:
        raise ValueError(f"{name} has values in [{lo:.3g}, {hi:.3g}] but a ComfyUI IMAGE is float in [0, 1]; divide "
                         "0..255 values by 255 (LoadImage already gives [0, 1]).")


def check_latents(z: torch.Tensor, channels: int, name: str = "samples") -> torch.Tensor:
    """LATENT samples (B, C, [t,] h, w) this model can decode: right channels, no empty dimension, finite."""
    if z.shape[1] != channels:
        raise ValueError(
            f"{name} has {z.shape[1]} latent channels but this AToken model uses {channels}; encode with an AToken "
            "node (a latent from another VAE cannot be decoded by AToken)."
        )
    if z.numel() == 0:
        raise ValueError(f"{name} is an empty LATENT batch (shape {tuple(z.shape)}); connect a latent with at least "
                         "one sample.")
    if not z.is_floating_point():
        raise ValueError(f"{name} has dtype {z.dtype}; for FSQ tokens use AToken Detokenize first.")
    if values_checkable(z) and not all(map(math.isfinite, value_range(z))):
        raise ValueError(f"{name} contains NaN/Inf values; check the node that produced the latent.")
    return z


def to_model_pixels(model, image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, 3) in [0, 1] (or frames (B, T, H, W, 3)) -> (B, 3, [T,] H, W) in [-1, 1] on the
    model's device and dtype."""
    check_image_values(image)
    return (image.movedim(-1, 1) * 2 - 1).to(model.device, model.dtype)


def _or(value, default):
    """ComfyUI's VAE treats a None tile argument as "use the default"."""
    return default if value is None else value


def _model_management():
    try:
        import comfy.model_management as mm

        return mm
    except ImportError:  # unit tests and plain Python use
        return None


class ATokenComfyVAE:
    """Duck-typed ``comfy.sd.VAE`` around an :class:`AutoencoderAToken`, set up as ComfyUI sets up Wan 2.2's VAE."""

    def __init__(self, model):
        self.model = model
        spatial, temporal = model.spatial_compression_ratio, model.temporal_compression_ratio
        self.latent_channels = model.config.latent_channels
        # The attributes comfy.sd.VAE gives a Wan 2.2-style video VAE; ComfyUI nodes read them.
        self.latent_dim = 3
        self.not_video = False
        self.crop_input = True
        self.output_channels = 3
        self.extra_1d_channel = None
        self.downscale_ratio = (partial(latent_frames, temporal=temporal), spatial, spatial)
        self.upscale_ratio = (partial(decoded_frames, temporal=temporal), spatial, spatial)
        self.downscale_index_formula = self.upscale_index_formula = (temporal, spatial, spatial)
        mm = _model_management()
        self.output_device = mm.intermediate_device() if mm is not None else torch.device("cpu")

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def vae_dtype(self) -> torch.dtype:
        return self.model.dtype

    # ---- what comfy.sd.VAE offers the built-in nodes
    def throw_exception_if_invalid(self) -> None:
        """The model is always loaded; kept because ComfyUI nodes call it."""

    def get_sd(self) -> dict:
        return self.model.state_dict()

    def spacial_compression_decode(self) -> int:
        return self.model.spatial_compression_ratio

    def spacial_compression_encode(self) -> int:
        return self.model.spatial_compression_ratio

    def temporal_compression_decode(self) -> int:
        return self.model.temporal_compression_ratio

    def vae_encode_crop_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return crop_to_multiple(pixels, self.spacial_compression_encode()) if self.crop_input else pixels

    def memory_used_encode(self, shape, dtype) -> int:
        """Peak bytes of encoding pixels of ``shape`` (B, 3, [T,] H, W): the model's own estimate, as used by its
        size check."""
        with torch.no_grad():
            return self.model.estimate_peak_bytes(tuple(shape), "encode", dtype)

    def memory_used_decode(self, shape, dtype) -> int:
        """Peak bytes of decoding latents of ``shape`` (B, C, [t,] h, w)."""
        with torch.no_grad():
            return self.model.estimate_peak_bytes(tuple(shape), "decode", dtype)

    # ---- helpers
    def _batches(self, n: int, per_item: int) -> int:
        mm = _model_management()
        if mm is None:
            return n
        free = mm.get_free_memory(self.model.device)
        return max(1, min(n, int(free // max(per_item, 1))))

    def _run(self, fn, x: torch.Tensor, memory_used, tiled_fn) -> torch.Tensor:
        """``fn`` over batch slices that fit the free memory; ``tiled_fn`` on the whole batch after an OOM."""
        mm = _model_management()
        oom = mm.OOM_EXCEPTION if mm is not None else torch.cuda.OutOfMemoryError
        per_item = memory_used(x[:1].shape, self.model.dtype)
        try:
            step = self._batches(x.shape[0], per_item)
            return torch.cat([fn(x[i : i + step]) for i in range(0, x.shape[0], step)])
        except oom:
            logging.warning("AToken: out of memory, retrying with spatial tiles.")
        except InputTooLargeError as err:  # the model's estimate says untiled would not fit: tile, as after an OOM
            if err.fix != "tiling":
                raise ValueError(err.phrased(COMFY_FIXES)) from None
            logging.warning("AToken: %s; running with spatial tiles.", err.problem)
        try:
            return tiled_fn(x)
        except InputTooLargeError as err:
            raise ValueError(err.phrased(COMFY_FIXES)) from None

    @staticmethod
    def _tiles(tile_px: int = 256, overlap: float = 0.25) -> dict:
        """Per-call tiling options: the model's own settings stay untouched, so concurrent prompts never mix."""
        return {"tiling": True, "tile_sample_min_size": tile_px, "tile_overlap_factor": overlap}

    def _clips(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE (T, H, W, C) (one video) or (B, T, H, W, C) -> cropped (B, 3, T', H', W') in [-1, 1], where T' is
        the largest 4k + 1 <= T (Wan's frame count; ComfyUI keeps the same frames for Wan 2.2)."""
        if pixels.ndim == 4:
            pixels = pixels[None]
        if pixels.ndim != 5:
            raise ValueError(f"pixels must be an IMAGE (T, H, W, C) or a batch of videos (B, T, H, W, C); "
                             f"got shape {tuple(pixels.shape)}.")
        temporal = self.model.temporal_compression_ratio
        frames = decoded_frames(latent_frames(pixels.shape[1], temporal), temporal)
        return to_model_pixels(self.model, self.vae_encode_crop_pixels(pixels[:, :frames, ..., :3]))

    # ---- encode
    @torch.inference_mode()
    def _encode(self, x: torch.Tensor, **options) -> torch.Tensor:
        return self.model.encode(x, **options).latent_dist.mode().float().to(self.output_device)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE (T, H, W, C>=3) in [0, 1], the frames of one video (a single image is T = 1) -> LATENT
        (1, C, ceil(T/4), H'/16, W'/16), H' and W' the sides centre-cropped to multiples of 16; (B, T, H, W, C) gives
        B videos."""
        tiled = lambda x: self._encode(x, **self._tiles())
        return self._run(self._encode, self._clips(pixels), self.memory_used_encode, tiled)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """IMAGE (B, H, W, C>=3) as B separate images -> (B, C, H'/16, W'/16), sides cropped as in :meth:`encode`."""
        x = to_model_pixels(self.model, self.vae_encode_crop_pixels(pixels[..., :3]))
        tiled = lambda x: self._encode(x, **self._tiles())
        return self._run(self._encode, x, self.memory_used_encode, tiled)

    def encode_tiled(self, pixels, tile_x=512, tile_y=512, overlap=64, tile_t=None, overlap_t=None) -> torch.Tensor:
        """:meth:`encode` with spatial tiles of ``tile_x`` pixels. ``tile_t``/``overlap_t`` are ignored: AToken's
        temporal tiles (16 frames, always on) are part of the model."""
        tile_x, tile_y, overlap = _or(tile_x, 512), _or(tile_y, 512), _or(overlap, 64)  # ComfyUI may pass None
        tile = max(16, (max(tile_x, tile_y) // 16) * 16)
        return self._encode(self._clips(pixels), **self._tiles(tile, min(0.5, overlap / tile)))

    # ---- decode
    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor, **options) -> torch.Tensor:
        out = self.model.decode(latents.to(self.model.device, self.model.dtype), **options).sample.float()
        if out.ndim == 5:
            out = out[:, :, : decoded_frames(latents.shape[2], self.model.temporal_compression_ratio)]
        return ((out.clamp(-1, 1) + 1) / 2).movedim(1, -1).to(self.output_device)  # (B, [T,] H, W, 3)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, 16h, 16w, 3) images; (B, C, t, h, w) -> (B, 4t - 3, 16h, 16w, 3) frames (VAEDecode
        then joins the frames into one IMAGE batch)."""
        check_latents(latents, self.latent_channels)
        tiled = lambda z: self._decode(z, **self._tiles())
        return self._run(self._decode, latents, self.memory_used_decode, tiled)

    def decode_tiled(self, latents, tile_x=64, tile_y=64, overlap=16, tile_t=None, overlap_t=None) -> torch.Tensor:
        """:meth:`decode` with spatial tiles of ``tile_x`` latent cells (what VAEDecodeTiled passes); ``tile_t`` and
        ``overlap_t`` are ignored as in :meth:`encode_tiled`."""
        tile_x, tile_y, overlap = _or(tile_x, 64), _or(tile_y, 64), _or(overlap, 16)  # ComfyUI may pass None
        tile = max(1, max(tile_x, tile_y)) * 16
        check_latents(latents, self.latent_channels)
        return self._decode(latents, **self._tiles(tile, min(0.5, overlap / max(tile_x, tile_y, 1))))
