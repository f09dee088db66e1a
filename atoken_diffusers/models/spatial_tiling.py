"""Tiles for inputs larger than the model should see at once: spatial tiles with blended overlaps, and temporal
chunks for long videos (:func:`time_chunked`).

One spatial helper serves encode (pixels -> latents, 16x smaller) and decode (latents -> pixels, 16x larger): it works in
latent units, runs ``fn`` on overlapping tiles and averages the outputs with weights that ramp linearly over the
overlap, so seams fade instead of showing.
"""

from __future__ import annotations

from typing import Callable

import torch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size`` with at least ``overlap`` shared cells."""
    if size <= tile:
        return [0]
    stride = max(tile - overlap, 1)
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]


def _ramp(n: int, ramp: int, device) -> torch.Tensor:
    if ramp <= 0:
        return torch.ones(n, device=device)
    i = torch.arange(n, device=device, dtype=torch.float32)
    return torch.minimum(i + 1, n - i).div(ramp + 1).clamp(max=1.0)


def blend_tiles(
    fn: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    in_scale: int,
    out_scale: int,
) -> torch.Tensor:
    """Apply ``fn(tile, (row, col))`` over spatial tiles of ``x`` (..., H, W) and blend; (row, col) is the tile's
    offset in latent cells, so ``fn`` can place its tokens at their coordinates in the whole image.

    Args:
        tile, overlap: tile side and overlap in latent cells.
        in_scale, out_scale: pixels per latent cell at the input and at the output of ``fn`` (16 and 1 for encode,
            1 and 16 for decode). A side of ``x`` that is not a multiple of ``in_scale`` counts as one more cell:
            the tiles at that edge are shorter and ``fn`` pads them (so ``x`` is never padded whole).
    """
    h, w = -(-x.shape[-2] // in_scale), -(-x.shape[-1] // in_scale)
    out = weight = None
    for i in tile_starts(h, tile, overlap):
        for j in tile_starts(w, tile, overlap):
            th, tw = min(tile, h), min(tile, w)
            piece = fn(x[..., i * in_scale : (i + th) * in_scale, j * in_scale : (j + tw) * in_scale], (i, j)).float()
            if out is None:
                out = piece.new_zeros(*piece.shape[:-2], h * out_scale, w * out_scale)
                weight = piece.new_zeros(h * out_scale, w * out_scale)
            ph, pw = piece.shape[-2:]
            ramp = overlap * out_scale
            wt = _ramp(ph, ramp, x.device)[:, None] * _ramp(pw, ramp, x.device)[None, :]
            rows = slice(i * out_scale, i * out_scale + ph)
            cols = slice(j * out_scale, j * out_scale + pw)
            out[..., rows, cols] += piece * wt
            weight[rows, cols] += wt
    return out.div_(weight).to(x.dtype)  # in place: the output is the largest tensor here


def time_chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int | None) -> torch.Tensor:
    """Run ``fn`` on consecutive chunks of ``chunk`` frames (dim 2 of (B, C, T, ...)), writing each result into one
    preallocated output: temporal tiles are independent, so a long video costs the memory of one tile plus its
    output, like the reference's tile-by-tile loop. ``chunk`` None (or >= T) runs ``fn`` once."""
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
