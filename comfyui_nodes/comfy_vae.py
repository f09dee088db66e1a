"""AToken as a ComfyUI ``VAE``: the object the built-in VAEEncode, VAEDecode, VAEEncodeTiled and VAEDecodeTiled
nodes call. ComfyUI images are (B, H, W, C) in [0, 1]; latents are raw AToken latents (B, 48, h, w), or
(B, 48, t, h, w) for videos.

Like ComfyUI's own VAE it estimates the memory a call needs, splits a batch to fit the free memory, and falls back
to spatial tiles when the device runs out of memory.
"""

from __future__ import annotations

import logging

import torch

# Bytes per input element, measured on CPU for the full-size So/C with a little headroom: encode + decode
# activations at 256 px are ~40 MB beyond the weights (benchmarks/results/cpu.md), i.e. ~200 bytes per pixel value.
ENCODE_BYTES_PER_VALUE = 256
DECODE_BYTES_PER_LATENT = 256 * 16 * 16 * 3 // 48 * 4


def to_model_pixels(model, image: torch.Tensor) -> torch.Tensor:
    """ComfyUI IMAGE (B, H, W, 3) in [0, 1] -> (B, 3, H, W) in [-1, 1] on the model's device and dtype."""
    return (image.movedim(-1, 1) * 2 - 1).to(model.device, model.dtype)


def _model_management():
    try:
        import comfy.model_management as mm

        return mm
    except ImportError:  # unit tests and plain Python use
        return None


class ATokenComfyVAE:
    """Duck-typed ``comfy.sd.VAE`` around an :class:`AutoencoderAToken`."""

    def __init__(self, model):
        self.model = model
        self.latent_channels = model.config.latent_channels
        self.latent_dim = 2
        self.output_device = torch.device("cpu")

    # ---- geometry the built-in nodes ask for
    def spacial_compression_decode(self) -> int:
        return self.model.spatial_compression_ratio

    def spacial_compression_encode(self) -> int:
        return self.model.spatial_compression_ratio

    def temporal_compression_decode(self) -> int:
        return self.model.temporal_compression_ratio

    def memory_used_encode(self, shape, dtype) -> int:
        return int(torch.Size(shape).numel() * ENCODE_BYTES_PER_VALUE * torch.finfo(dtype).bits // 32)

    def memory_used_decode(self, shape, dtype) -> int:
        return int(torch.Size(shape).numel() * DECODE_BYTES_PER_LATENT * torch.finfo(dtype).bits // 32)

    # ---- helpers
    def _batches(self, n: int, per_item: int) -> int:
        mm = _model_management()
        if mm is None:
            return n
        free = mm.get_free_memory(self.model.device)
        return max(1, min(n, int(free // max(per_item, 1))))

    def _run(self, fn, x: torch.Tensor, per_item: int, tiled_fn) -> torch.Tensor:
        mm = _model_management()
        oom = mm.OOM_EXCEPTION if mm is not None else torch.cuda.OutOfMemoryError
        try:
            step = self._batches(x.shape[0], per_item)
            return torch.cat([fn(x[i : i + step]) for i in range(0, x.shape[0], step)])
        except oom:
            logging.warning("AToken: out of memory, retrying with spatial tiles.")
        return tiled_fn(x)

    @staticmethod
    def _tiles(tile_px: int = 256, overlap: float = 0.25) -> dict:
        """Per-call tiling options: the model's own settings stay untouched, so concurrent prompts never mix."""
        return {"tiling": True, "tile_sample_min_size": tile_px, "tile_overlap_factor": overlap}

    # ---- encode
    @torch.inference_mode()
    def _encode(self, pixels: torch.Tensor, **options) -> torch.Tensor:
        x = to_model_pixels(self.model, pixels)
        return self.model.encode(x, **options).latent_dist.mode().float().to(self.output_device)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C>=3) images in [0, 1] -> (B, 48, ceil(H/16), ceil(W/16)) latents (frames as separate images)."""
        pixels = pixels[..., :3]
        per = self.memory_used_encode(pixels[:1].shape, self.model.dtype)
        return self._run(self._encode, pixels, per, lambda p: self._encode(p, **self._tiles()))

    def encode_tiled(self, pixels, tile_x=512, tile_y=512, overlap=64, tile_t=None, overlap_t=None) -> torch.Tensor:
        tile = max(16, (max(tile_x, tile_y) // 16) * 16)
        return self._encode(pixels[..., :3], **self._tiles(tile, min(0.5, overlap / tile)))

    # ---- decode
    @torch.inference_mode()
    def _decode(self, latents: torch.Tensor, **options) -> torch.Tensor:
        out = self.model.decode(latents.to(self.model.device, self.model.dtype), **options).sample.float()
        return ((out.clamp(-1, 1) + 1) / 2).movedim(1, -1).to(self.output_device)  # (B, [T,] H, W, 3)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, 48, h, w) -> (B, 16h, 16w, 3) images; (B, 48, t, h, w) -> (B, 4t, 16h, 16w, 3) frames."""
        per = self.memory_used_decode(latents[:1].shape, self.model.dtype)
        return self._run(self._decode, latents, per, lambda z: self._decode(z, **self._tiles()))

    def decode_tiled(self, latents, tile_x=64, tile_y=64, overlap=16, tile_t=None, overlap_t=None) -> torch.Tensor:
        tile = max(1, max(tile_x, tile_y)) * 16  # ComfyUI passes latent cells
        return self._decode(latents, **self._tiles(tile, min(0.5, overlap / max(tile_x, tile_y, 1))))
