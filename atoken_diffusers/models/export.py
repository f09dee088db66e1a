"""Deployment graphs of :class:`AutoencoderAToken`: ``torch.export`` programs and ONNX files of its encoder and
decoder, with the image height and width (and the frame count of videos) left dynamic.

Each half is wrapped in a small module with one tensor in and one tensor out:

* encoder: pixels (B, 3, H, W) or (B, 3, T, H, W) in [-1, 1] -> the posterior mean (B, C, H/16, W/16) or
  (B, C, T/4, H/16, W/16) (the deterministic latent a pipeline uses);
* decoder: latents (B, C, h, w) or (B, C, t, h, w) -> pixels (B, 3, 16h, 16w) or (B, 3, 4t, 16h, 16w).

Dynamic sides are multiples of 16 px (latent cells) from 32 px, frame counts multiples of 4 from 8 up to one temporal
tile (``temporal_tile_frames``, 16 frames): torch.export treats a dynamic size of 1 as a special case, so one-cell
sides and single-latent-frame clips need a static export (``dynamic=False``). Inputs of other sizes are padded to these
first (the eager model pads the same way).
Spatial tiling and the decoder's key/value cache are eager-only options and are off inside the graphs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

PARTS = ("encoder", "decoder")


class EncoderGraph(nn.Module):
    """pixels -> posterior mean."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vae.encode(x).latent_dist.mode()


class DecoderGraph(nn.Module):
    """latents -> pixels."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z).sample


def example_input(vae, part: str, video: bool = False, size: int = 64, frames: int = 8,
                  batch: int = 1) -> torch.Tensor:
    """A random input of ``part`` for tracing: pixels of ``size`` px (``frames`` frames for a video) or the latents
    they encode to; on the model's device and dtype."""
    if part not in PARTS:
        raise ValueError(f"part must be one of {PARTS}; got {part!r}.")
    s, t = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    if size % s or size < s:
        raise ValueError(f"size {size} must be a positive multiple of {s} (the spatial compression).")
    if video and (frames % t or frames < t):
        raise ValueError(f"frames {frames} must be a positive multiple of {t} (the temporal compression).")
    gen = torch.Generator().manual_seed(0)
    if part == "encoder":
        shape = (batch, vae.config.in_channels, *((frames,) if video else ()), size, size)
        x = torch.rand(shape, generator=gen) * 2 - 1
    else:
        shape = (batch, vae.config.latent_channels, *((frames // t,) if video else ()), size // s, size // s)
        x = torch.randn(shape, generator=gen)
    return x.to(vae.device, vae.dtype)


def dynamic_shapes(vae, part: str, video: bool, max_side: int = 4096):
    """torch.export dynamic dims for ``part``: height/width in latent cells (pixels = 16 x cells for the encoder),
    frames in latent frames up to one temporal tile for videos."""
    from torch.export import Dim

    s, t = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    cells = max_side // s
    # min 2: torch.export specialises dynamic sizes of 1 (0/1 specialisation).
    h, w = Dim("h", min=2, max=cells), Dim("w", min=2, max=cells)
    dims = {2 + video: h, 3 + video: w}
    if video:
        dims[2] = Dim("t", min=2, max=vae.config.temporal_tile_frames // t)
    if part == "encoder":
        dims = {axis: dim * (t if (video and axis == 2) else s) for axis, dim in dims.items()}
    return ({**dims},)


def graph_module(vae, part: str) -> nn.Module:
    vae.eval()
    if getattr(vae, "use_tiling", False) or getattr(vae, "decode_cache_frames", 0):
        raise ValueError("export runs without spatial tiling and without the decoder key/value cache; call "
                         "vae.disable_tiling() and vae.set_decode_tiles() (defaults) first.")
    return EncoderGraph(vae) if part == "encoder" else DecoderGraph(vae)


def export_program(vae, part: str, video: bool = False, dynamic: bool = True, example: torch.Tensor | None = None):
    """``torch.export.ExportedProgram`` of the encoder or decoder (see the module docstring for its signature)."""
    example = example_input(vae, part, video) if example is None else example
    with torch.no_grad():
        return torch.export.export(graph_module(vae, part), (example,),
                                   dynamic_shapes=dynamic_shapes(vae, part, video) if dynamic else None)


def export_onnx(vae, part: str, path: str | os.PathLike, video: bool = False, dynamic: bool = True,
                example: torch.Tensor | None = None, opset: int = 18) -> Path:
    """Write ``part`` as an ONNX file (``torch.onnx.export(..., dynamo=True)``); input ``pixels``/``latents``,
    output ``latents``/``pixels``. Written to a temporary name and renamed when complete."""
    from ..utils.atomic import atomic_path

    example = example_input(vae, part, video) if example is None else example
    names = (["pixels"], ["latents"]) if part == "encoder" else (["latents"], ["pixels"])
    with torch.no_grad(), atomic_path(path) as tmp:
        program = torch.onnx.export(graph_module(vae, part), (example,), dynamo=True, opset_version=opset,
                                    input_names=names[0], output_names=names[1],
                                    dynamic_shapes=dynamic_shapes(vae, part, video) if dynamic else None)
        program.save(str(tmp))
    return Path(path)


def save_program(program, path: str | os.PathLike) -> Path:
    """``torch.export.save`` to ``path`` (a ``.pt2`` file) atomically."""
    from ..utils.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.export.save(program, str(tmp))
    return Path(path)
