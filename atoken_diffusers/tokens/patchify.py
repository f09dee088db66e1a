"""Dense tensors <-> token sets.

A dense clip (B, C, T, H, W) is cut into patches of (pt, ph, pw) = (4, 16, 16); every patch becomes one token whose
vector is flattened in the order (pt, ph, pw, c) and whose coordinate is (b, t, x, y, 0), x being the patch row and
y the patch column. Latent grids (B, C, t, h, w) use the same code with a (1, 1, 1) patch.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .sparse import SparseTokens

PATCH_SIZE = (4, 16, 16)
LATENT_PATCH = (1, 1, 1)  # a latent grid: one token per cell


def grid_coords(batch: int, t: int, h: int, w: int, device=None) -> torch.Tensor:
    """(B*t*h*w, 5) coordinates of a dense grid in row order (b, t, x, y), z = 0."""
    b_, t_, x_, y_ = torch.meshgrid(
        *(torch.arange(n, device=device) for n in (batch, t, h, w)), indexing="ij"
    )
    zeros = torch.zeros_like(b_)
    return torch.stack([b_, t_, x_, y_, zeros], dim=-1).reshape(-1, 5)


def patchify(x: torch.Tensor, patch: Sequence[int] = PATCH_SIZE) -> torch.Tensor:
    """Cut a dense (B, C, T, H, W) tensor into patches: (B, T/pt, H/ph, W/pw, pt*ph*pw*C), every patch flattened in
    the order (pt, ph, pw, c). T, H, W must be multiples of ``patch``. An image batch (B, C, H, W) is
    ``patchify(x[:, :, None], (1, p, p))[:, 0]``, flattened (row, column, channel)."""
    b, c, t, h, w = x.shape
    pt, ph, pw = patch
    if t % pt or h % ph or w % pw:
        raise ValueError(f"patchify: size (T={t}, H={h}, W={w}) is not a multiple of the patch {tuple(patch)}; pad "
                         "with pad_to_patches first.")
    nt, nh, nw = t // pt, h // ph, w // pw
    return (
        x.reshape(b, c, nt, pt, nh, ph, nw, pw)
        .permute(0, 2, 4, 6, 3, 5, 7, 1)  # b, t, x, y | pt, ph, pw, c
        .reshape(b, nt, nh, nw, pt * ph * pw * c)
    )


def grid_to_tokens(x: torch.Tensor, patch: Sequence[int] = PATCH_SIZE) -> SparseTokens:
    """Cut a dense (B, C, T, H, W) tensor into tokens (:func:`patchify`, in grid row order (b, t, x, y))."""
    patches = patchify(x, patch)
    b, nt, nh, nw, dim = patches.shape
    return SparseTokens(patches.reshape(b * nt * nh * nw, dim), grid_coords(b, nt, nh, nw, device=x.device))


def tokens_to_grid(
    feats: torch.Tensor, grid: Sequence[int], patch: Sequence[int] = PATCH_SIZE, channels: int | None = None
) -> torch.Tensor:
    """Inverse of :func:`grid_to_tokens` for tokens in grid row order.

    Args:
        feats: (B*t*h*w, pt*ph*pw*C) token vectors.
        grid: (B, t, h, w), the token grid.
    Returns:
        (B, C, t*pt, h*ph, w*pw).
    """
    b, nt, nh, nw = grid
    pt, ph, pw = patch
    c = channels if channels is not None else feats.shape[1] // (pt * ph * pw)
    return (
        feats.reshape(b, nt, nh, nw, pt, ph, pw, c)
        .permute(0, 7, 1, 4, 2, 5, 3, 6)
        .reshape(b, c, nt * pt, nh * ph, nw * pw)
    )


def pad_to_patches(x: torch.Tensor, patch: Sequence[int] = PATCH_SIZE) -> torch.Tensor:
    """Pad a (B, C, T, H, W) clip so every side is a multiple of ``patch``.

    Rows/columns are padded by repeating the border (no artificial edges for the encoder to reproduce); frames are
    padded with zeros (mid-grey), exactly how AToken represents a single image as the first frame of a 4-frame group.
    """
    _, _, t, h, w = x.shape
    pt, ph, pw = patch
    dh, dw, dt = -h % ph, -w % pw, -t % pt
    if dh or dw:
        x = F.pad(x, (0, dw, 0, dh, 0, 0), mode="replicate")
    if dt:
        x = F.pad(x, (0, 0, 0, 0, 0, dt))
    return x


def smooth_patch_borders(x: torch.Tensor, patch: Sequence[int], strength: float) -> torch.Tensor:
    """A deblocking filter (as codecs such as H.264 run after block transforms): the pixel rows and columns either
    side of every ``patch`` = (ph, pw) border move ``strength`` of the way towards their neighbour across it.

    ``x`` (..., H, W); ``strength`` in [0, 0.5] (0: ``x`` itself, no copy; 0.5: both sides take their mean).
    A patch decoded mostly from its own latent leaves a step at its borders that the inside of the patch lacks; the
    filter softens that step by a factor 1 - 2 * strength and leaves every other pixel as it is.
    """
    if not strength:
        return x
    for dim, p in ((-2, patch[0]), (-1, patch[1])):
        after = torch.arange(p, x.shape[dim], p, device=x.device)  # first row/column of every patch but the first
        before, first = x.index_select(dim, after - 1), x.index_select(dim, after)
        x = x.index_copy(dim, after - 1, torch.lerp(before, first, strength))
        x = x.index_copy(dim, after, torch.lerp(first, before, strength))
    return x
