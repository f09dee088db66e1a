"""Reconstruction metrics on pixels in [-1, 1] (computed on the [0, 1] scale, as image papers report them)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


# Elements a metric converts to float at once: whole images of any size are scored in bands of rows, so a
# 12000 x 12000 reconstruction costs tens of MB of temporaries instead of ~10 GB (SSIM's five blurred maps).
BAND_ELEMENTS = 1 << 21


def _row_bands(x: torch.Tensor, halo: int = 0):
    """Slices of dim -2 whose bands hold about BAND_ELEMENTS elements each, overlapping by ``halo`` rows: band i
    covers output rows [start, stop) of a valid ``halo + 1``-row window."""
    height = x.shape[-2]
    per_row = max(1, x.numel() // max(height, 1))
    rows = max(1, BAND_ELEMENTS // per_row)
    for start in range(0, max(height - halo, 1), rows):
        yield slice(start, min(start + rows + halo, height))


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images/videos in [-1, 1] (over all their values)."""
    squared = sum(float((_unit(x[..., band, :]) - _unit(y[..., band, :])).pow(2).sum(dtype=torch.float64))
                  for band in _row_bands(x))
    mse = squared / x.numel()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """(size,) normalised 1D Gaussian; SSIM's 2D window is its outer product."""
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean structural similarity (11x11 Gaussian window, sigma 1.5, valid positions) of images (B, C, H, W) or videos
    (B, C, T, H, W) in [-1, 1]; video frames are scored as images."""
    if x.ndim == 5:
        x, y = (v.transpose(1, 2).flatten(0, 1) for v in (x, y))
    size = min(11, *x.shape[-2:])  # tiny images: the centre of the window, renormalised
    g = _gaussian_window()[(11 - size) // 2 : (11 - size) // 2 + size]
    c = x.shape[1]
    window = (g[:, None] * g[None, :] / g.sum() ** 2).to(x.device)[None, None].expand(c, 1, -1, -1)

    def blur(v):
        return F.conv2d(v, window, groups=c)

    total, count = 0.0, 0
    for band in _row_bands(x, halo=size - 1):  # bands overlap by the window, so every valid position counts once
        xb, yb = _unit(x[..., band, :]), _unit(y[..., band, :])
        mx, my = blur(xb), blur(yb)
        sxx, syy, sxy = blur(xb * xb) - mx**2, blur(yb * yb) - my**2, blur(xb * yb) - mx * my
        c1, c2 = 0.01**2, 0.03**2
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        total, count = total + float(s.sum(dtype=torch.float64)), count + s.numel()
    return total / count
