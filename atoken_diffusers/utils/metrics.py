"""Reconstruction metrics on pixels in [-1, 1] (computed on the [0, 1] scale, as image papers report them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images/videos in [-1, 1] (over all their values)."""
    mse = F.mse_loss(_unit(x), _unit(y)).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(1.0 / mse)).item()


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size) - size // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean structural similarity (11x11 Gaussian window, sigma 1.5) of images (B, C, H, W) or videos
    (B, C, T, H, W) in [-1, 1]; video frames are scored as images."""
    if x.ndim == 5:
        x, y = (v.transpose(1, 2).flatten(0, 1) for v in (x, y))
    x, y = _unit(x), _unit(y)
    c = x.shape[1]
    win = _gaussian_window().to(x)[None, None].expand(c, 1, -1, -1)
    size = win.shape[-1]
    if min(x.shape[-2:]) < size:  # tiny images: fall back to a window that fits
        win = win[..., : min(x.shape[-2:]), : min(x.shape[-2:])]
        win = win / win.sum(dim=(-1, -2), keepdim=True)

    def blur(v):
        return F.conv2d(v, win, groups=c)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean().item()
